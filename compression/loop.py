"""The resumable training loop shared by the teacher and the students.

Exact resume: the batch order of each epoch is a pure function of (seed, epoch), the step
function derives its randomness from the global step, and the checkpoint holds the whole state
pytree (step, parameters, optimiser state, weight average, masks, best-so-far record).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import flax.serialization
import numpy as np

from .data import Batch, iter_batches

__all__ = ["LoopSpec", "run_loop", "save_json", "atomic_write", "setup_logging", "record_config", "log", "wall_time_s"]

log = logging.getLogger("sparsepulse.train")


def save_json(path: Path, obj: Any) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


def atomic_write(path: Path, data: bytes) -> None:
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def record_config(run_dir: Path, record: dict, resume: bool) -> None:
    """Write run_dir/config.json; when resuming a checkpoint, refuse a config that changed since."""
    path = run_dir / "config.json"
    fresh = json.loads(json.dumps(record))  # normalise tuples -> lists, as stored
    if resume and (run_dir / "checkpoint.msgpack").exists() and path.is_file():
        old = json.loads(path.read_text())
        if old != fresh:
            raise ValueError(f"{run_dir}: the config differs from the one the checkpoint was trained with; use a new --run-dir (or the old config)")
    save_json(path, fresh)


def setup_logging(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = str((run_dir / "train.log").resolve())
    for h in list(log.handlers):
        if isinstance(h, logging.FileHandler):
            log.removeHandler(h)
            h.close()
    fh = logging.FileHandler(path)
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(fh)
    log.setLevel(logging.INFO)


@dataclasses.dataclass
class LoopSpec:
    """What :func:`run_loop` needs. ``state`` must hold ``step`` and ``epochs_evaluated``.

    ``step_fn(state, batch, step) -> (state, loss)``; ``batch_fn(Batch) -> dict`` builds the
    step's inputs; ``before_step(state, step) -> state`` runs first at every step (pruning
    events); ``end_of_epoch(state, epoch) -> state`` runs once per completed epoch.
    """

    name: str
    run_dir: Path
    state: dict
    train_ids: Sequence[np.ndarray]
    train_labels: np.ndarray
    batch_size: int
    total_steps: int
    seed: int
    step_fn: Callable
    batch_fn: Callable[[Batch], dict]
    before_step: Callable | None = None
    end_of_epoch: Callable | None = None
    checkpoint_every: int = 200
    log_every: int = 20

    @classmethod
    def from_config(cls, cfg, run_dir: Path, prep, state: dict, total_steps: int, step_fn: Callable, batch_fn: Callable, end_of_epoch: Callable | None, before_step: Callable | None = None) -> "LoopSpec":
        """The fields every experiment config (teacher or student) determines the same way."""
        return cls(
            name=cfg.name,
            run_dir=run_dir,
            state=state,
            train_ids=prep.ids["train"],
            train_labels=prep.labels["train"],
            batch_size=cfg.optim.batch_size,
            total_steps=total_steps,
            seed=cfg.run.seed,
            step_fn=step_fn,
            batch_fn=batch_fn,
            before_step=before_step,
            end_of_epoch=end_of_epoch if cfg.run.eval_every_epoch else None,
            checkpoint_every=cfg.run.checkpoint_every,
            log_every=cfg.run.log_every,
        )

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_ids) / self.batch_size)


def run_loop(spec: LoopSpec, *, resume: bool, max_steps: int | None, progress: bool) -> dict:
    ckpt = spec.run_dir / "checkpoint.msgpack"
    state = spec.state
    if resume and ckpt.exists():
        state = flax.serialization.from_bytes(state, ckpt.read_bytes())
        state["step"] = int(state["step"])
        state["epochs_evaluated"] = int(state["epochs_evaluated"])
        log.info("resumed at step %d", state["step"])
    elif resume:
        log.info("no checkpoint in %s: starting from scratch", spec.run_dir)

    def checkpoint() -> None:
        atomic_write(ckpt, flax.serialization.to_bytes(state))

    spe, total = spec.steps_per_epoch, spec.total_steps
    stop_at = total if max_steps is None else min(total, max_steps)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=stop_at, initial=state["step"], desc=spec.name, dynamic_ncols=True, mininterval=2.0)
    t0, seen, loss_acc, loss_n = time.perf_counter(), 0, 0.0, 0

    def epoch_done(epoch: int) -> None:
        nonlocal state
        if spec.end_of_epoch is not None:
            state = spec.end_of_epoch(state, epoch)
        state["epochs_evaluated"] = epoch + 1
        checkpoint()

    for epoch in range(math.ceil(total / spe)):
        first = epoch * spe
        epoch_end = min(first + spe, total)
        if state["step"] >= min(epoch_end, stop_at):
            if state["step"] >= epoch_end and state["epochs_evaluated"] <= epoch:
                epoch_done(epoch)  # stopped between the epoch's last step and its evaluation
            continue
        for j, batch in enumerate(iter_batches(spec.train_ids, spec.train_labels, spec.batch_size, shuffle_seed=spec.seed * 1000 + epoch)):
            step = first + j
            if step < state["step"]:
                continue  # resume: replay the same order, skip what was done
            if step >= stop_at:
                break
            if spec.before_step is not None:
                state = spec.before_step(state, step)
            state, loss = spec.step_fn(state, spec.batch_fn(batch), step)
            state["step"] = step + 1
            seen += int(batch.weights.sum())
            loss_acc += float(loss)
            loss_n += 1
            if bar is not None:
                bar.update(1)
            if state["step"] % spec.log_every == 0:
                rate = seen / (time.perf_counter() - t0)
                log.info("step %d/%d loss %.4f %.1f seq/s", state["step"], total, loss_acc / loss_n, rate)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_acc / loss_n:.4f}", seq_s=f"{rate:.1f}")
                loss_acc, loss_n = 0.0, 0
            if state["step"] % spec.checkpoint_every == 0:
                checkpoint()
        if state["step"] == epoch_end:
            epoch_done(epoch)
        if state["step"] >= stop_at:
            break
    checkpoint()
    if bar is not None:
        bar.close()
    this_run = time.perf_counter() - t0
    log.info("stopped at step %d of %d (%.1f s this run)", state["step"], total, this_run)
    add_wall_time(spec.run_dir, this_run)
    return state


def add_wall_time(run_dir: Path, seconds: float) -> None:
    """Training wall time summed over the (resumed) runs of a run directory, in ``wall_time.json``."""
    path = Path(run_dir) / "wall_time.json"
    prev = json.loads(path.read_text()) if path.is_file() else {"seconds": 0.0, "runs": 0}
    save_json(path, {"seconds": prev["seconds"] + seconds, "runs": prev["runs"] + 1})


def wall_time_s(run_dir: Path) -> float | None:
    """The training wall time recorded by :func:`run_loop` (None for a run that recorded none)."""
    path = Path(run_dir) / "wall_time.json"
    return float(json.loads(path.read_text())["seconds"]) if path.is_file() else None
