"""Run an exported ONNX file in ONNX Runtime or DeepSparse and compare it with the JAX reference.

``python -m compression check-onnx --onnx F.onnx --engine ort --bench-python /tmp/benchvenv/bin/python
(--teacher models/teacher | --student models/students/obert_6l_80_4b | --runtime-model models/X)``

The engines live in a separate venv (never project dependencies) and run through
``benchmarks/_worker.py``. The reference is the same weights in JAX: in float for an fp32
graph, in the INT8 simulation of the C kernels for an INT8 graph (``--int8``; ONNX's
DynamicQuantizeLinear quantises activations per tensor to uint8, the C runtime per token to int8,
so the two INT8 forms are close but not identical: that gap is what the agreement measures).
Prints and returns: argmax agreement, max |Δp|, and the macro recall of both on the 2017 test
set; for DeepSparse also ``fraction_of_supported_ops`` (1.0 = the whole graph runs in its engine).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import jax
import numpy as np

from .configs.common import DataConfig
from .data import encode, load_semeval
from .evaluate import classification_metrics, predict_logits
from .model import BertClassifier
from .weights import load_tokenizer

__all__ = ["check_onnx"]


def _reference(teacher: str | None, student: str | None, runtime_model: str | None, int8: bool):
    if teacher:
        from .teacher import load_teacher

        model, params, _ = load_teacher(teacher)
        masks = None
    elif student:
        from .student import load_student

        model, params, masks = load_student(student)
    else:
        from runtime.format import load_model

        from .runtime_eval import params_from_runtime

        model, params, masks = params_from_runtime(load_model(runtime_model))
    # whatever the loader returned (params_from_runtime's is the INT8 one): float, or INT8 with --int8
    return BertClassifier(model.cfg, quantize=int8), params, masks


def check_onnx(onnx_path: str, engine: str, bench_python: str, *, teacher: str | None = None, student: str | None = None,
               runtime_model: str | None = None, int8: bool = False, data_root: str | None = None, threads: int = 2) -> dict:
    from benchmarks.engines import ExternalEngine, write_npz

    if sum(x is not None for x in (teacher, student, runtime_model)) != 1:
        raise ValueError("give exactly one of teacher, student, runtime_model")
    model, params, masks = _reference(teacher, student, runtime_model, int8)
    dc = DataConfig(root=data_root)
    exs = load_semeval(dc.root, dc.valid_fraction, dc.split_seed).split("test")
    tok = load_tokenizer(teacher or student or runtime_model) if (Path(teacher or student or runtime_model) / "tokenizer.json").is_file() else load_tokenizer()
    ids, _ = encode(tok, [e.text for e in exs], dc.max_len, dc.demojize)
    labels = np.asarray([e.label for e in exs])
    lengths = np.array([len(x) for x in ids])
    with tempfile.TemporaryDirectory() as td:
        npz = str(Path(td) / "ids.npz")
        write_npz(npz, np.concatenate(ids), lengths, np.zeros(1, np.int64))
        ext = ExternalEngine(f"{engine}:{Path(onnx_path).name}", engine, onnx_path, npz, bench_python, threads)
        try:
            onnx_logits = ext.predict()
            info = ext.info
        finally:
            ext.close()
    ref_logits = predict_logits(model, params, ids, 64, masks=masks)
    p_onnx, p_ref = np.asarray(jax.nn.softmax(onnx_logits, -1)), np.asarray(jax.nn.softmax(ref_logits, -1))
    out = {
        "onnx": str(onnx_path),
        "engine": engine,
        "reference": ("JAX INT8 simulation" if int8 else "JAX float") + f" of {teacher or student or runtime_model}",
        "n": int(len(labels)),
        "agreement": float((p_onnx.argmax(1) == p_ref.argmax(1)).mean()),
        "max_abs_dprob": float(np.abs(p_onnx - p_ref).max()),
        "macro_recall_onnx": classification_metrics(labels, p_onnx.argmax(1))["macro_recall"],
        "macro_recall_reference": classification_metrics(labels, p_ref.argmax(1))["macro_recall"],
    }
    if "fraction_of_supported_ops" in info:
        out["fraction_of_supported_ops"] = info["fraction_of_supported_ops"]
    return out
