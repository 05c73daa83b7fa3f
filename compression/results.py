"""The students' results table (compression/RESULTS.md), built from each run's metrics.json."""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_results"]

_OUT = Path(__file__).resolve().parent / "RESULTS.md"


def write_results(students: str | Path = "models/students", out: Path = _OUT) -> Path:
    """One row per packaged student (``compression.package`` copies each finished run's metrics.json
    and config.json to ``models/students/<run>/``, which is committed; ``runs/`` is not)."""
    rows = []
    metrics = {m.parent.name: json.loads(m.read_text()) for m in sorted(Path(students).glob("*/metrics.json"))}
    metrics = {k: d for k, d in metrics.items() if "recovery" in d}  # the teacher's run has no recovery figure
    for name, d in metrics.items():
        pattern = {(1, 4): "4-block", (1, 1): "unstructured"}.get(tuple(d["group_shape"]), "x".join(map(str, d["group_shape"])))
        method = "QAT INT8" if d.get("quantized") else d["method"]
        if method == "none":  # no pruning of its own: a longer recovery of a listed student, or a dense run
            base = _continued_from(Path(students), name, metrics)
            if base is None:
                pattern = "-"
            else:
                method = f"{metrics[base[0]]['method'].replace('obs', 'OBS')}, then {base[1]:g} more recovery epochs (from {base[0]})"
        rows.append(
            f"| {name} | {d['num_layers']} | {100 * d['sparsity']:.1f}% | {pattern} | {method} | "
            f"{100 * d['valid']['macro_recall']:.2f} | {100 * d['test']['macro_recall']:.2f} | {100 * d['recovery']['test']:.2f}% | "
            f"{(d.get('wall_time_s') or 0) / 3600:.2f} h | `python -m compression student --config {name} --run-dir runs/{name}` |"
        )
    teacher = json.loads((Path("models/teacher/metrics.json")).read_text()) if Path("models/teacher/metrics.json").is_file() else None
    head = [
        "# Compression results",
        "",
        "Macro-averaged recall (%) on the validation split and the SemEval-2017 test set; recovery = student test / teacher test;",
        "sparsity = measured fraction of zero weights in the encoder's linear layers; wall time on the 2-core build machine (runs may have shared it).",
        "`qat_*` rows: quantisation-aware trained students, evaluated as INT8 (the JAX simulation of the C kernels).",
        "Regenerate with `python -m compression results` (reads `models/students/*/metrics.json`, copied there by",
        "`python -m compression package` / `save-student`).",
        "",
    ]
    if teacher:
        head.append(f"Teacher (`models/teacher`): valid {100 * teacher['valid']['macro_recall']:.2f}, test {100 * teacher['test']['macro_recall']:.2f}.")
        head.append("")
    head += ["| run | layers | sparsity | pattern | method | valid | test | recovery | wall time | command |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    body = head + (rows or ["| (no finished student yet) | | | | | | | | | |"])
    floats = _float_students(metrics)
    body += _method_section(floats)
    body += _curve_section(Path(students), floats)
    ld = Path(students) / "layerdrop.json"
    if ld.is_file():
        d = json.loads(ld.read_text())
        body += [
            "",
            "## Layer dropping (6 -> 3 layers)",
            "",
            "Each candidate keeps three of the teacher's layers and is distilled (dense) for 1 epoch; validation decides.",
            "Command: `python -m compression layerdrop --config student3_dense --run-dir runs/layerdrop`.",
            "",
            "| kept teacher layers | valid macro recall |",
            "| --- | --- |",
        ]
        body += [f"| {k.replace('_', ', ')}{' (kept)' if k == d['best'] else ''} | {100 * v:.2f} |" for k, v in d["valid_macro_recall"].items()]
    body += _teachers_section(Path(students).parent / "teachers")
    body += _onnx_section(Path(students).parent / "onnx_checks")
    out.write_text("\n".join(body) + "\n")
    return out


def _teachers_section(teachers: Path) -> list[str]:
    """One row per teacher seed run (``models/teachers/*/metrics.json``; seed 0 is ``models/teacher``)."""
    from .ensemble import trained_on_valid

    runs = sorted(d for d in teachers.glob("*/metrics.json")) if teachers.is_dir() else []
    if not runs:
        return []
    out = ["", "## Teacher seeds (ensemble members)", "",
           "The teacher recipe with other seeds (`python -m compression teacher --seed N`); the ensemble of their logits is in",
           "`models/teachers/README.md` (`python -m compression ensemble`).", "",
           "| run | seed | kept checkpoint | valid | test | wall time |", "| --- | --- | --- | --- | --- | --- |"]
    for m in runs:
        d = json.loads(m.read_text())
        best = json.loads((m.parent / "best.json").read_text()) if (m.parent / "best.json").is_file() else {}
        cfg = json.loads((m.parent / "config.json").read_text()) if (m.parent / "config.json").is_file() else {}
        wall = json.loads((m.parent / "wall_time.json").read_text()).get("seconds", 0) if (m.parent / "wall_time.json").is_file() else 0
        seed = cfg.get("config", {}).get("run", {}).get("seed", "?")
        pool = trained_on_valid(m.parent)  # a whole-pool fit: its valid figure is not held out
        valid = f"({100 * d['valid']['macro_recall']:.2f}, trained on)" if pool else f"{100 * d['valid']['macro_recall']:.2f}"
        kept = f"{best.get('which', '?')} at step {best.get('step', '?')}" + (" (fixed in advance)" if pool else "")
        out.append(f"| {m.parent.name} | {seed} | {kept} | {valid} | {100 * d['test']['macro_recall']:.2f} | {f'{wall / 3600:.2f} h' if wall else '-'} |")
    return out


def _continued_from(students: Path, name: str, metrics: dict) -> tuple[str, float] | None:
    """(student it started from, epochs) for a float run that only trained an already pruned
    student further (``recipes.recover``: no pruning of its own, ``init`` = another listed student)."""
    c = students / name / "config.json"
    if not c.is_file():
        return None
    cfg = json.loads(c.read_text())["config"]
    src = Path(str(cfg.get("init", "teacher"))).name
    if cfg["prune"]["method"] != "none" or src not in metrics or src == name:
        return None
    return src, float(cfg["optim"]["epochs"])


def _float_students(metrics: dict) -> list[tuple[str, dict]]:
    """The pruned float students (no QAT, no dense runs) among the loaded metrics."""
    return [(n, d) for n, d in metrics.items() if not d.get("quantized") and d["method"] in ("obs", "magnitude")]


def _method_section(floats: list[tuple[str, dict]]) -> list[str]:
    """OBS against magnitude pruning wherever both ran with the same depth, sparsity and pattern."""
    by_key: dict = {}
    for name, d in floats:
        key = (d["num_layers"], round(d["sparsity"], 2), tuple(d["group_shape"]))
        by_key.setdefault(key, {})[d["method"]] = (name, d)
    pairs = [(k, v) for k, v in sorted(by_key.items()) if {"obs", "magnitude"} <= set(v)]
    if not pairs:
        return []
    body = [
        "",
        "## OBS vs global magnitude pruning (same schedule, distillation and steps)",
        "",
        "| layers | sparsity | pattern | OBS valid / test | magnitude valid / test | OBS ahead by (valid / test, points) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (layers, sp, shape), v in pairs:
        o, g = v["obs"][1], v["magnitude"][1]
        pat = {(1, 4): "4-block", (1, 1): "unstructured"}.get(shape, "x".join(map(str, shape)))
        dv = 100 * (o["valid"]["macro_recall"] - g["valid"]["macro_recall"])
        dt = 100 * (o["test"]["macro_recall"] - g["test"]["macro_recall"])
        body.append(
            f"| {layers} | {100 * sp:.0f}% | {pat} | {100 * o['valid']['macro_recall']:.2f} / {100 * o['test']['macro_recall']:.2f} | "
            f"{100 * g['valid']['macro_recall']:.2f} / {100 * g['test']['macro_recall']:.2f} | {dv:+.2f} / {dt:+.2f} |"
        )
    return body


def _curve_section(students: Path, floats: list[tuple[str, dict]]) -> list[str]:
    """Validation macro recall at the end of each epoch (sparsity reached so far) of every pruned student."""
    rows = []
    for name, _ in floats:
        h = students / name / "history.json"
        if not h.is_file():
            continue
        hist = json.loads(h.read_text())["history"]
        pts = [f"{100 * e['sparsity']:.1f}% → {100 * e['valid_macro_recall']:.2f}" for _, e in sorted(hist.items(), key=lambda kv: int(kv[0]))]
        rows.append(f"| {name} | {'; '.join(pts)} |")
    if not rows:
        return []
    return ["", "## Sparsity vs validation macro recall along each run (end of each epoch)", "",
            "Where a pruning step falls just before an epoch ends (the 6-layer recipes prune at step 1394 of 1395), that",
            "epoch's value shows the network before any recovery from the step.", "",
            "| run | sparsity → valid macro recall |", "| --- | --- |"] + rows


#: the ONNX forms `export-onnx` writes, by the file-name suffix used in models/onnx_checks/
_FORMS = {
    "fp32": ("fp32 (zeros kept)", ""),
    "dynamic": ("INT8 dynamic (DynamicQuantizeLinear, per-tensor uint8)", " --int8"),
    "per-token": ("INT8 per-token (our scheme, int8 MatMulInteger)", " --per-token-int8"),
    "qdq": ("INT8 static QDQ (per-tensor, calibrated)", " --qdq"),
    "sparseml": ("INT8 SparseML/DeepSparse form (static uint8 activations, per-channel weights, quantised attention)", " --sparseml"),
    "sparseml-mean": ("INT8 SparseML/DeepSparse form, mean-of-batch-extremes calibration", " --sparseml --calibration mean"),
    "sparseml-pt": ("INT8 SparseML/DeepSparse form, per-tensor weights (SparseML's default)", " --sparseml-per-tensor"),
}


def _small(x: float) -> str:
    return f"{x:.4f}" if x >= 1e-3 else f"{x:.1e}"


def _onnx_section(folder: Path) -> list[str]:
    """Rows from ``check-onnx --out models/onnx_checks/<model>__<form>__<engine>.json``."""
    files = sorted(folder.glob("*__*__*.json")) if folder.is_dir() else []
    if not files:
        return []
    body = [
        "",
        "## ONNX exports run in ONNX Runtime and DeepSparse vs JAX (2017 test, 12,284 tweets)",
        "",
        "Reference: the same weights in JAX, in float for fp32 graphs and in the INT8 simulation of the C kernels",
        "(per-token activations) for INT8 graphs. Commands: `python -m compression export-onnx --runtime-model models/<model>",
        "[form flag] --out F.onnx`, then `python -m compression check-onnx --onnx F.onnx --engine <engine> --runtime-model",
        "models/<model> [--int8] --bench-python /tmp/benchvenv/bin/python --out models/onnx_checks/<model>__<form>__<engine>.json`",
        "(bench venv: see BENCHMARKS.md; DeepSparse gets a copy of the file and length buckets).",
        "",
        "| model | form (flag) | engine | argmax agreement | max abs dp | macro recall ONNX / JAX | DeepSparse supported ops |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in files:
        d = json.loads(f.read_text())
        model, form, engine = f.stem.split("__")
        label, flag = _FORMS.get(form, (form, ""))
        frac = d.get("fraction_of_supported_ops")
        body.append(
            f"| {model} | {label} (`{flag.strip() or 'none'}`) | {engine} | {100 * d['agreement']:.2f}% | {_small(d['max_abs_dprob'])} | "
            f"{100 * d['macro_recall_onnx']:.2f} / {100 * d['macro_recall_reference']:.2f} | {'-' if frac is None else f'{frac:.4f}'} |"
        )
    return body
