"""Evaluate an exported runtime model: accuracy through the C Scorer and agreement with the JAX
INT8 simulation of the same weights (the oracle for the C encoder)."""
from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np

from runtime.format import linear_shape, load_model
from runtime.native import NativeModel
from .configs.common import DataConfig
from .data import encode, load_semeval
from .evaluate import classification_metrics, predict_logits
from .model import BertClassifier
from .weights import load_tokenizer

__all__ = ["params_from_runtime", "evaluate_runtime_model", "ulp_perturbed", "noise_floor"]


def params_from_runtime(data) -> tuple[BertClassifier, dict, dict]:
    """Dequantised parameters (and masks) of a runtime model, for the JAX INT8 reference.

    Weights are q·s exactly, so re-quantising them in the simulation reproduces q and s."""
    from runtime.format import LINEAR_NAMES, unpack_linear

    from .export import FLOAT_TENSORS, LAYER_NORMS, bert_config

    c, t = data.config, data.tensors
    cfg = bert_config(c)
    p: dict = {"word_embeddings": t["embeddings.word.values"].astype(np.float32) * t["embeddings.word.scale"][:, None]}
    for name, path in FLOAT_TENSORS.items():
        _set(p, path, t[name])
    masks: dict = {}
    for i in range(cfg.num_layers):
        lp: dict = {}
        for n in LINEAR_NAMES:
            out, inn = linear_shape(n, cfg.hidden_size, cfg.intermediate_size)
            q = unpack_linear(t[f"layer_{i}.{n}.values"], t[f"layer_{i}.{n}.col_idx"], t[f"layer_{i}.{n}.row_ptr"], (out, inn))
            lp[n] = {"weight": q.astype(np.float32) * t[f"layer_{i}.{n}.scale"][:, None], "bias": t[f"layer_{i}.{n}.bias"]}
            masks.setdefault(f"layer_{i}", {})[n] = (q != 0).astype(np.float32)
        for name, path in LAYER_NORMS.items():
            _set(lp, path, t[f"layer_{i}.{name}"])
        p[f"layer_{i}"] = lp
    return BertClassifier(cfg, quantize=True, exact_int=True), p, masks


def _set(tree: dict, path: tuple, value) -> None:
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def ulp_perturbed(data, direction: int):
    """A copy of a runtime model with every LayerNorm gamma moved by one ulp (``direction`` +1 / -1).

    The INT8 network quantises each linear layer's input per token, a step function: a float
    difference of one ulp anywhere can move an activation across a rounding boundary, and that
    step travels through the remaining layers. Running the same C code on this copy measures how
    far the outputs move from float noise alone (``noise_floor``), the scale against which the C
    vs JAX max |Δp| is read: the two cannot agree bit for bit (XLA's erf/exp approximations and
    summation orders are not ours)."""
    import copy

    out = copy.copy(data)
    out.tensors = dict(data.tensors)
    for k, v in data.tensors.items():
        if k.endswith("ln.gamma"):
            out.tensors[k] = np.nextafter(v, np.float32(np.inf) if direction > 0 else np.float32(-np.inf)).astype(np.float32)
    return out


def _forward_all(native, ids, threads: int) -> np.ndarray:
    return np.concatenate([native.forward(np.concatenate(ids[s : s + 256]), np.array([len(x) for x in ids[s : s + 256]]), threads) for s in range(0, len(ids), 256)])


def noise_floor(data, ids, probs: np.ndarray, threads: int = 0) -> dict:
    """C vs the same C model with its LayerNorm gammas one ulp away (both directions): the largest
    |Δp|, its 99.9th percentile over texts, and the argmax agreement (worst of the two)."""
    d = []
    agree = []
    for direction in (1, -1):
        p1 = _forward_all(NativeModel(ulp_perturbed(data, direction)), ids, threads)
        d.append(np.abs(p1 - probs).max(1))
        agree.append(float((p1.argmax(1) == probs.argmax(1)).mean()))
    dd = np.maximum(*d)
    return {"max_abs_dprob": float(dd.max()), "p999_abs_dprob": float(np.quantile(dd, 0.999)), "agreement": min(agree)}


def evaluate_runtime_model(model_dir: str | Path, data_root: str | None = None, threads: int = 0, with_reference: bool = True, limit: int | None = None) -> dict:
    """Macro recall etc. of the C model on validation and test; argmax agreement and max |Δp| vs JAX,
    beside the one-ulp noise floor of the C model itself (``noise_floor``)."""
    model_dir = Path(model_dir)
    data = load_model(model_dir)
    native = NativeModel(data)
    dc = DataConfig(root=data_root, max_len=data.meta["max_len"], demojize=data.meta["demojize"])
    sem = load_semeval(dc.root, dc.valid_fraction, dc.split_seed)
    tok = load_tokenizer(model_dir)
    out: dict = {"model": model_dir.name, "sparsity": data.encoder_sparsity(), "file_bytes": (model_dir / "model.safetensors").stat().st_size}
    if with_reference:
        qmodel, qparams, qmasks = params_from_runtime(data)
        apply = jax.jit(lambda p, x, m, mk: qmodel.apply({"params": p}, x, m, masks=mk))
    for split in ("valid", "test"):
        exs = sem.split(split)[:limit]  # limit: the first N of each split (tests); None = all
        ids, truncated = encode(tok, [e.text for e in exs], dc.max_len, dc.demojize)
        labels = np.asarray([e.label for e in exs])
        t0 = time.perf_counter()
        probs = _forward_all(native, ids, threads)
        elapsed = time.perf_counter() - t0
        m = classification_metrics(labels, probs.argmax(1))
        m["truncated"] = truncated
        m["c_seconds"] = elapsed
        if with_reference:
            logits = predict_logits(qmodel, qparams, ids, 64, masks=qmasks, apply_fn=apply)
            pj = np.asarray(jax.nn.softmax(logits, axis=-1))
            m["agreement_with_jax"] = float((pj.argmax(1) == probs.argmax(1)).mean())
            dp = np.abs(pj - probs).max(1)  # per text
            m["max_abs_dprob_vs_jax"] = float(dp.max())
            m["p999_abs_dprob_vs_jax"] = float(np.quantile(dp, 0.999))
            # the same figures for C against itself with one-ulp LayerNorm changes (see ulp_perturbed)
            m["noise_floor_1ulp"] = noise_floor(data, ids, probs, threads)
        out[split] = m
    return out
