"""Random models in the ``sparsepulse-sparse-int8`` format (real shapes or tiny), for tests and
benchmarks of the runtime before, and independently of, trained models."""
from __future__ import annotations

import numpy as np

from .format import BLOCK, LINEAR_NAMES, linear_shape, pack_linear, quantize_symmetric

__all__ = ["MINILM_CONFIG", "TINY_CONFIG", "random_tensors"]

MINILM_CONFIG = {
    "vocab_size": 30522,
    "hidden_size": 384,
    "num_layers": 6,
    "num_heads": 12,
    "intermediate_size": 1536,
    "max_position": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "num_labels": 3,
}
TINY_CONFIG = {**MINILM_CONFIG, "vocab_size": 120, "hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64, "max_position": 40}


def random_tensors(config: dict, sparsity: float = 0.8, seed: int = 0, std: float = 0.05) -> dict[str, np.ndarray]:
    """Tensors of a random model: 4-block pruned (the lowest-norm blocks) and INT8-quantised."""
    rng = np.random.default_rng(seed)
    c = config
    V, C, I, P, K = c["vocab_size"], c["hidden_size"], c["intermediate_size"], c["max_position"], c["num_labels"]
    f32 = np.float32
    word_q, word_s = quantize_symmetric(rng.normal(0, std, (V, C)).astype(f32))
    t: dict[str, np.ndarray] = {
        "embeddings.word.values": word_q,
        "embeddings.word.scale": word_s,
        "embeddings.position": rng.normal(0, std, (P, C)).astype(f32),
        "embeddings.token_type": rng.normal(0, std, (c["type_vocab_size"], C)).astype(f32),
        "embeddings.ln.gamma": (1 + rng.normal(0, 0.1, C)).astype(f32),
        "embeddings.ln.beta": rng.normal(0, 0.1, C).astype(f32),
        "pooler.weight": rng.normal(0, std, (C, C)).astype(f32),
        "pooler.bias": rng.normal(0, 0.1, C).astype(f32),
        "classifier.weight": rng.normal(0, 0.5, (K, C)).astype(f32),
        "classifier.bias": rng.normal(0, 0.1, K).astype(f32),
    }
    for i in range(c["num_layers"]):
        for n in LINEAR_NAMES:
            out, inn = linear_shape(n, C, I)
            w = rng.normal(0, 1.0 / np.sqrt(inn), (out, inn)).astype(f32)
            norms = np.abs(w.reshape(out, inn // BLOCK, BLOCK)).sum(-1)
            k = int(round(sparsity * norms.size))
            if k:
                thr = np.partition(norms.ravel(), k - 1)[k - 1]
                w = (w.reshape(out, -1, BLOCK) * (norms > thr)[..., None]).reshape(out, inn)
            q, s = quantize_symmetric(w)
            vals, col, rp = pack_linear(q)
            p = f"layer_{i}.{n}"
            t.update({p + ".values": vals, p + ".col_idx": col, p + ".row_ptr": rp, p + ".scale": s, p + ".bias": rng.normal(0, 0.05, out).astype(f32)})
        for ln in ("attn_ln", "ffn_ln"):
            t[f"layer_{i}.{ln}.gamma"] = (1 + rng.normal(0, 0.1, C)).astype(f32)
            t[f"layer_{i}.{ln}.beta"] = rng.normal(0, 0.1, C).astype(f32)
    return t
