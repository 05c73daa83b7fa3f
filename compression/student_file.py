"""The packaged float student file (``models/students/<run>/model.safetensors``), format
``sparsepulse-student-fp16`` v1: flattened Flax parameters in fp16, masks as bit-packed uint8 tensors
``mask.<path>`` with their shapes in the metadata. Written by ``compression.package``, read by
``compression.student.load_student`` (its own module, so neither imports the other)."""
from __future__ import annotations

import json
from pathlib import Path

import flax.traverse_util
import numpy as np
from safetensors.numpy import load_file, save_file

from .model import LABELS, BertClassifier, BertConfig

__all__ = ["STUDENT_FORMAT", "STUDENT_FORMAT_VERSION", "write_student_file", "load_packaged_student"]

STUDENT_FORMAT = "sparsepulse-student-fp16"
STUDENT_FORMAT_VERSION = 1


def write_student_file(path: str | Path, model: BertClassifier, params: dict, masks: dict) -> Path:
    tensors = {k: np.asarray(v, np.float16) for k, v in flax.traverse_util.flatten_dict(params, sep=".").items()}
    shapes = {}
    for k, m in flax.traverse_util.flatten_dict(masks, sep=".").items():
        m = np.asarray(m) != 0
        tensors["mask." + k] = np.packbits(m.reshape(-1))
        shapes[k] = list(m.shape)
    meta = {"format": STUDENT_FORMAT, "format_version": str(STUDENT_FORMAT_VERSION), "config": json.dumps(model.cfg.to_dict()), "mask_shapes": json.dumps(shapes), "labels": json.dumps(list(LABELS))}
    save_file(tensors, str(path), metadata=meta)
    return Path(path)


def load_packaged_student(model_dir: str | Path) -> tuple[BertClassifier, dict, dict]:
    """(model, float32 params, masks) of a student written by ``save_student``; typed errors on a
    wrong format, a truncated file or masks that do not match the weights."""
    path = Path(model_dir) / "model.safetensors"
    from safetensors import safe_open

    try:
        with safe_open(str(path), "np") as f:
            meta = f.metadata() or {}
        raw = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for truncated / garbled files
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from None
    if meta.get("format") != STUDENT_FORMAT or meta.get("format_version") != str(STUDENT_FORMAT_VERSION):
        raise ValueError(f"{path}: not a {STUDENT_FORMAT} v{STUDENT_FORMAT_VERSION} file (got {meta.get('format')!r} v{meta.get('format_version')!r})")
    cfg = BertConfig(**json.loads(meta["config"]))
    shapes = json.loads(meta["mask_shapes"])
    flat = {k: v.astype(np.float32) for k, v in raw.items() if not k.startswith("mask.")}
    mflat = {}
    for k, shape in shapes.items():
        n = int(np.prod(shape))
        bits, wk = raw.get("mask." + k), k + ".weight"  # the mask of layer_i.<linear> gates its weight
        if bits is None or bits.size != (n + 7) // 8 or wk not in flat or list(flat[wk].shape) != shape:
            raise ValueError(f"{path}: mask {k!r} missing or inconsistent with the weights")
        mflat[k] = np.unpackbits(bits)[:n].reshape(shape).astype(np.float32)
        flat[wk] = flat[wk] * mflat[k]
    params = flax.traverse_util.unflatten_dict(flat, sep=".")
    masks = flax.traverse_util.unflatten_dict(mflat, sep=".")
    return BertClassifier(cfg), params, masks
