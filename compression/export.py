"""Export a (masked, float or QAT) model to the runtime's ``sparsepulse-sparse-int8`` directory."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from runtime.format import LINEAR_NAMES, TOKENIZER_FILES, WEIGHTS_FILE, pack_linear, quantize_symmetric, save_model
from .model import LABELS, BertConfig
from .weights import base_model_dir

__all__ = ["to_runtime_tensors", "export_runtime_model", "runtime_config", "bert_config", "FLOAT_TENSORS", "LAYER_NORMS"]

#: the runtime config's fields, the same names as BertConfig's
_CONFIG_FIELDS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position", "type_vocab_size", "layer_norm_eps", "num_labels")
#: float tensors of the runtime format -> their path in the Flax parameter tree (the one home of this
#: mapping: export writes with it, runtime_eval reads back with it)
FLOAT_TENSORS = {
    "embeddings.position": ("position_embeddings",),
    "embeddings.token_type": ("token_type_embeddings",),
    "embeddings.ln.gamma": ("embeddings_ln", "scale"),
    "embeddings.ln.beta": ("embeddings_ln", "bias"),
    "pooler.weight": ("pooler", "weight"),
    "pooler.bias": ("pooler", "bias"),
    "classifier.weight": ("classifier", "weight"),
    "classifier.bias": ("classifier", "bias"),
}
#: per-layer LayerNorm tensors: runtime suffix -> (Flax module, parameter)
LAYER_NORMS = {f"{ln}.{k}": (ln, v) for ln in ("attn_ln", "ffn_ln") for k, v in (("gamma", "scale"), ("beta", "bias"))}


def runtime_config(cfg: BertConfig) -> dict:
    return {k: getattr(cfg, k) for k in _CONFIG_FIELDS}


def bert_config(c: dict) -> BertConfig:
    """Inverse of :func:`runtime_config`."""
    return BertConfig(**{k: c[k] for k in _CONFIG_FIELDS})


def _get(tree: dict, path: tuple):
    for k in path:
        tree = tree[k]
    return tree


def to_runtime_tensors(params: dict, cfg: BertConfig, masks: dict | None = None) -> tuple[dict[str, np.ndarray], float]:
    """Quantise (the scheme of runtime/format.py) and pack; returns tensors and the encoder sparsity."""
    f32 = lambda a: np.ascontiguousarray(np.asarray(a, np.float32))  # noqa: E731
    word_q, word_s = quantize_symmetric(f32(params["word_embeddings"]))
    t: dict[str, np.ndarray] = {"embeddings.word.values": word_q, "embeddings.word.scale": word_s}
    t.update({name: f32(_get(params, path)) for name, path in FLOAT_TENSORS.items()})
    total = zeros = 0
    for i in range(cfg.num_layers):
        lp = params[f"layer_{i}"]
        for n in LINEAR_NAMES:
            w = f32(lp[n]["weight"])
            if masks is not None:
                w = w * np.asarray(masks[f"layer_{i}"][n], np.float32)
            q, s = quantize_symmetric(w)
            vals, col, rp = pack_linear(q)
            p = f"layer_{i}.{n}"
            t.update({p + ".values": vals, p + ".col_idx": col, p + ".row_ptr": rp, p + ".scale": s, p + ".bias": f32(lp[n]["bias"])})
            total += q.size
            zeros += q.size - int(np.count_nonzero(q))
        for name, path in LAYER_NORMS.items():
            t[f"layer_{i}.{name}"] = f32(_get(lp, path))
    return t, zeros / max(total, 1)


def export_runtime_model(params: dict, cfg: BertConfig, out_dir: str | Path, *, max_len: int, demojize: bool, masks: dict | None = None) -> Path:
    """Write ``out_dir/model.safetensors`` and the tokenizer files; returns the weights path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors, sparsity = to_runtime_tensors(params, cfg, masks)
    path = save_model(out_dir / WEIGHTS_FILE, tensors, config=runtime_config(cfg), labels=list(LABELS), max_len=max_len, demojize=demojize, sparsity=sparsity)
    for f in TOKENIZER_FILES:
        shutil.copy2(base_model_dir() / f, out_dir / f)
    return path
