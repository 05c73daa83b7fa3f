"""Metrics (macro-averaged recall is SemEval-2017 4A's official score) and batched prediction."""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from .data import iter_batches
from .model import LABELS, BertClassifier

__all__ = ["classification_metrics", "predict_logits"]


def classification_metrics(labels: np.ndarray, pred: np.ndarray, num_labels: int = len(LABELS)) -> dict:
    """Macro recall, per-class recall, accuracy, confusion matrix (rows = gold, cols = predicted)."""
    labels = np.asarray(labels)
    pred = np.asarray(pred)
    cm = np.zeros((num_labels, num_labels), np.int64)
    np.add.at(cm, (labels, pred), 1)
    support = cm.sum(1)
    recall = np.divide(np.diag(cm), support, out=np.zeros(num_labels), where=support > 0)
    return {
        "macro_recall": float(recall[support > 0].mean()) if support.any() else 0.0,
        "recall": {LABELS[i]: float(recall[i]) for i in range(num_labels)},
        "accuracy": float(np.diag(cm).sum() / max(1, cm.sum())),
        "n": int(cm.sum()),
        "confusion": cm.tolist(),
    }


def predict_logits(
    model: BertClassifier,
    params,
    ids: Sequence[np.ndarray],
    batch_size: int = 64,
    masks=None,
    apply_fn=None,
) -> np.ndarray:
    """Logits ``(n, K)`` in dataset order; length-sorted batches, padding rows dropped."""
    fn = apply_fn or jax.jit(lambda p, x, m, mk: model.apply({"params": p}, x, m, masks=mk))
    out = np.zeros((len(ids), model.cfg.num_labels), np.float32)
    labels = np.zeros(len(ids), np.int32)
    for b in iter_batches(ids, labels, batch_size):
        logits = np.asarray(fn(params, b.input_ids, b.attention_mask, masks))
        keep = b.index >= 0
        out[b.index[keep]] = logits[keep]
    return out
