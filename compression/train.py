"""Teacher fine-tuning: class-weighted, label-smoothed, layer-wise lr decay, weight averaging.

The loop itself (exact resume, checkpoints, progress) is :mod:`compression.loop`; dropout keys are
``fold_in(seed, step)``.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .configs.common import TeacherConfig
from .data import SemEvalData, encode, load_semeval
from .evaluate import classification_metrics, predict_logits
from .loop import LoopSpec, atomic_write, log, record_config, run_loop, save_json, setup_logging
from .model import BertClassifier, BertConfig
from .weights import load_base_config, load_base_params, load_tokenizer

__all__ = ["Prepared", "prepare", "build_model", "make_optimizer", "train", "class_weights", "weighted_ce"]


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
    if cfg.data.train_on_pool:  # whole-pool fit: valid is trained on too (its figures are then not held out)
        data.train = data.train + data.valid
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


def train(
    cfg: TeacherConfig,
    run_dir: str | Path,
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
    setup_logging(run_dir)
    prep = prepared or prepare(cfg)
    model, params = build_model(cfg)
    bcfg: BertConfig = model.cfg
    o = cfg.optim
    steps_per_epoch = math.ceil(len(prep.ids["train"]) / o.batch_size)
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
    record_config(run_dir, {"config": dataclasses.asdict(cfg), "model": bcfg.to_dict()}, resume)
    base_key = jax.random.PRNGKey(cfg.run.seed)

    def loss_fn(p, b: dict, key):
        logits = model.apply({"params": p}, b["input_ids"], b["attention_mask"], deterministic=False, rngs={"dropout": key})
        return weighted_ce(logits, b["labels"], b["weights"], cw, o.label_smoothing)

    @jax.jit
    def _step(p, opt_state, ema, b, step):
        key = jax.random.fold_in(base_key, step)
        loss, grads = jax.value_and_grad(loss_fn)(p, b, key)
        updates, opt_state = tx.update(grads, opt_state, p)
        p = optax.apply_updates(p, updates)
        if o.ema_decay:
            ema = jax.tree_util.tree_map(lambda e, x: o.ema_decay * e + (1 - o.ema_decay) * x, ema, p)
        return p, opt_state, ema, loss

    def step_fn(st, b, step):
        p, os_, ema, loss = _step(st["params"], st["opt_state"], st["ema"], b, step)
        st.update(params=p, opt_state=os_, ema=ema)
        return st, loss

    eval_fn = jax.jit(lambda p, x, m: model.apply({"params": p}, x, m))

    def end_of_epoch(st, epoch):
        if cfg.data.train_on_pool:  # no held-out data: keep the weights the recipe fixed in advance
            pick_epoch, pick = cfg.run.pool_pick
            if epoch == pick_epoch:
                st["best"] = {"score": None, "which": pick, "step": st["step"], "chosen": "fixed in advance (run.pool_pick), valid is trained on"}
                atomic_write(run_dir / "best.msgpack", flax.serialization.to_bytes(st["ema"] if pick == "ema" and o.ema_decay else st["params"]))
                save_json(run_dir / "best.json", st["best"])
            return st
        cands = {"raw": st["params"]}
        if o.ema_decay:
            cands["ema"] = st["ema"]
        for which, p in cands.items():
            logits = predict_logits(model, p, prep.ids["valid"], cfg.run.eval_batch_size, apply_fn=lambda pp, x, m, _: eval_fn(pp, x, m))
            m = classification_metrics(prep.labels["valid"], logits.argmax(-1))
            log.info("epoch %d step %d valid[%s] macro_recall=%.4f acc=%.4f", epoch, st["step"], which, m["macro_recall"], m["accuracy"])
            if m["macro_recall"] > st["best"]["score"]:
                st["best"] = {"score": m["macro_recall"], "which": which, "step": st["step"]}
                atomic_write(run_dir / "best.msgpack", flax.serialization.to_bytes(p))
        save_json(run_dir / "best.json", st["best"])
        return st

    batch_fn = lambda b: {"input_ids": b.input_ids, "attention_mask": b.attention_mask, "labels": b.labels, "weights": b.weights}  # noqa: E731
    spec = LoopSpec.from_config(cfg, run_dir, prep, state, total_steps, step_fn, batch_fn, end_of_epoch)
    state = run_loop(spec, resume=resume, max_steps=max_steps, progress=progress)
    state["total_steps"] = total_steps
    return state
