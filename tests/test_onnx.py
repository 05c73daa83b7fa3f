"""ONNX export of the tiny config: passes onnx.checker and matches the JAX forward (onnx's own
reference evaluator; ONNX Runtime stays out of the project's dependencies)."""
import jax
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")  # a declared dependency; importorskip only guards broken installs
from onnx.reference import ReferenceEvaluator  # noqa: E402

from compression.model import BertClassifier, BertConfig  # noqa: E402
from compression.onnx_export import calibrate, export_onnx  # noqa: E402
from compression.prune import ones_masks  # noqa: E402

FP32_ATOL = 1e-4
INT8_ATOL = 0.05  # per-tensor (dynamic or static) activations in ONNX vs per-token in our scheme


@pytest.fixture(scope="module")
def tiny():
    cfg = BertConfig(vocab_size=200, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_position=48)
    m = BertClassifier(cfg)
    p = m.init(jax.random.PRNGKey(0), np.zeros((1, 8), np.int32), np.ones((1, 8), np.int32))["params"]
    p = jax.tree_util.tree_map(lambda a: np.asarray(a) * (10.0 if np.ndim(a) == 2 else 1.0), dict(p))
    masks = ones_masks(p)
    masks["layer_0"]["query"][:, :16] = 0
    return cfg, p, masks


@pytest.mark.parametrize("quantize", [None, "dynamic", "qdq", "per_token"])
def test_onnx_matches_jax(tiny, tmp_path, quantize):
    cfg, p, masks = tiny
    amax = None
    if quantize == "qdq":  # static scales calibrated on random token sequences
        rng = np.random.default_rng(1)
        amax = calibrate(BertClassifier(cfg), p, [rng.integers(0, 200, n).astype(np.int32) for n in (4, 10, 7, 12)], masks=masks)
        assert set(amax["layer_1"]) == {"query", "key", "value", "attn_out", "ffn_in", "ffn_out"} and amax["layer_0"]["ffn_out"] > 0
        with pytest.raises(ValueError, match="calibration"):
            export_onnx(p, cfg, tmp_path / "x.onnx", masks=masks, quantize="qdq")
    path = export_onnx(p, cfg, tmp_path / "m.onnx", masks=masks, quantize=quantize, amax=amax)
    onnx.checker.check_model(onnx.load(str(path)))
    x = np.random.default_rng(0).integers(0, 200, (3, 10)).astype(np.int64)
    am = np.ones_like(x)
    am[1, 6:] = 0
    model = onnx.load(str(path))
    if quantize == "qdq":  # onnx's reference evaluator implements (De)QuantizeLinear from opset 19 on
        from onnx import version_converter

        model = version_converter.convert_version(model, 19)
    out = ReferenceEvaluator(model).run(None, {"input_ids": x, "attention_mask": am, "token_type_ids": np.zeros_like(x)})[0]
    ref = np.asarray(BertClassifier(cfg, quantize=quantize is not None).apply({"params": p}, x, am, masks=masks))
    # per_token is our own scheme: it matches the JAX INT8 simulation to float precision
    np.testing.assert_allclose(out, ref, atol=FP32_ATOL if quantize in (None, "per_token") else INT8_ATOL)
    assert out.shape == (3, 3)


@pytest.mark.parametrize("int8", [False, True])
def test_check_onnx_reference_of_a_runtime_model(tiny, tmp_path, int8):
    """check-onnx compares an fp32 graph with the float model, an INT8 graph with the INT8 simulation."""
    from compression.export import export_runtime_model
    from compression.onnx_check import _reference

    cfg, p, masks = tiny
    export_runtime_model(p, cfg, tmp_path, max_len=48, demojize=True, masks=masks)
    model, params, ref_masks = _reference(None, None, str(tmp_path), int8)
    assert model.quantize is int8 and model.cfg == cfg
    assert float(ref_masks["layer_0"]["query"][:, :16].sum()) == 0.0
