"""Teacher ensembles from committed logits (no weights needed): ``python -m compression ensemble``.

Each member is a folder with ``pool_logits.npz`` (training pool = train + valid, keyed by tweet id)
and ``test_logits.npz`` (the 2017 test set): ``models/teacher`` (seed 0) and ``models/teachers/<run>/``
(the other seeds; written by ``python -m compression logits`` and copied with
``python -m compression save-teacher-logits``). Everything chosen here is chosen on validation only:

- members: the mean of the members' logits (log-space averaging of their softmax outputs up to a
  per-example constant); the ensemble size ``k`` is chosen by trying the best-on-validation members
  in order (greedy forward selection by validation macro recall);
- a prior correction: a per-class logit offset ``b`` (3 values, b_neutral = 0) added to the mean,
  grid-searched on validation (macro recall rewards balanced recalls; the pool -> 2017 shift over-calls
  negative, and validation is the only split we may tune on, so this is reported, not assumed).

Reported: validation and 2017-test macro recall of each member, of the plain mean and of the chosen
ensemble, with the validation-chosen settings.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from .configs.common import DataConfig
from .data import load_semeval
from .evaluate import classification_metrics

__all__ = ["load_member", "ensemble_report", "trained_on_valid", "DEFAULT_MEMBERS"]

DEFAULT_MEMBERS = ("models/teacher", "models/teachers/*")


def trained_on_valid(folder: str | Path) -> bool:
    """A whole-pool fit (``data.train_on_pool`` in its config.json): validation was trained on, so the member
    cannot be scored or chosen on it."""
    cfg = Path(folder) / "config.json"
    if not cfg.is_file():
        return False
    return bool(json.loads(cfg.read_text()).get("config", {}).get("data", {}).get("train_on_pool", False))


def load_member(folder: str | Path) -> dict:
    f = Path(folder)
    if trained_on_valid(f):
        raise ValueError(f"{f}: trained on the whole pool (validation included); an ensemble chosen on validation cannot use it")
    pool, test = np.load(f / "pool_logits.npz"), np.load(f / "test_logits.npz")
    return {"name": f.name if f.name != "teacher" else "teacher (seed 0)", "pool": dict(zip(pool["tweet_id"].tolist(), pool["logits"])), "test_ids": test["tweet_id"], "test": test["logits"]}


def _split_logits(member: dict, ids: list[int]) -> np.ndarray:
    return np.stack([member["pool"][i] for i in ids])


def _mr(labels: np.ndarray, logits: np.ndarray) -> float:
    return classification_metrics(labels, logits.argmax(-1))["macro_recall"]


def ensemble_report(folders: list[str], data_root: str | None = None) -> dict:
    dc = DataConfig(root=data_root)
    data = load_semeval(dc.root, dc.valid_fraction, dc.split_seed)
    valid_ids = [e.id for e in data.valid]
    valid_y = np.asarray([e.label for e in data.valid])
    test_ids = [e.id for e in data.test]
    test_y = np.asarray([e.label for e in data.test])
    members = [load_member(f) for f in folders]
    for m in members:
        if m["test_ids"].tolist() != test_ids:
            raise ValueError(f"{m['name']}: its test logits are not in the 2017 test file's order")
        m["valid_logits"] = _split_logits(m, valid_ids)
        m["valid"], m["test_mr"] = _mr(valid_y, m["valid_logits"]), _mr(test_y, m["test"])
    order = sorted(members, key=lambda m: -m["valid"])
    # greedy forward selection of the ensemble size on validation
    best_k, best_v = 1, -1.0
    for k in range(1, len(order) + 1):
        v = _mr(valid_y, np.mean([m["valid_logits"] for m in order[:k]], axis=0))
        if v > best_v + 1e-12:
            best_k, best_v = k, v
    chosen = order[:best_k]
    mean_valid = np.mean([m["valid_logits"] for m in chosen], axis=0)
    mean_test = np.mean([m["test"] for m in chosen], axis=0)
    all_valid = np.mean([m["valid_logits"] for m in members], axis=0)
    all_test = np.mean([m["test"] for m in members], axis=0)
    # prior correction on validation: offsets for negative and positive (neutral fixed at 0)
    grid = np.round(np.arange(-1.0, 1.0001, 0.1), 2)
    best_b, best_bv = (0.0, 0.0), _mr(valid_y, mean_valid)
    for bn, bp in itertools.product(grid, grid):
        v = _mr(valid_y, mean_valid + np.array([bn, 0.0, bp]))
        if v > best_bv + 1e-12:
            best_b, best_bv = (float(bn), float(bp)), v
    shift = np.array([best_b[0], 0.0, best_b[1]])
    return {
        "members": [{"name": m["name"], "valid": m["valid"], "test": m["test_mr"]} for m in members],
        "mean_of_all": {"k": len(members), "valid": _mr(valid_y, all_valid), "test": _mr(test_y, all_test)},
        "chosen": {"members": [m["name"] for m in chosen], "valid": best_v, "test": _mr(test_y, mean_test)},
        "prior_corrected": {"offsets_neg_pos": best_b, "valid": best_bv, "test": _mr(test_y, mean_test + shift)},
        "single_best_on_valid": {"name": order[0]["name"], "valid": order[0]["valid"], "test": order[0]["test_mr"]},
    }


def format_report(r: dict) -> str:
    lines = ["| model | valid macro recall | 2017-test macro recall |", "| --- | --- | --- |"]
    for m in r["members"]:
        lines.append(f"| {m['name']} | {100 * m['valid']:.2f} | {100 * m['test']:.2f} |")
    a = r["mean_of_all"]
    lines.append(f"| mean of all {a['k']} members' logits | {100 * a['valid']:.2f} | {100 * a['test']:.2f} |")
    c = r["chosen"]
    lines.append(f"| ensemble chosen on validation ({', '.join(c['members'])}) | {100 * c['valid']:.2f} | {100 * c['test']:.2f} |")
    p = r["prior_corrected"]
    lines.append(f"| + prior correction chosen on validation (offsets neg {p['offsets_neg_pos'][0]:+.1f}, pos {p['offsets_neg_pos'][1]:+.1f}) | {100 * p['valid']:.2f} | {100 * p['test']:.2f} |")
    return "\n".join(lines) + "\n\n" + json.dumps(r, indent=1)
