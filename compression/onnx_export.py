"""ONNX export with the ``onnx`` helper API (no torch), for ONNX Runtime and DeepSparse baselines.

Graph = the standard BERT export form (opset 13, IR 8: what DeepSparse 1.8's onnx<1.15 reads):
LayerNorm decomposed (ReduceMean/Sub/Mul/Sqrt/Div), exact GELU as 0.5·x·(1 + Erf(x/√2)), attention
with an additive mask from ``attention_mask``. Inputs ``input_ids``, ``attention_mask``,
``token_type_ids`` (int64, (batch, seq)); output ``logits`` (batch, 3).

``quantize="dynamic"``: every encoder linear becomes DynamicQuantizeLinear → MatMulInteger with
INT8 per-output-channel weights (the form ONNX Runtime's dynamic quantisation emits).
``quantize="per_token"``: our own INT8 scheme, exactly as the C runtime and the JAX simulation
compute it, in standard operators: per-token scale s = max|x| · fl32(1/127) (ReduceMax/Abs/Mul),
q = clip(round_half_even(x / s), ±127) cast to int8, int8 × int8 MatMulInteger (int32), then
(acc · s_o) · s + b with per-output-channel weight scales s_o; INT8 word embeddings (per row).
ONNX Runtime runs it.
``quantize="qdq"``: static QuantizeLinear → DequantizeLinear on each linear's input (per-tensor
INT8 scale = max |x| / 127 over calibration tweets, ``calibrate``) and DequantizeLinear on INT8
weights with one scale per matrix before a float MatMul: the QDQ form that DeepSparse (and ORT's
static quantisation) turn into integer kernels. DeepSparse 1.8 aborts on the dynamic form and
runs per-channel weight scales only partly in its engine. Its accuracy therefore differs from our
scheme (per-token activations, per-channel weights): ``check-onnx`` measures it.
``quantize="sparseml"`` / ``"sparseml_per_tensor"``: the form SparseML's exporter writes for a
quantisation-aware BERT (its ONNXToDeepsparse transforms), the graph DeepSparse's INT8 fast path is
built for: every linear is QuantizeLinear (static per-tensor uint8 scale and zero point) →
MatMulInteger(x_q, W_uint8 (in, out), x_zp, w_zp = 128) → Add of the bias as int32 at scale
s_x·s_w → Cast → Mul by s_x·s_w; the two attention matmuls are QuantizeLinear on both inputs →
MatMulInteger → Cast → Mul; q/k/v share one QuantizeLinear of their common input; everything else
(embeddings, LayerNorm, GELU, softmax, pooler, classifier) stays float. Weights are int8 + 128 as
uint8, so pruned zeros stay exactly 128. ``sparseml`` keeps our per-output-channel weight scales
(folded into the Mul, the INT8 weights exactly the runtime's); ``sparseml_per_tensor`` requantises
each matrix with one scale (SparseML's default). Activation ranges come from ``calibrate_ranges``.
Pruned weights stay exact zeros in every form.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtime.format import LINEAR_NAMES, quantize_symmetric
from .model import BertConfig

__all__ = ["export_onnx", "calibrate", "calibrate_ranges", "OPSET", "IR_VERSION", "QUANTIZE_FORMS"]

QUANTIZE_FORMS = (None, "dynamic", "per_token", "qdq", "sparseml", "sparseml_per_tensor")

OPSET = 13
IR_VERSION = 8


class _G:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, arr, base="c") -> str:
        nm = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), nm))
        return nm

    def op(self, op: str, inputs: list[str], base: str | None = None, n_out: int = 1, **attrs) -> str | list[str]:
        outs = [self.name(base or op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, **attrs))
        return outs[0] if n_out == 1 else outs


def _layernorm(g: _G, x: str, gamma, beta, eps: float) -> str:
    mu = g.op("ReduceMean", [x], axes=[-1], keepdims=1)
    d = g.op("Sub", [x, mu])
    var = g.op("ReduceMean", [g.op("Mul", [d, d])], axes=[-1], keepdims=1)
    den = g.op("Sqrt", [g.op("Add", [var, g.const(np.float32(eps), "eps")])])
    y = g.op("Div", [d, den])
    return g.op("Add", [g.op("Mul", [y, g.const(np.asarray(gamma, np.float32), "ln_g")]), g.const(np.asarray(beta, np.float32), "ln_b")])


def _linear_intermediates(model, params: dict, ids, masks: dict | None, batch_size: int):
    """(layer key, linear name, its recorded intermediates) for every encoder linear of every batch."""
    import jax

    from .data import iter_batches

    fn = jax.jit(lambda p, x, m, mk: model.apply({"params": p}, x, m, masks=mk, mutable=["intermediates"])[1]["intermediates"])
    for b in iter_batches(ids, np.zeros(len(ids), np.int32), batch_size):
        for lk, lv in fn(params, b.input_ids, b.attention_mask, masks).items():
            if lk.startswith("layer_"):
                for n, v in lv.items():
                    yield lk, n, v


def calibrate(model, params: dict, ids, masks: dict | None = None, batch_size: int = 64) -> dict:
    """max |input| of every encoder linear over the tweets ``ids`` -> {"layer_i": {name: amax}}."""
    out: dict = {}
    for lk, n, v in _linear_intermediates(model, params, ids, masks, batch_size):
        a = float(np.max(np.asarray(v["input_amax"][0])))
        out.setdefault(lk, {})[n] = max(out.get(lk, {}).get(n, 0.0), a)
    return out


def calibrate_ranges(model, params: dict, ids, masks: dict | None = None, batch_size: int = 64, method: str = "minmax") -> dict:
    """(min, max) of every encoder linear's input and output over the tweets ``ids``:
    ``{"layer_i": {"input": {name: (lo, hi)}, "output": {name: (lo, hi)}}}``.

    ``method``: "minmax" (the extremes over all tweets) or "mean" (the mean over batches of each
    batch's extremes: tighter, so finer steps for the bulk of values, at the cost of clipping rare
    outliers). Both are post-training calibrations; which one is more accurate is measured."""
    if method not in ("minmax", "mean"):
        raise ValueError(f"unknown calibration method {method!r}")
    seen: dict = {}
    for lk, n, v in _linear_intermediates(model, params, ids, masks, batch_size):
        for which in ("input", "output"):
            seen.setdefault(lk, {}).setdefault(which, {}).setdefault(n, []).append(np.asarray(v[f"{which}_range"][0], np.float64))
    out: dict = {}
    for lk, d in seen.items():
        for which, per in d.items():
            for n, rs in per.items():
                a = np.stack(rs)
                lo, hi = (a[:, 0].min(), a[:, 1].max()) if method == "minmax" else (a[:, 0].mean(), a[:, 1].mean())
                out.setdefault(lk, {}).setdefault(which, {})[n] = (float(lo), float(hi))
    return out


def _uint8_params(lo: float, hi: float) -> tuple[np.float32, np.uint8]:
    """Asymmetric uint8 quantisation of [lo, hi] (widened to include 0, as ONNX requires zero to be
    exact): scale and zero point."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    s = (hi - lo) / 255.0 or 1.0
    return np.float32(s), np.uint8(np.clip(np.round(-lo / s), 0, 255))


def _quantize_u8(g: _G, x: str, lo: float, hi: float) -> tuple[str, str, str, np.float32]:
    """QuantizeLinear(x) with static uint8 parameters: (x_q, scale name, zero-point name, scale)."""
    s, z = _uint8_params(lo, hi)
    sn, zn = g.const(s, "xs"), g.const(z, "xz")
    return g.op("QuantizeLinear", [x, sn, zn], "xq"), sn, zn, s


def _linear_sparseml(g: _G, xq: tuple, w_oi, b_o, per_tensor: bool) -> str:
    """MatMulInteger(x_q, W_u8, x_zp, 128) → Add(int32 bias) → Cast → Mul(s_x·s_w), as SparseML emits."""
    x_q, _, x_zp, s_x = xq
    w_oi = np.asarray(w_oi, np.float32)
    if per_tensor:
        sw = np.float32(float(np.abs(w_oi).max()) / 127.0 or 1.0)
        q = np.clip(np.rint(w_oi / sw), -127, 127).astype(np.int8)
        sw_o = np.full(w_oi.shape[0], sw, np.float32)
    else:
        q, sw_o = quantize_symmetric(w_oi)
    w_u8 = (q.astype(np.int16) + 128).astype(np.uint8)  # pruned zeros stay exactly 128
    scale_o = (np.float32(s_x) * sw_o).astype(np.float32)
    bias_i32 = np.rint(np.asarray(b_o, np.float64) / scale_o.astype(np.float64)).astype(np.int32)
    acc = g.op("MatMulInteger", [x_q, g.const(np.ascontiguousarray(w_u8.T), "wq"), x_zp, g.const(np.uint8(128), "wz")])
    acc = g.op("Add", [acc, g.const(bias_i32, "bq")])
    mul = g.const(scale_o[0] if per_tensor else scale_o, "rescale")
    return g.op("Mul", [g.op("Cast", [acc], to=TensorProto.FLOAT), mul])


def _matmul_sparseml(g: _G, a: str, b: str, ra: tuple[float, float], rb: tuple[float, float]) -> str:
    """An activation × activation matmul: QuantizeLinear both → MatMulInteger → Cast → Mul."""
    aq, _, az, sa = _quantize_u8(g, a, *ra)
    bq, _, bz, sb = _quantize_u8(g, b, *rb)
    acc = g.op("MatMulInteger", [aq, bq, az, bz])
    return g.op("Mul", [g.op("Cast", [acc], to=TensorProto.FLOAT), g.const(np.float32(sa) * np.float32(sb), "rescale")])


def _linear(g: _G, x: str, w_oi, b_o, quantize: str | None, x_amax: float | None = None) -> str:
    w_oi = np.asarray(w_oi, np.float32)
    if quantize == "qdq":
        # per-tensor weight scale: DeepSparse 1.8 keeps a QDQ MatMul in its engine only then (with
        # per-channel scales 6.5% of a layer's ops fall back to its naive executor)
        smax = float(np.abs(w_oi).max()) / 127.0 or 1.0
        q = np.clip(np.round(w_oi / smax), -127, 127).astype(np.int8)
        xs = g.const(np.float32(max(x_amax or 0.0, 1e-8) / 127.0), "xs")
        xz = g.const(np.int8(0), "xz")
        xdq = g.op("DequantizeLinear", [g.op("QuantizeLinear", [x, xs, xz]), xs, xz])
        wdq = g.op("DequantizeLinear", [g.const(np.ascontiguousarray(q.T), "wq"), g.const(np.float32(smax), "ws"), g.const(np.int8(0), "wz")])
        y = g.op("MatMul", [xdq, wdq])
    elif quantize is None:
        y = g.op("MatMul", [x, g.const(np.ascontiguousarray(w_oi.T), "w")])
    elif quantize == "dynamic":
        q, s = quantize_symmetric(w_oi)
        xq, xs, xzp = g.op("DynamicQuantizeLinear", [x], "dq", n_out=3)
        acc = g.op("MatMulInteger", [xq, g.const(np.ascontiguousarray(q.T), "wq"), xzp, g.const(np.zeros(w_oi.shape[0], np.int8), "wzp")])
        scale = g.op("Mul", [xs, g.const(s.astype(np.float32), "ws")])
        y = g.op("Mul", [g.op("Cast", [acc], to=TensorProto.FLOAT), scale])
    elif quantize == "per_token":
        q, s = quantize_symmetric(w_oi)
        sx = g.op("Mul", [g.op("ReduceMax", [g.op("Abs", [x])], axes=[-1], keepdims=1), g.const(np.float32(1.0) / np.float32(127.0), "inv127")])
        safe = g.op("Where", [g.op("Greater", [sx, g.const(np.float32(0.0), "zero_f")]), sx, g.const(np.float32(1.0), "one_f")])
        xq = g.op("Clip", [g.op("Round", [g.op("Div", [x, safe])]), g.const(np.float32(-127.0), "qmin"), g.const(np.float32(127.0), "qmax")])
        acc = g.op("MatMulInteger", [g.op("Cast", [xq], to=TensorProto.INT8), g.const(np.ascontiguousarray(q.T), "wq")])
        # (acc · s_o) · s_t: C and JAX round (s_t · s_o) · acc, the same up to one float rounding. The
        # other order is not usable: ONNX Runtime (1.2x) fuses MatMulInteger → Cast → Mul into its
        # MatMulIntegerToFloat, which takes per-tensor or per-column scales only, and computes
        # wrong outputs for a per-row (per-token) factor (measured: agreement 90% on the 2017 test)
        y = g.op("Mul", [g.op("Mul", [g.op("Cast", [acc], to=TensorProto.FLOAT), g.const(s.astype(np.float32), "ws")]), sx])
    else:
        raise ValueError(f"unknown quantize mode {quantize!r}")
    return g.op("Add", [y, g.const(np.asarray(b_o, np.float32), "b")])


def export_onnx(params: dict, cfg: BertConfig, path: str | Path, *, masks: dict | None = None, quantize: str | None = None, amax: dict | None = None, ranges: dict | None = None) -> Path:
    """Write an ONNX model of the classifier; returns the path (checked with onnx.checker).
    ``amax`` (from ``calibrate``) is required for ``quantize="qdq"``; ``ranges`` (from
    ``calibrate_ranges``) for the two ``sparseml`` forms."""
    if quantize not in QUANTIZE_FORMS:
        raise ValueError(f"unknown quantize mode {quantize!r}")
    if quantize == "qdq" and amax is None:
        raise ValueError("quantize='qdq' needs the calibration maxima (amax=calibrate(...))")
    sparseml = quantize in ("sparseml", "sparseml_per_tensor")
    if sparseml and ranges is None:
        raise ValueError(f"quantize={quantize!r} needs the calibrated activation ranges (ranges=calibrate_ranges(...))")
    ax = lambda i, n: amax[f"layer_{i}"][n] if amax else None  # noqa: E731
    g = _G()
    C, H, D = cfg.hidden_size, cfg.num_heads, cfg.hidden_size // cfg.num_heads
    ids, am, tt = "input_ids", "attention_mask", "token_type_ids"
    if quantize == "per_token":  # INT8 word embeddings, one scale per row (as the runtime format stores them)
        wq, ws = quantize_symmetric(np.asarray(params["word_embeddings"], np.float32))
        rows = g.op("Cast", [g.op("Gather", [g.const(wq, "word_emb_q"), ids], axis=0)], to=TensorProto.FLOAT)
        word = g.op("Mul", [rows, g.op("Unsqueeze", [g.op("Gather", [g.const(ws.astype(np.float32), "word_emb_s"), ids], axis=0), g.const(np.array([-1], np.int64), "ax_last")])])
    else:
        word = g.op("Gather", [g.const(np.asarray(params["word_embeddings"], np.float32), "word_emb"), ids], axis=0)
    seq_len = g.op("Gather", [g.op("Shape", [ids]), g.const(np.int64(1), "one")], axis=0)
    pos_ids = g.op("Range", [g.const(np.int64(0), "zero"), seq_len, g.const(np.int64(1), "step")])
    pos = g.op("Gather", [g.const(np.asarray(params["position_embeddings"], np.float32), "pos_emb"), pos_ids], axis=0)
    typ = g.op("Gather", [g.const(np.asarray(params["token_type_embeddings"], np.float32), "type_emb"), tt], axis=0)
    h = g.op("Add", [g.op("Add", [word, pos]), typ])
    h = _layernorm(g, h, params["embeddings_ln"]["scale"], params["embeddings_ln"]["bias"], cfg.layer_norm_eps)
    # additive mask (batch, 1, 1, seq): 0 where attended, -10000 on padding (BERT's export convention)
    mf = g.op("Cast", [g.op("Unsqueeze", [am, g.const(np.array([1, 2], np.int64), "ax")])], to=TensorProto.FLOAT)
    mask_bias = g.op("Mul", [g.op("Sub", [g.const(np.float32(1.0), "one_f"), mf]), g.const(np.float32(-10000.0), "neg")])
    heads_shape = g.const(np.array([0, 0, H, D], np.int64), "heads_shape")
    merge_shape = g.const(np.array([0, 0, C], np.int64), "merge_shape")
    inv_sqrt = g.const(np.float32(1.0 / np.sqrt(D)), "scale")
    for i in range(cfg.num_layers):
        lp = params[f"layer_{i}"]
        w = {n: np.asarray(lp[n]["weight"], np.float32) * (np.asarray(masks[f"layer_{i}"][n], np.float32) if masks else 1.0) for n in LINEAR_NAMES}
        if sparseml:
            r_in, r_out = ranges[f"layer_{i}"]["input"], ranges[f"layer_{i}"]["output"]
            per_tensor = quantize == "sparseml_per_tensor"
            lin = lambda xq, n: _linear_sparseml(g, xq, w[n], lp[n]["bias"], per_tensor)  # noqa: E731
            hq = _quantize_u8(g, h, *r_in["query"])  # one QuantizeLinear for q, k, v (their common input)
            q, k, v = (g.op("Transpose", [g.op("Reshape", [lin(hq, n), heads_shape])], perm=[0, 2, 1, 3]) for n in ("query", "key", "value"))
            kt = g.op("Transpose", [k], perm=[0, 1, 3, 2])
            scores = g.op("Add", [g.op("Mul", [_matmul_sparseml(g, q, kt, r_out["query"], r_out["key"]), inv_sqrt]), mask_bias])
            ctx = _matmul_sparseml(g, g.op("Softmax", [scores], axis=-1), v, (0.0, 1.0), r_out["value"])
            ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), merge_shape])
            a = lin(_quantize_u8(g, ctx, *r_in["attn_out"]), "attn_out")
            h = _layernorm(g, g.op("Add", [h, a]), lp["attn_ln"]["scale"], lp["attn_ln"]["bias"], cfg.layer_norm_eps)
            f = lin(_quantize_u8(g, h, *r_in["ffn_in"]), "ffn_in")
            erf = g.op("Erf", [g.op("Div", [f, g.const(np.float32(np.sqrt(2)), "sqrt2")])])
            f = g.op("Mul", [g.op("Mul", [f, g.op("Add", [erf, g.const(np.float32(1.0), "one_g")])]), g.const(np.float32(0.5), "half")])
            o = lin(_quantize_u8(g, f, *r_in["ffn_out"]), "ffn_out")
            h = _layernorm(g, g.op("Add", [h, o]), lp["ffn_ln"]["scale"], lp["ffn_ln"]["bias"], cfg.layer_norm_eps)
            continue
        q, k, v = (g.op("Transpose", [g.op("Reshape", [_linear(g, h, w[n], lp[n]["bias"], quantize, ax(i, n)), heads_shape])], perm=[0, 2, 1, 3]) for n in ("query", "key", "value"))
        kt = g.op("Transpose", [k], perm=[0, 1, 3, 2])
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, kt]), inv_sqrt]), mask_bias])
        ctx = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
        ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), merge_shape])
        a = _linear(g, ctx, w["attn_out"], lp["attn_out"]["bias"], quantize, ax(i, "attn_out"))
        h = _layernorm(g, g.op("Add", [h, a]), lp["attn_ln"]["scale"], lp["attn_ln"]["bias"], cfg.layer_norm_eps)
        f = _linear(g, h, w["ffn_in"], lp["ffn_in"]["bias"], quantize, ax(i, "ffn_in"))
        # Div by √2 (not Mul by 1/√2): the exact pattern DeepSparse fuses into its GELU kernel
        erf = g.op("Erf", [g.op("Div", [f, g.const(np.float32(np.sqrt(2)), "sqrt2")])])
        f = g.op("Mul", [g.op("Mul", [f, g.op("Add", [erf, g.const(np.float32(1.0), "one_g")])]), g.const(np.float32(0.5), "half")])
        o = _linear(g, f, w["ffn_out"], lp["ffn_out"]["bias"], quantize, ax(i, "ffn_out"))
        h = _layernorm(g, g.op("Add", [h, o]), lp["ffn_ln"]["scale"], lp["ffn_ln"]["bias"], cfg.layer_norm_eps)
    cls = g.op("Gather", [h, g.const(np.int64(0), "cls")], axis=1)
    pooled = g.op("Tanh", [g.op("Add", [g.op("MatMul", [cls, g.const(np.asarray(params["pooler"]["weight"], np.float32).T.copy(), "pool_w")]), g.const(np.asarray(params["pooler"]["bias"], np.float32), "pool_b")])])
    cls_mm = g.op("MatMul", [pooled, g.const(np.asarray(params["classifier"]["weight"], np.float32).T.copy(), "cls_w")])
    g.nodes.append(helper.make_node("Add", [cls_mm, g.const(np.asarray(params["classifier"]["bias"], np.float32), "cls_b")], ["logits"]))
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in (ids, am, tt)]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", cfg.num_labels])]
    graph = helper.make_graph(g.nodes, "sparsepulse_bert", inputs, outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sparsepulse")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
