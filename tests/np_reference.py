"""Plain numpy forward of the sparsepulse-sparse-int8 format, written from runtime/format.py's
docstring: the oracle the C runtime is tested against (float32 storage, float64 accumulation)."""
import numpy as np
from scipy.special import erf

from runtime.format import LINEAR_NAMES, unpack_linear


def quantize_rows(x):
    x = np.asarray(x, np.float32)
    amax = np.abs(x).max(axis=1)
    s = (amax * np.float32(1.0 / 127.0)).astype(np.float32)
    safe = np.where(s > 0, s, np.float32(1))
    q = np.clip(np.rint(x / safe[:, None]), -127, 127).astype(np.int8)
    return q, s


def linear(t, prefix, shape, x):
    q, s = quantize_rows(x)
    w = unpack_linear(t[prefix + ".values"], t[prefix + ".col_idx"], t[prefix + ".row_ptr"], shape)
    acc = q.astype(np.int64) @ w.astype(np.int64).T
    return (s[:, None].astype(np.float64) * t[prefix + ".scale"][None].astype(np.float64)) * acc + t[prefix + ".bias"]


def layernorm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def forward(t, config, seqs):
    c = config
    C, I, H = c["hidden_size"], c["intermediate_size"], c["num_heads"]
    D = C // H
    probs = []
    for ids in seqs:
        T = len(ids)
        ids = np.asarray(ids)
        h = t["embeddings.word.values"][ids].astype(np.float64) * t["embeddings.word.scale"][ids, None] + t["embeddings.position"][:T] + t["embeddings.token_type"][0]
        h = layernorm(h, t["embeddings.ln.gamma"], t["embeddings.ln.beta"], c["layer_norm_eps"])
        for i in range(c["num_layers"]):
            p = f"layer_{i}."
            q = linear(t, p + "query", (C, C), h).reshape(T, H, D)
            k = linear(t, p + "key", (C, C), h).reshape(T, H, D)
            v = linear(t, p + "value", (C, C), h).reshape(T, H, D)
            sc = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(D)
            sc = np.exp(sc - sc.max(-1, keepdims=True))
            sc /= sc.sum(-1, keepdims=True)
            ctx = np.einsum("hqk,khd->qhd", sc, v).reshape(T, C)
            h = layernorm(h + linear(t, p + "attn_out", (C, C), ctx), t[p + "attn_ln.gamma"], t[p + "attn_ln.beta"], c["layer_norm_eps"])
            f = linear(t, p + "ffn_in", (I, C), h)
            f = 0.5 * f * (1 + erf(f / np.sqrt(2)))
            h = layernorm(h + linear(t, p + "ffn_out", (C, I), f), t[p + "ffn_ln.gamma"], t[p + "ffn_ln.beta"], c["layer_norm_eps"])
        pooled = np.tanh(t["pooler.weight"] @ h[0] + t["pooler.bias"])
        z = t["classifier.weight"] @ pooled + t["classifier.bias"]
        e = np.exp(z - z.max())
        probs.append(e / e.sum())
    return np.array(probs)
