"""Fine-tuning loop: resumable, length-bucketed, class-weighted, with weight averaging.

Resume is exact: the batch order of each epoch is a pure function of (seed, epoch), dropout keys
are ``fold_in(seed, step)``, and a checkpoint stores step, parameters, optimiser state, the
weight average and the best-so-far record.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .configs.common import TeacherConfig
from .data import Batch, SemEvalData, encode, iter_batches, load_semeval
from .evaluate import classification_metrics, predict_logits
from .model import BertClassifier, BertConfig
from .weights import load_base_config, load_base_params, load_tokenizer

__all__ = ["Prepared", "prepare", "build_model", "make_optimizer", "train", "class_weights", "save_json"]

log = logging.getLogger("sparsepulse.train")


# ---------------------------------------------------------------- setup


@dataclasses.dataclass
class Prepared:
    """Tokenised splits and their labels, ready for batching."""

    data: SemEvalData
    ids: dict[str, list[np.ndarray]]
    labels: dict[str, np.ndarray]
    truncated: dict[str, int]


def prepare(cfg: TeacherConfig, tokenizer=None) -> Prepared:
    data = load_semeval(cfg.data.root, cfg.data.valid_fraction, cfg.data.split_seed)
    if cfg.data.limit_train:
        data.train = data.train[: cfg.data.limit_train]
    if cfg.data.limit_eval:
        data.valid = data.valid[: cfg.data.limit_eval]
        data.test = data.test[: cfg.data.limit_eval]
    tok = tokenizer or load_tokenizer()
    ids, labels, truncated = {}, {}, {}
    for split in ("train", "valid", "test"):
        exs = data.split(split)
        ids[split], truncated[split] = encode(tok, [e.text for e in exs], cfg.data.max_len, cfg.data.demojize)
        labels[split] = np.asarray([e.label for e in exs], np.int32)
    return Prepared(data, ids, labels, truncated)


def build_model(cfg: TeacherConfig) -> tuple[BertClassifier, dict]:
    overrides = dict(cfg.model.overrides)
    bcfg = load_base_config(**overrides)
    model = BertClassifier(bcfg)
    if cfg.model.init == "base":
        params = load_base_params(bcfg, seed=cfg.run.seed)
    elif cfg.model.init == "random":
        params = model.init(jax.random.PRNGKey(cfg.run.seed), np.zeros((1, 8), np.int32), np.ones((1, 8), np.int32))[
            "params"
        ]
        params = jax.tree_util.tree_map(np.asarray, dict(params))
    else:
        raise ValueError(f"unknown model.init {cfg.model.init!r}")
    return model, params


def class_weights(labels: np.ndarray, num_labels: int, power: float) -> np.ndarray:
    counts = np.bincount(labels, minlength=num_labels).astype(np.float64)
    w = (counts.sum() / (num_labels * np.maximum(counts, 1))) ** power
    return w.astype(np.float32)


def _layer_factor_tree(params: dict, num_layers: int, decay: float) -> dict:
    def factor(top: str) -> float:
        if top.startswith("layer_"):
            return decay ** (num_layers - int(top.split("_")[1]))
        if top in ("pooler", "classifier"):
            return 1.0
        return decay ** (num_layers + 1)  # embeddings

    return {k: jax.tree_util.tree_map(lambda _: factor(k), v) for k, v in params.items()}


def _scale_by_tree(factors) -> optax.GradientTransformation:
    def init_fn(_):
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        return jax.tree_util.tree_map(lambda u, f: u * f, updates, factors), state

    return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(cfg: TeacherConfig, params: dict, total_steps: int, num_layers: int) -> optax.GradientTransformation:
    o = cfg.optim
    warmup = max(1, int(o.warmup_fraction * total_steps))
    sched = optax.join_schedules(
        [
            optax.linear_schedule(0.0, o.learning_rate, warmup),
            optax.linear_schedule(o.learning_rate, 0.0, max(1, total_steps - warmup)),
        ],
        [warmup],
    )
    # no weight decay on biases and LayerNorm parameters
    decay_mask = jax.tree_util.tree_map_with_path(
        lambda path, x: np.ndim(x) == 2 and "embeddings" not in str(path[0]), params
    )
    chain = [optax.clip_by_global_norm(o.grad_clip), optax.adamw(sched, weight_decay=o.weight_decay, mask=decay_mask)]
    if o.layer_decay != 1.0:
        chain.append(_scale_by_tree(_layer_factor_tree(params, num_layers, o.layer_decay)))
    return optax.chain(*chain)


def weighted_ce(logits_bk: jax.Array, labels_b: jax.Array, row_w_b: jax.Array, class_w_k: jax.Array, smoothing: float):
    """Class-weighted cross-entropy with label smoothing, averaged over real rows."""
    k = logits_bk.shape[-1]
    target_bk = optax.smooth_labels(jax.nn.one_hot(labels_b, k), smoothing) if smoothing else jax.nn.one_hot(labels_b, k)
    ce_b = optax.softmax_cross_entropy(logits_bk, target_bk)
    w_b = row_w_b * class_w_k[labels_b]
    return jnp.sum(w_b * ce_b) / jnp.maximum(jnp.sum(row_w_b), 1.0)


def save_json(path: Path, obj: Any) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------- loop


def _setup_logging(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    fh = logging.FileHandler(run_dir / "train.log")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(fh)
    log.setLevel(logging.INFO)


def train(
    cfg: TeacherConfig,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    prepared: Prepared | None = None,
    progress: bool = True,
) -> dict:
    """Train (or continue training) and return the final state dict.

    ``max_steps`` stops early after that many global steps (tests, time-boxing); the checkpoint
    written at the stop lets ``resume=True`` continue exactly.
    """
    run_dir = Path(run_dir)
    _setup_logging(run_dir)
    prep = prepared or prepare(cfg)
    model, params = build_model(cfg)
    bcfg: BertConfig = model.cfg
    o = cfg.optim
    n_train = len(prep.ids["train"])
    steps_per_epoch = math.ceil(n_train / o.batch_size)
    total_steps = int(round(o.epochs * steps_per_epoch))
    tx = make_optimizer(cfg, params, total_steps, bcfg.num_layers)
    cw = jnp.asarray(class_weights(prep.labels["train"], bcfg.num_labels, o.class_weight_power))

    state = {
        "step": 0,
        "params": params,
        "opt_state": tx.init(params),
        "ema": params if o.ema_decay else {},
        "best": {"score": -1.0, "which": "", "step": 0},
        "epochs_evaluated": 0,
    }
    ckpt = run_dir / "checkpoint.msgpack"
    if resume and ckpt.exists():
        state = flax.serialization.from_bytes(state, ckpt.read_bytes())
        state["step"] = int(state["step"])
        state["epochs_evaluated"] = int(state["epochs_evaluated"])
        log.info("resumed at step %d", state["step"])
    elif resume:
        log.info("no checkpoint in %s: starting from scratch", run_dir)
    save_json(run_dir / "config.json", {"config": dataclasses.asdict(cfg), "model": bcfg.to_dict()})

    base_key = jax.random.PRNGKey(cfg.run.seed)

    def loss_fn(p, b: dict, key):
        logits = model.apply({"params": p}, b["input_ids"], b["attention_mask"], deterministic=False, rngs={"dropout": key})
        return weighted_ce(logits, b["labels"], b["weights"], cw, o.label_smoothing)

    @jax.jit
    def train_step(p, opt_state, ema, b, step):
        key = jax.random.fold_in(base_key, step)
        loss, grads = jax.value_and_grad(loss_fn)(p, b, key)
        updates, opt_state = tx.update(grads, opt_state, p)
        p = optax.apply_updates(p, updates)
        if o.ema_decay:
            ema = jax.tree_util.tree_map(lambda e, x: o.ema_decay * e + (1 - o.ema_decay) * x, ema, p)
        return p, opt_state, ema, loss

    eval_fn = jax.jit(lambda p, x, m: model.apply({"params": p}, x, m))

    def evaluate(p, split: str) -> dict:
        logits = predict_logits(model, p, prep.ids[split], cfg.run.eval_batch_size, apply_fn=lambda pp, x, m, _: eval_fn(pp, x, m))
        return classification_metrics(prep.labels[split], logits.argmax(-1))

    def checkpoint() -> None:
        _atomic_write(ckpt, flax.serialization.to_bytes(state))

    def end_of_epoch(epoch: int) -> None:
        cands = {"raw": state["params"]}
        if o.ema_decay:
            cands["ema"] = state["ema"]
        for which, p in cands.items():
            m = evaluate(p, "valid")
            log.info("epoch %d step %d valid[%s] macro_recall=%.4f acc=%.4f", epoch, state["step"], which, m["macro_recall"], m["accuracy"])
            if m["macro_recall"] > state["best"]["score"]:
                state["best"] = {"score": m["macro_recall"], "which": which, "step": state["step"]}
                _atomic_write(run_dir / "best.msgpack", flax.serialization.to_bytes(p))
        state["epochs_evaluated"] = epoch + 1
        save_json(run_dir / "best.json", state["best"])

    stop_at = total_steps if max_steps is None else min(total_steps, max_steps)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=stop_at, initial=state["step"], desc=cfg.name, dynamic_ncols=True, mininterval=2.0)
    t0, seen, loss_acc, loss_n = time.perf_counter(), 0, 0.0, 0
    n_epochs = math.ceil(total_steps / steps_per_epoch)
    for epoch in range(n_epochs):
        first = epoch * steps_per_epoch
        epoch_end = min(first + steps_per_epoch, total_steps)
        if state["step"] >= min(epoch_end, stop_at):
            if state["step"] >= epoch_end and state["epochs_evaluated"] <= epoch and cfg.run.eval_every_epoch:
                end_of_epoch(epoch)  # stopped between the epoch's last step and its evaluation
                checkpoint()
            continue
        for j, batch in enumerate(iter_batches(prep.ids["train"], prep.labels["train"], o.batch_size, shuffle_seed=cfg.run.seed * 1000 + epoch)):
            step = first + j
            if step < state["step"]:
                continue  # resume: replay the same order, skip what was done
            if step >= stop_at:
                break
            b = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "labels": batch.labels, "weights": batch.weights}
            p, os_, ema, loss = train_step(state["params"], state["opt_state"], state["ema"], b, step)
            state.update(params=p, opt_state=os_, ema=ema, step=step + 1)
            seen += int(batch.weights.sum())
            loss_acc += float(loss)
            loss_n += 1
            if bar is not None:
                bar.update(1)
            if state["step"] % cfg.run.log_every == 0:
                rate = seen / (time.perf_counter() - t0)
                msg = f"step {state['step']}/{total_steps} loss {loss_acc / loss_n:.4f} {rate:.1f} seq/s"
                log.info(msg)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_acc / loss_n:.4f}", seq_s=f"{rate:.1f}")
                loss_acc, loss_n = 0.0, 0
            if state["step"] % cfg.run.checkpoint_every == 0:
                checkpoint()
        if state["step"] == epoch_end and cfg.run.eval_every_epoch:
            end_of_epoch(epoch)
            checkpoint()
        if state["step"] >= stop_at:
            break
    checkpoint()
    if bar is not None:
        bar.close()
    log.info("stopped at step %d of %d (%.1f s this run)", state["step"], total_steps, time.perf_counter() - t0)
    state["total_steps"] = total_steps
    return state
