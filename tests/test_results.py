"""compression/RESULTS.md is built from the committed metrics: rows, OBS vs magnitude, curves, ONNX checks."""
import json

from compression.results import write_results


def _student(root, name, method, valid, test, shape=(1, 4), quantized=False):
    d = root / "students" / name
    d.mkdir(parents=True)
    m = {"num_layers": 3, "sparsity": 0.9000003, "group_shape": list(shape), "method": method, "quantized": quantized,
         "valid": {"macro_recall": valid}, "test": {"macro_recall": test}, "recovery": {"test": test / 0.7, "valid": valid / 0.74},
         "wall_time_s": 1800.0}
    (d / "metrics.json").write_text(json.dumps(m))
    (d / "history.json").write_text(json.dumps({"history": {"1": {"sparsity": 0.9, "step": 20, "valid_macro_recall": valid},
                                                            "0": {"sparsity": 0.85, "step": 10, "valid_macro_recall": valid - 0.01}}}))


def test_results_tables(tmp_path):
    _student(tmp_path, "obert_3l_90_4b", "obs", 0.7158, 0.6838)
    _student(tmp_path, "magnitude_3l_90_4b", "magnitude", 0.70, 0.67)
    _student(tmp_path, "obert_3l_90_unstr", "obs", 0.72, 0.69, shape=(1, 1))  # no magnitude partner
    (tmp_path / "onnx_checks").mkdir()
    (tmp_path / "onnx_checks" / "m3__per-token__ort.json").write_text(json.dumps(
        {"agreement": 0.9991, "max_abs_dprob": 0.0123, "macro_recall_onnx": 0.684, "macro_recall_reference": 0.6841}))
    (tmp_path / "onnx_checks" / "m3__qdq__deepsparse.json").write_text(json.dumps(
        {"agreement": 0.95, "max_abs_dprob": 0.3, "macro_recall_onnx": 0.66, "macro_recall_reference": 0.6841, "fraction_of_supported_ops": 1.0}))
    text = write_results(tmp_path / "students", tmp_path / "RESULTS.md").read_text()
    assert "| obert_3l_90_4b | 3 | 90.0% | 4-block | obs | 71.58 | 68.38 |" in text
    assert "| 3 | 90% | 4-block | 71.58 / 68.38 | 70.00 / 67.00 | +1.58 / +1.38 |" in text
    assert "unstructured | 72.00" not in text.split("OBS vs global magnitude")[1].split("##")[0]  # unpaired run: no comparison row
    assert "| obert_3l_90_4b | 85.0% → 70.58; 90.0% → 71.58 |" in text  # epochs in order
    assert "| m3 | INT8 per-token (our scheme, int8 MatMulInteger) (`--per-token-int8`) | ort | 99.91% | 0.0123 | 68.40 / 68.41 | - |" in text
    assert "| deepsparse | 95.00% | 0.3000 | 66.00 / 68.41 | 1.0000 |" in text


def test_results_names_a_continued_recovery(tmp_path):
    _student(tmp_path, "obert_6l_80_4b", "obs", 0.7260, 0.6926)
    _student(tmp_path, "recover_6l_80_4b", "none", 0.7300, 0.6950)
    cfg = {"init": "models/students/obert_6l_80_4b", "prune": {"method": "none"}, "optim": {"epochs": 2.0}}
    (tmp_path / "students" / "recover_6l_80_4b" / "config.json").write_text(json.dumps({"config": cfg}))
    text = write_results(tmp_path / "students", tmp_path / "RESULTS.md").read_text()
    assert "| recover_6l_80_4b | 3 | 90.0% | 4-block | OBS, then 2 more recovery epochs (from obert_6l_80_4b) | 73.00 | 69.50 |" in text
    cfg["init"] = "teacher"  # a dense run from the teacher is not a continuation
    (tmp_path / "students" / "recover_6l_80_4b" / "config.json").write_text(json.dumps({"config": cfg}))
    assert "| recover_6l_80_4b | 3 | 90.0% | - | none |" in write_results(tmp_path / "students", tmp_path / "RESULTS.md").read_text()


def test_teacher_rows_mark_a_whole_pool_fit(tmp_path):
    """A whole-pool fit trained on valid: its valid figure is shown as not held out, its pick as fixed."""
    from compression.results import _teachers_section

    for name, pool, valid in (("teacher_s1", False, 0.7356), ("teacher_pool", True, 0.8142)):
        d = tmp_path / name
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps({"valid": {"macro_recall": valid}, "test": {"macro_recall": 0.7045}}))
        (d / "best.json").write_text(json.dumps({"which": "ema", "step": 2790}))
        (d / "config.json").write_text(json.dumps({"config": {"run": {"seed": 0}, "data": {"train_on_pool": pool}}}))
    rows = "\n".join(_teachers_section(tmp_path))
    assert "| teacher_pool | 0 | ema at step 2790 (fixed in advance) | (81.42, trained on) | 70.45 |" in rows
    assert "| teacher_s1 | 0 | ema at step 2790 | 73.56 | 70.45 |" in rows
