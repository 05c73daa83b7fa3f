"""Model format ``sparsepulse-sparse-int8`` v1: the contract between ``compression`` and ``runtime``.

A model directory ``models/<name>/`` holds ``model.safetensors`` (this format), the tokenizer
files, ``README.md`` (model card) and ``metrics.json``.

Metadata (safetensors header, all strings; JSON where noted):
    format            "sparsepulse-sparse-int8"
    format_version    "2" (v1 files, which have no checksum, still load with a warning)
    checksum          "sha256:<hex>" over every tensor (name, dtype, shape, bytes; names sorted): a
                      flipped bit anywhere in the tensor data is refused at load (v2+)
    config            JSON: vocab_size, hidden_size, num_layers, num_heads, intermediate_size,
                      max_position, type_vocab_size, layer_norm_eps, num_labels
    labels            JSON list, classifier row order: the three names "negative", "neutral",
                      "positive" in any order (the Scorer returns them in that order); anything else
                      is refused
    max_len           tokens per text incl. [CLS]/[SEP], MIN_MAX_LEN .. max_position; longer texts
                      are truncated (counted)
    normalization     version of runtime.text.normalize, e.g. "tweet-norm/1"
    demojize          JSON bool, argument of normalize()
    sparsity          JSON: {"block_shape": [1, 4], "sparsity": measured zero fraction of encoder linears}
    quantization      JSON: {"weights": "int8-symmetric-per-output-channel",
                             "activations": "int8-dynamic-per-token-symmetric",
                             "embeddings": "int8-symmetric-per-row", "rounding": "half-even"}
Tensors:
    embeddings.word.values int8 (V, C)      embeddings.word.scale f32 (V,)
    embeddings.position f32 (P, C)          embeddings.token_type f32 (TV, C)
    embeddings.ln.gamma / .beta f32 (C,)
    layer_{i}.{query,key,value,attn_out,ffn_in,ffn_out}:
        .values int8 (nnz, 4)   .col_idx uint16 (nnz,)   .row_ptr int32 (out + 1,)
        .scale f32 (out,) > 0   .bias f32 (out,)
      4-block CSR: the blocks of output row o are row_ptr[o] .. row_ptr[o+1]-1, block b covers
      inputs 4*col_idx[b] .. +3; weight = values * scale[o]. Values lie in [-127, 127].
    layer_{i}.attn_ln.gamma / .beta, layer_{i}.ffn_ln.gamma / .beta f32 (C,)
    pooler.weight f32 (C, C)   pooler.bias f32 (C,)   classifier.weight f32 (K, C)   classifier.bias f32 (K,)
Quantisation (what training simulates and C computes): weights q = round_half_even(w / s_o),
s_o = max|w_o| · fl32(1/127); activations per token t: s_t = max|x_t| · fl32(1/127),
q = round_half_even(x / s_t); (a multiplication, not a division by 127: compilers rewrite division by
a constant into a multiplication by its reciprocal, which would make JAX and C disagree by an ulp);
y = s_t · s_o · Σ q_x q_w + b.
"""
from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelFormatError, ModelFormatWarning
from .text import NORMALIZATION_VERSION

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LABELS",
    "tensor_checksum",
    "LINEAR_NAMES",
    "BLOCK",
    "TOKENIZER_FILES",
    "INV127",
    "linear_shape",
    "quantize_symmetric",
    "pack_linear",
    "unpack_linear",
    "ModelData",
    "save_model",
    "load_model",
    "resave_model",
]

FORMAT = "sparsepulse-sparse-int8"
FORMAT_VERSION = 2
#: versions this runtime reads; v1 is v2 without the checksum
READABLE_VERSIONS = (1, 2)
#: the Scorer's output order (ARCHITECTURE.md, the scorer API); a model must carry exactly these labels
LABELS = ("negative", "neutral", "positive")
#: shortest max_len that leaves room for text beside [CLS] and [SEP]
MIN_MAX_LEN = 8
#: LayerNorm epsilon range of real BERTs (1e-12) to generous (1e-3): outside it, a corrupted value
LAYER_NORM_EPS_RANGE = (1e-13, 1e-3)
#: largest |value| of a float parameter or scale of a trained model (BERT's are below 100)
MAX_ABS_PARAM = 1e4
LINEAR_NAMES = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")
BLOCK = 4
WEIGHTS_FILE = "model.safetensors"
_CONFIG_KEYS = {
    "vocab_size": int,
    "hidden_size": int,
    "num_layers": int,
    "num_heads": int,
    "intermediate_size": int,
    "max_position": int,
    "type_vocab_size": int,
    "layer_norm_eps": float,
    "num_labels": int,
}
_LIMITS = {"vocab_size": 1 << 24, "hidden_size": 16384, "num_layers": 64, "num_heads": 1024, "intermediate_size": 65536, "max_position": 8192, "type_vocab_size": 64, "num_labels": 1024}
QUANTIZATION = {
    "weights": "int8-symmetric-per-output-channel",
    "activations": "int8-dynamic-per-token-symmetric",
    "embeddings": "int8-symmetric-per-row",
    "rounding": "half-even",
}
MAX_FILE_BYTES = 2 << 30
#: tokenizer files a model directory carries (copied from the base model)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
#: fl32(1/127): the quantisation scale is max|x| * INV127 (see the module docstring)
INV127 = np.float32(1.0 / 127.0)


def linear_shape(name: str, hidden: int, intermediate: int) -> tuple[int, int]:
    """(out, in) of an encoder linear: ``ffn_in`` widens to the intermediate size, ``ffn_out``
    narrows back, the four attention linears keep the hidden size. The one home of this rule."""
    if name not in LINEAR_NAMES:
        raise ValueError(f"unknown linear {name!r}")
    return (intermediate if name == "ffn_in" else hidden, intermediate if name == "ffn_out" else hidden)


def quantize_symmetric(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric INT8: (q int8 (R, K), scale f32 (R,)).

    An all-zero row (a fully pruned output channel) gets q = 0 and scale 1: scales are always > 0."""
    w = np.asarray(w, np.float32)
    amax = np.abs(w).max(axis=1)
    scale = (amax * INV127).astype(np.float32)
    scale = np.where(scale > 0, scale, np.float32(1)).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def pack_linear(q_oi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense INT8 ``(out, in)`` -> 4-block CSR (values (nnz, 4), col_idx (nnz,), row_ptr (out+1,)).

    All-zero blocks are dropped (they contribute nothing)."""
    out, inn = q_oi.shape
    if inn % BLOCK:
        raise ValueError(f"input dimension {inn} is not a multiple of {BLOCK}")
    blocks = q_oi.reshape(out, inn // BLOCK, BLOCK)
    nz = np.any(blocks != 0, axis=2)  # (out, in/4)
    rows, cols = np.nonzero(nz)
    values = blocks[rows, cols].astype(np.int8)
    row_ptr = np.zeros(out + 1, np.int32)
    np.cumsum(np.bincount(rows, minlength=out), out=row_ptr[1:])
    return np.ascontiguousarray(values), cols.astype(np.uint16), row_ptr


def unpack_linear(values: np.ndarray, col_idx: np.ndarray, row_ptr: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`pack_linear`: dense INT8 ``(out, in)``."""
    out, inn = shape
    dense = np.zeros((out, inn // BLOCK, BLOCK), np.int8)
    rows = np.repeat(np.arange(out), np.diff(row_ptr))
    dense[rows, col_idx.astype(np.int64)] = values
    return dense.reshape(out, inn)


def tensor_checksum(tensors: dict[str, np.ndarray]) -> str:
    """``sha256:<hex>`` over every tensor's name, dtype, shape and bytes, names in sorted order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = np.ascontiguousarray(tensors[name])
        h.update(name.encode() + b"\0" + t.dtype.str.encode() + b"\0" + np.asarray(t.shape, np.int64).tobytes())
        h.update(memoryview(t).cast("B"))
    return "sha256:" + h.hexdigest()


class ModelData:
    """A validated model: ``meta`` (decoded), ``config`` (dict), ``tensors`` (name -> ndarray)."""

    def __init__(self, meta: dict[str, Any], tensors: dict[str, np.ndarray]):
        self.meta = meta
        self.tensors = tensors

    @property
    def config(self) -> dict:
        return self.meta["config"]

    @property
    def label_order(self) -> np.ndarray:
        """Column permutation from the file's classifier rows to ``LABELS`` order."""
        return np.asarray([self.meta["labels"].index(n) for n in LABELS], np.int64)

    def encoder_sparsity(self) -> float:
        total = nnz = 0
        c = self.config
        for i in range(c["num_layers"]):
            for n in LINEAR_NAMES:
                out, inn = linear_shape(n, c["hidden_size"], c["intermediate_size"])
                total += out * inn
                nnz += int(np.count_nonzero(self.tensors[f"layer_{i}.{n}.values"]))
        return 1.0 - nnz / max(total, 1)


def _expected_shapes(c: dict) -> dict[str, tuple[str, tuple]]:
    V, C, P, TV, I, K = c["vocab_size"], c["hidden_size"], c["max_position"], c["type_vocab_size"], c["intermediate_size"], c["num_labels"]
    exp: dict[str, tuple[str, tuple]] = {
        "embeddings.word.values": ("int8", (V, C)),
        "embeddings.word.scale": ("float32", (V,)),
        "embeddings.position": ("float32", (P, C)),
        "embeddings.token_type": ("float32", (TV, C)),
        "embeddings.ln.gamma": ("float32", (C,)),
        "embeddings.ln.beta": ("float32", (C,)),
        "pooler.weight": ("float32", (C, C)),
        "pooler.bias": ("float32", (C,)),
        "classifier.weight": ("float32", (K, C)),
        "classifier.bias": ("float32", (K,)),
    }
    for i in range(c["num_layers"]):
        for ln in ("attn_ln", "ffn_ln"):
            exp[f"layer_{i}.{ln}.gamma"] = ("float32", (C,))
            exp[f"layer_{i}.{ln}.beta"] = ("float32", (C,))
        for n in LINEAR_NAMES:
            out, _ = linear_shape(n, C, I)
            p = f"layer_{i}.{n}"
            exp[p + ".row_ptr"] = ("int32", (out + 1,))
            exp[p + ".scale"] = ("float32", (out,))
            exp[p + ".bias"] = ("float32", (out,))
            exp[p + ".values"] = ("int8", None)  # (nnz, 4), checked with row_ptr
            exp[p + ".col_idx"] = ("uint16", None)
    return exp


def _decode_meta(raw: dict[str, str] | None, where: str) -> dict[str, Any]:
    if not raw:
        raise ModelFormatError(f"{where}: no metadata: not a {FORMAT} file")
    if raw.get("format") != FORMAT:
        raise ModelFormatError(f"{where}: format {raw.get('format')!r}, expected {FORMAT!r}")
    version = raw.get("format_version")
    if version not in [str(v) for v in READABLE_VERSIONS]:
        raise ModelFormatError(f"{where}: format version {version!r} is not supported (this runtime reads {', '.join(map(str, READABLE_VERSIONS))})")
    meta: dict[str, Any] = {"format": FORMAT, "format_version": int(version)}
    try:
        for key in ("config", "labels", "demojize", "sparsity", "quantization"):
            meta[key] = json.loads(raw[key])
        meta["max_len"] = int(raw["max_len"])
        meta["normalization"] = raw["normalization"]
        if meta["format_version"] >= 2:
            meta["checksum"] = raw["checksum"]
    except KeyError as e:
        raise ModelFormatError(f"{where}: metadata field {e.args[0]!r} missing") from None
    except (ValueError, TypeError, RecursionError) as e:  # RecursionError: absurdly nested JSON
        raise ModelFormatError(f"{where}: malformed metadata: {type(e).__name__}: {str(e)[:200]}") from None
    if meta["format_version"] >= 2 and not (isinstance(meta["checksum"], str) and meta["checksum"].startswith("sha256:")):
        raise ModelFormatError(f"{where}: checksum {str(meta['checksum'])[:80]!r} is not sha256:<hex>")
    c = meta["config"]
    if not isinstance(c, dict) or set(c) != set(_CONFIG_KEYS):
        raise ModelFormatError(f"{where}: config keys {sorted(c) if isinstance(c, dict) else c!r} != {sorted(_CONFIG_KEYS)}")
    for k, typ in _CONFIG_KEYS.items():
        v = c[k]
        if typ is int and (not isinstance(v, int) or isinstance(v, bool) or not 0 < v <= _LIMITS[k]):
            raise ModelFormatError(f"{where}: config.{k}={v!r} out of range")
        if typ is float and (not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or not LAYER_NORM_EPS_RANGE[0] <= v <= LAYER_NORM_EPS_RANGE[1]):
            raise ModelFormatError(f"{where}: config.{k}={v!r} out of range {LAYER_NORM_EPS_RANGE}")
    if c["hidden_size"] % c["num_heads"] or c["hidden_size"] % BLOCK or c["intermediate_size"] % BLOCK:
        raise ModelFormatError(f"{where}: hidden/intermediate sizes incompatible with heads or 4-blocks")
    labels = meta["labels"]
    if not (isinstance(labels, list) and all(isinstance(x, str) for x in labels) and len(labels) == len(LABELS) and set(labels) == set(LABELS)):
        raise ModelFormatError(f"{where}: labels {str(labels)[:200]}: a SparsePulse model classifies into exactly {', '.join(LABELS)} (in any order)")
    if c["num_labels"] != len(LABELS):
        raise ModelFormatError(f"{where}: num_labels {c['num_labels']} != {len(LABELS)}")
    if not MIN_MAX_LEN <= meta["max_len"] <= c["max_position"]:
        raise ModelFormatError(f"{where}: max_len {meta['max_len']} outside {MIN_MAX_LEN}..max_position ({c['max_position']})")
    if meta["normalization"] != NORMALIZATION_VERSION:
        raise ModelFormatError(f"{where}: normalisation {meta['normalization']!r}, this runtime implements {NORMALIZATION_VERSION!r}")
    if not isinstance(meta["demojize"], bool):
        raise ModelFormatError(f"{where}: demojize must be a JSON bool")
    if meta["quantization"] != QUANTIZATION:
        raise ModelFormatError(f"{where}: unsupported quantisation scheme {meta['quantization']!r}")
    sp = meta["sparsity"]
    if not isinstance(sp, dict) or sp.get("block_shape") != [1, BLOCK]:
        raise ModelFormatError(f"{where}: sparsity.block_shape must be [1, {BLOCK}] in format v{FORMAT_VERSION}")
    return meta


def _validate_tensors(meta: dict, tensors: dict[str, np.ndarray], where: str) -> None:
    c = meta["config"]
    exp = _expected_shapes(c)
    missing = sorted(set(exp) - set(tensors))
    extra = sorted(set(tensors) - set(exp))
    if missing or extra:
        raise ModelFormatError(f"{where}: tensors missing {missing[:5]} / unexpected {extra[:5]}")
    for name, (dtype, shape) in exp.items():
        t = tensors[name]
        if t.dtype != np.dtype(dtype):
            raise ModelFormatError(f"{where}: {name} has dtype {t.dtype}, expected {dtype}")
        if shape is not None and t.shape != shape:
            raise ModelFormatError(f"{where}: {name} has shape {t.shape}, expected {shape}")
        if t.dtype.kind == "f":
            if not np.isfinite(t).all():
                raise ModelFormatError(f"{where}: {name} contains NaN or infinite values")
            if t.size and float(np.abs(t).max()) > MAX_ABS_PARAM:
                raise ModelFormatError(f"{where}: {name} has values up to {float(np.abs(t).max()):.3g}, beyond any trained model ({MAX_ABS_PARAM:g})")
    _check_scale(tensors["embeddings.word.scale"], "embeddings.word.scale", where)
    if (tensors["embeddings.word.values"] == -128).any():
        raise ModelFormatError(f"{where}: embedding value -128 outside the symmetric range")
    for i in range(c["num_layers"]):
        for n in LINEAR_NAMES:
            p = f"layer_{i}.{n}"
            _, inn = linear_shape(n, c["hidden_size"], c["intermediate_size"])
            rp, ci, vals = tensors[p + ".row_ptr"], tensors[p + ".col_idx"], tensors[p + ".values"]
            nnz = int(rp[-1])
            if rp[0] != 0 or (np.diff(rp.astype(np.int64)) < 0).any():
                raise ModelFormatError(f"{where}: {p}.row_ptr is not a non-decreasing sequence from 0")
            if vals.shape != (nnz, BLOCK) or ci.shape != (nnz,):
                raise ModelFormatError(f"{where}: {p}: values {vals.shape} / col_idx {ci.shape} do not match row_ptr[-1] = {nnz}")
            if nnz and int(ci.max()) >= inn // BLOCK:
                raise ModelFormatError(f"{where}: {p}.col_idx out of range (max {int(ci.max())}, limit {inn // BLOCK - 1})")
            if (vals == -128).any():
                raise ModelFormatError(f"{where}: {p}.values contains -128 (symmetric range is [-127, 127])")
            _check_scale(tensors[p + ".scale"], p + ".scale", where)


def _check_scale(scale: np.ndarray, name: str, where: str) -> None:
    """Quantisation scales are positive normal floats (a denormal scale is a corrupted value)."""
    if (scale <= 0).any():
        raise ModelFormatError(f"{where}: {name} has zero or negative entries")
    if (scale < np.finfo(np.float32).tiny).any():
        raise ModelFormatError(f"{where}: {name} has denormal entries")


def save_model(path: str | Path, tensors: dict[str, np.ndarray], *, config: dict, labels: list[str], max_len: int, demojize: bool, sparsity: float) -> Path:
    """Write ``model.safetensors`` after validating exactly what :func:`load_model` checks."""
    from safetensors.numpy import save_file

    raw = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "checksum": "",
        "config": json.dumps(config, sort_keys=True),
        "labels": json.dumps(list(labels)),
        "max_len": str(int(max_len)),
        "normalization": NORMALIZATION_VERSION,
        "demojize": json.dumps(bool(demojize)),
        "sparsity": json.dumps({"block_shape": [1, BLOCK], "sparsity": float(sparsity)}),
        "quantization": json.dumps(QUANTIZATION, sort_keys=True),
    }
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    raw["checksum"] = tensor_checksum(tensors)
    meta = _decode_meta(raw, str(path))
    _validate_tensors(meta, tensors, str(path))
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    save_file(tensors, str(path), metadata=raw)
    return path


def resave_model(path: str | Path) -> Path:
    """Re-write a readable model file in the current format version (same tensors, same metadata
    plus what the version adds, e.g. the v2 checksum)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModelFormatWarning)
        d = load_model(path)
    m = d.meta
    return save_model(path, d.tensors, config=m["config"], labels=m["labels"], max_len=m["max_len"], demojize=m["demojize"], sparsity=m["sparsity"]["sparsity"])


def load_model(path: str | Path) -> ModelData:
    """Read and validate a ``model.safetensors`` (or a model directory). Raises :class:`ModelFormatError`."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    where = str(path)
    if not path.is_file():
        raise ModelFormatError(f"{where}: file not found")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ModelFormatError(f"{where}: {size} bytes is more than the {MAX_FILE_BYTES} byte limit")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "np") as f:
            meta = _decode_meta(f.metadata(), where)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as e:
        raise ModelFormatError(f"{where}: unreadable safetensors file: {e}") from None
    except (OSError, ValueError, TypeError, RecursionError, MemoryError) as e:
        raise ModelFormatError(f"{where}: unreadable safetensors file: {type(e).__name__}: {str(e)[:200]}") from None
    if meta["format_version"] >= 2:
        got = tensor_checksum(tensors)
        if got != meta["checksum"]:
            raise ModelFormatError(f"{where}: tensor data does not match its checksum (damaged file): {got[:23]}... != {meta['checksum'][:23]}...")
    else:
        warnings.warn(f"{where}: format v1 has no checksum, so damaged tensor data cannot be detected; re-save it (python -m compression resave-model)", ModelFormatWarning, stacklevel=2)
    _validate_tensors(meta, tensors, where)
    return ModelData(meta, tensors)
