"""Gradual pruning: the cubic schedule, masks, global ranking, and one OBS / magnitude pruning step.

The OBS step follows oBERT (Kurtic et al., EMNLP 2022): collect ``num_grads`` (m) mini-batch
gradients of the training loss (masked), build the block-diagonal empirical Fisher inverse with
the Woodbury recursion (:mod:`compression.obs`), rank all groups of all pruned matrices globally
by saliency ρ, prune the lowest to reach the target sparsity, and apply the optimal update δw to
the remaining weights. Magnitude pruning ranks by ‖w_Q‖² with no update (the baseline).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterable, Iterator

import jax
import numpy as np

from .model import LINEAR_NAMES
from .obs import fisher_inverse_init, from_grouped, obs_update, saliency, to_grouped, woodbury_update

__all__ = [
    "cubic_sparsity",
    "pruning_steps",
    "matrix_keys",
    "ones_masks",
    "mask_sparsity",
    "apply_masks",
    "select_global",
    "prune_step",
    "PruneReport",
]


def cubic_sparsity(step: int, initial: float, final: float, start: int, end: int) -> float:
    """Zhu & Gupta (2017): s_t = s_f + (s_i − s_f)(1 − (t − t₀)/(t_end − t₀))³ for t₀ ≤ t ≤ t_end.

    0 before ``start``; ``final`` from ``end`` on.
    """
    if step < start:
        return 0.0
    if step >= end or end <= start:
        return final
    frac = (step - start) / (end - start)
    return final + (initial - final) * (1.0 - frac) ** 3


def pruning_steps(start: int, end: int, frequency: int) -> list[int]:
    """Steps at which a pruning event happens: start, start+Δ, ..., end (inclusive).

    A step less than Δ/2 before ``end`` is merged into ``end``: with epochs of 1395 steps,
    Δ = int(0.5 · 1395) = 697 and end = int(1.5 · 1395) = 2092 would otherwise give a last event
    at 2091 followed by an empty one at 2092 (the 6-layer recipes before this fix: one no-op
    Fisher pass of ~5 minutes and a one-step learning-rate rewind)."""
    if frequency <= 0:
        raise ValueError("pruning frequency must be positive")
    steps = list(range(start, end, frequency))
    if len(steps) > 1 and 2 * (end - steps[-1]) < frequency:
        steps.pop()
    if not steps or steps[-1] != end:
        steps.append(end)
    return steps


def matrix_keys(params: dict) -> list[tuple[str, str]]:
    """(layer, linear) of every pruned matrix: the six encoder linears of each layer."""
    layers = sorted((k for k in params if k.startswith("layer_")), key=lambda k: int(k.split("_")[1]))
    return [(lk, n) for lk in layers for n in LINEAR_NAMES]


def ones_masks(params: dict, value: float = 1.0) -> dict:
    """Masks ``{layer: {linear: (out, in) float32}}`` filled with ``value`` (1: keep all) for every
    pruned matrix."""
    out: dict = {}
    for lk, n in matrix_keys(params):
        out.setdefault(lk, {})[n] = np.full(params[lk][n]["weight"].shape, value, np.float32)
    return out


def mask_sparsity(masks: dict) -> float:
    total = zeros = 0
    for lm in masks.values():
        for m in lm.values():
            m = np.asarray(m)
            total += m.size
            zeros += int(m.size - np.count_nonzero(m))
    return zeros / max(total, 1)


def apply_masks(params: dict, masks: dict) -> dict:
    """Pruned weights set to exactly zero (after every optimiser step)."""
    out = dict(params)
    for lk, lm in masks.items():
        layer = dict(out[lk])
        for n, m in lm.items():
            layer[n] = {**layer[n], "weight": layer[n]["weight"] * m}
        out[lk] = layer
    return out


def select_global(scores: list[np.ndarray], already: list[np.ndarray], target_groups: int) -> list[np.ndarray]:
    """Globally pick the lowest-score groups so that ``target_groups`` are pruned in total.

    ``already`` flags groups pruned earlier: they stay pruned and are not counted again.
    Returns, per matrix, the flags of the *newly* pruned groups.
    """
    flat = np.concatenate([np.where(a, np.inf, s) for s, a in zip(scores, already)])
    n_already = int(sum(int(a.sum()) for a in already))
    n_new = max(0, min(target_groups - n_already, flat.size - n_already))
    new = np.zeros(flat.size, bool)
    if n_new:
        idx = np.argpartition(flat, n_new - 1)[:n_new]
        new[idx] = True
    out, s = [], 0
    for sc in scores:
        out.append(new[s : s + sc.size])
        s += sc.size
    return out


@dataclasses.dataclass
class PruneReport:
    target: float
    sparsity: float
    newly_pruned_groups: int
    seconds: float
    grads_seconds: float = 0.0


def prune_step(
    params: dict,
    masks: dict,
    target: float,
    *,
    method: str,
    group_shape: tuple[int, int],
    grad_fn: Callable[[dict, dict, dict], dict] | None = None,
    batches: Iterable[dict] | None = None,
    num_grads: int = 0,
    damp: float = 1e-7,
    block_size: int = 32,
    chunk: int = 16,
) -> tuple[dict, dict, PruneReport]:
    """One pruning event to ``target`` sparsity (fraction of pruned weights among the matrices).

    ``method``: "obs" (needs ``grad_fn(params, masks, batch) -> grads tree`` and ``batches``,
    ``num_grads`` of them are used) or "magnitude".
    Returns new params (with the OBS update applied and pruned weights zeroed), new masks, report.
    """
    t0 = time.perf_counter()
    keys = matrix_keys(params)
    q = group_shape[0] * group_shape[1]
    ws = [to_grouped(np.asarray(params[lk][n]["weight"], np.float64), group_shape) for lk, n in keys]
    ms = [to_grouped(np.asarray(masks[lk][n]), group_shape) for lk, n in keys]
    already = [m.reshape(-1, q).max(axis=1) == 0 for m in ms]
    grads_s = 0.0
    if method == "obs":
        if grad_fn is None or batches is None or num_grads <= 0:
            raise ValueError("OBS pruning needs grad_fn, batches and num_grads > 0")
        finv = [fisher_inverse_init(w.size, block_size, damp) for w in ws]
        it: Iterator[dict] = iter(batches)
        done = 0
        while done < num_grads:
            k = min(chunk, num_grads - done)
            tg = time.perf_counter()
            gs = [grad_fn(params, masks, next(it)) for _ in range(k)]
            gs = [[np.asarray(g[lk][n]["weight"]) for g in gs] for lk, n in keys]
            grads_s += time.perf_counter() - tg
            for i, (glist, (lk, n)) in enumerate(zip(gs, keys)):
                G = np.stack([to_grouped(g, group_shape) for g in glist])  # (k, d) masked gradients
                finv[i] = woodbury_update(finv[i], G, num_grads)
            done += k
        scores = [saliency(w, f, q) for w, f in zip(ws, finv)]
    elif method == "magnitude":
        scores = [np.sum(w.reshape(-1, q) ** 2, axis=1) for w in ws]
        finv = None
    else:
        raise ValueError(f"unknown pruning method {method!r}")
    total_groups = sum(w.size // q for w in ws)
    new = select_global(scores, already, int(round(target * total_groups)))
    new_params = jax.tree_util.tree_map(lambda x: x, params)
    new_masks = {lk: dict(v) for lk, v in masks.items()}
    for i, (lk, n) in enumerate(keys):
        shape = params[lk][n]["weight"].shape
        pruned = already[i] | new[i]
        if finv is not None and new[i].any():
            w = obs_update(ws[i], finv[i], new[i], q)
        else:
            w = ws[i]
        keep = np.repeat(~pruned, q).astype(np.float64)
        w = w * keep
        new_params[lk] = {**new_params[lk], n: {**new_params[lk][n], "weight": from_grouped(w, shape, group_shape).astype(np.float32)}}
        new_masks[lk][n] = from_grouped(keep.astype(np.float32), shape, group_shape)
    rep = PruneReport(target, mask_sparsity(new_masks), int(sum(int(x.sum()) for x in new)), time.perf_counter() - t0, grads_s)
    return new_params, new_masks, rep
