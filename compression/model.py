"""BERT encoder and sequence-classification head in Flax (linen).

Weights use the PyTorch/C layout ``weight: (out, in)`` so that pruning blocks of
consecutive input weights of one output row map 1:1 onto what the C kernels consume,
and conversion from the base model's safetensors is a rename, not a transpose.

Every encoder linear layer accepts an optional per-weight mask of the same shape as its
weight (the pruning hook): the effective weight is ``weight * mask``.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

# shared with the runtime (their one home is runtime/format.py): INV127 = fl32(1/127), the quantisation
# scale is max|x| * INV127; LINEAR_NAMES = the six encoder linears of each layer (pruned by oBERT);
# LABELS = the output classes in classifier-row order
from runtime.format import INV127, LABELS, LINEAR_NAMES

__all__ = [
    "fake_quant_rows",
    "BertConfig",
    "BertClassifier",
    "LINEAR_NAMES",
    "LABELS",
]



@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_position: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    num_labels: int = len(LABELS)

    @classmethod
    def from_hf_json(cls, path: str | Path, **overrides: Any) -> "BertConfig":
        """Read a Hugging Face BERT ``config.json``."""
        raw = json.loads(Path(path).read_text())
        if raw.get("model_type", "bert") != "bert" or raw.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{path}: not a BERT config with exact GELU")
        cfg = cls(
            vocab_size=raw["vocab_size"],
            hidden_size=raw["hidden_size"],
            num_layers=raw["num_hidden_layers"],
            num_heads=raw["num_attention_heads"],
            intermediate_size=raw["intermediate_size"],
            max_position=raw["max_position_embeddings"],
            type_vocab_size=raw["type_vocab_size"],
            layer_norm_eps=raw["layer_norm_eps"],
            hidden_dropout=raw["hidden_dropout_prob"],
            attention_dropout=raw["attention_probs_dropout_prob"],
        )
        return dataclasses.replace(cfg, **overrides)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def _dense_init(std: float = 0.02):
    return nn.initializers.normal(stddev=std)


def quant_rows(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Symmetric INT8 along the last axis: (q as int32, scale with a trailing axis of 1)."""
    amax = jnp.max(jnp.abs(x), axis=-1, keepdims=True)
    s = amax * INV127
    q = jnp.clip(jnp.round(x / jnp.where(s > 0, s, 1.0)), -127, 127).astype(jnp.int32)
    return q, s


def fake_quant_rows(x: jax.Array) -> jax.Array:
    """Symmetric INT8 fake quantisation along the last axis, straight-through gradient.

    s = max|x| / 127 per row, q = round_half_even(x / s) in [-127, 127], returns q·s; exactly the
    scheme of runtime/format.py (weights per output channel, activations per token).
    """
    amax = jnp.max(jnp.abs(x), axis=-1, keepdims=True)
    s = amax * INV127
    q = jnp.clip(jnp.round(x / jnp.where(s > 0, s, 1.0)), -127, 127) * s
    return jax.lax.stop_gradient(q) + (x - jax.lax.stop_gradient(x))  # value exactly q·s, gradient 1


class _Linear(nn.Module):
    """y = x @ (weight * mask).T + bias with ``weight: (out, in)``.

    ``quantize``: INT8 simulation as the C runtime computes it: weights per output channel,
    inputs per token (dynamic), both symmetric, straight-through estimator.
    """

    features: int
    quantize: bool = False
    exact_int: bool = False  # with quantize: integer accumulation exactly as C (evaluation only, no gradient)

    @nn.compact
    def __call__(self, x_btc: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        w_oc = self.param("weight", _dense_init(), (self.features, x_btc.shape[-1]))
        b_o = self.param("bias", nn.initializers.zeros, (self.features,))
        if mask is not None:
            w_oc = w_oc * mask
        # the input's max |x|, recorded only when the caller makes "intermediates" mutable (static
        # activation scales for the QDQ ONNX export); otherwise a no-op
        # (and its range, and the output's: static uint8 scales of the DeepSparse export form)
        self.sow("intermediates", "input_amax", jnp.max(jnp.abs(x_btc)))
        self.sow("intermediates", "input_range", jnp.stack([jnp.min(x_btc), jnp.max(x_btc)]))
        if self.quantize and self.exact_int:
            # y = (s_t · s_o) · Σ q_x q_w + b, the C runtime's arithmetic (int32 accumulation)
            qx, sx = quant_rows(x_btc)
            qw, sw = quant_rows(w_oc)
            acc = jnp.einsum("...c,oc->...o", qx, qw, preferred_element_type=jnp.int32)
            y = (sx * sw[:, 0]) * acc.astype(jnp.float32) + b_o
        else:
            if self.quantize:
                w_oc = fake_quant_rows(w_oc)
                x_btc = fake_quant_rows(x_btc)
            y = jnp.einsum("...c,oc->...o", x_btc, w_oc) + b_o
        self.sow("intermediates", "output_range", jnp.stack([jnp.min(y), jnp.max(y)]))
        return y


class _Layer(nn.Module):
    cfg: BertConfig
    quantize: bool = False
    exact_int: bool = False

    @nn.compact
    def __call__(self, h_btc, bias_b11t, masks: Mapping[str, jax.Array] | None, deterministic: bool):
        cfg = self.cfg
        m = masks or {}
        B, T, C = h_btc.shape
        H, D = cfg.num_heads, cfg.head_dim
        q_bthd = _Linear(C, self.quantize, self.exact_int, name="query")(h_btc, m.get("query")).reshape(B, T, H, D)
        k_bthd = _Linear(C, self.quantize, self.exact_int, name="key")(h_btc, m.get("key")).reshape(B, T, H, D)
        v_bthd = _Linear(C, self.quantize, self.exact_int, name="value")(h_btc, m.get("value")).reshape(B, T, H, D)
        scores_bhqk = jnp.einsum("bqhd,bkhd->bhqk", q_bthd, k_bthd) / math.sqrt(D) + bias_b11t
        probs_bhqk = jax.nn.softmax(scores_bhqk, axis=-1)
        probs_bhqk = nn.Dropout(cfg.attention_dropout)(probs_bhqk, deterministic=deterministic)
        ctx_btc = jnp.einsum("bhqk,bkhd->bqhd", probs_bhqk, v_bthd).reshape(B, T, C)
        a_btc = _Linear(C, self.quantize, self.exact_int, name="attn_out")(ctx_btc, m.get("attn_out"))
        a_btc = nn.Dropout(cfg.hidden_dropout)(a_btc, deterministic=deterministic)
        h_btc = nn.LayerNorm(epsilon=cfg.layer_norm_eps, use_fast_variance=False, name="attn_ln")(h_btc + a_btc)
        f_btf = jax.nn.gelu(_Linear(cfg.intermediate_size, self.quantize, self.exact_int, name="ffn_in")(h_btc, m.get("ffn_in")), approximate=False)
        f_btc = _Linear(C, self.quantize, self.exact_int, name="ffn_out")(f_btf, m.get("ffn_out"))
        f_btc = nn.Dropout(cfg.hidden_dropout)(f_btc, deterministic=deterministic)
        return nn.LayerNorm(epsilon=cfg.layer_norm_eps, use_fast_variance=False, name="ffn_ln")(h_btc + f_btc)


class BertClassifier(nn.Module):
    """BERT encoder + pooler (tanh dense on [CLS]) + linear classifier.

    ``__call__(input_ids, attention_mask, masks=None, deterministic=True, return_hidden=False)``
    returns logits ``(B, num_labels)`` (and the last hidden states ``(B, T, C)`` when asked).
    ``masks``: ``{"layer_i": {name: mask (out, in)}}`` for any subset of :data:`LINEAR_NAMES`.
    """

    cfg: BertConfig
    quantize: bool = False  # INT8 simulation of the runtime (QAT and the reference for C)
    exact_int: bool = False  # with quantize: exact integer accumulation (the reference for C; no gradients)

    @nn.compact
    def __call__(
        self,
        input_ids_bt: jax.Array,
        attention_mask_bt: jax.Array,
        masks: Mapping[str, Mapping[str, jax.Array]] | None = None,
        deterministic: bool = True,
        return_hidden: bool = False,
    ):
        cfg = self.cfg
        B, T = input_ids_bt.shape
        word = self.param("word_embeddings", _dense_init(), (cfg.vocab_size, cfg.hidden_size))
        pos = self.param("position_embeddings", _dense_init(), (cfg.max_position, cfg.hidden_size))
        typ = self.param("token_type_embeddings", _dense_init(), (cfg.type_vocab_size, cfg.hidden_size))
        if self.quantize:
            word = fake_quant_rows(word)  # INT8 per row
        h_btc = jnp.take(word, input_ids_bt, axis=0) + pos[None, :T] + typ[0][None, None]
        h_btc = nn.LayerNorm(epsilon=cfg.layer_norm_eps, use_fast_variance=False, name="embeddings_ln")(h_btc)
        h_btc = nn.Dropout(cfg.hidden_dropout)(h_btc, deterministic=deterministic)
        # additive attention bias: 0 where attended, a large negative where padding
        bias_b11t = jnp.where(attention_mask_bt[:, None, None, :] > 0, 0.0, -1e9).astype(h_btc.dtype)
        masks = masks or {}
        for i in range(cfg.num_layers):
            h_btc = _Layer(cfg, self.quantize, self.exact_int, name=f"layer_{i}")(h_btc, bias_b11t, masks.get(f"layer_{i}"), deterministic)
        pooled_bc = jnp.tanh(_Linear(cfg.hidden_size, name="pooler")(h_btc[:, 0]))
        pooled_bc = nn.Dropout(cfg.hidden_dropout)(pooled_bc, deterministic=deterministic)
        logits_bk = _Linear(cfg.num_labels, name="classifier")(pooled_bc)
        return (logits_bk, h_btc) if return_hidden else logits_bk
