"""Students: distillation from cached teacher logits, layer dropping, gradual OBS / magnitude pruning.

Recipe (oBERT, Kurtic et al. 2022, section 4): start from the fine-tuned teacher (or a
layer-dropped copy of it, first distilled dense), prune gradually with the cubic schedule,
rewind the learning rate after every pruning step, then recover at constant sparsity; the loss is
distillation from the teacher throughout.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .configs.common import StudentConfig
from .data import iter_batches
from .evaluate import classification_metrics, predict_logits
from .loop import wall_time_s, LoopSpec, atomic_write, log, record_config, run_loop, save_json, setup_logging
from .model import BertClassifier
from .student_file import load_packaged_student
from .prune import apply_masks, cubic_sparsity, mask_sparsity, ones_masks, prune_step, pruning_steps
from .teacher import load_teacher
from .train import Prepared, class_weights, prepare

__all__ = ["drop_layers", "kd_loss", "student_lr_schedule", "train_student", "load_student", "compare_layer_drops"]


def drop_layers(params: dict, keep: tuple[int, ...]) -> dict:
    """A shallower copy: teacher layer ``keep[i]`` becomes student layer ``i``."""
    out = {k: v for k, v in params.items() if not k.startswith("layer_")}
    for i, src in enumerate(keep):
        if f"layer_{src}" not in params:
            raise ValueError(f"cannot keep layer {src}: the model has no layer_{src}")
        out[f"layer_{i}"] = params[f"layer_{src}"]
    return out


def kd_loss(s_logits_bk, t_logits_bk, labels_b, row_w_b, class_w_k, temperature: float, hardness: float):
    """hardness · T² · KL(p_t^T ‖ p_s^T) + (1 − hardness) · class-weighted CE, mean over real rows."""
    T = temperature
    log_ps = jax.nn.log_softmax(s_logits_bk / T)
    pt = jax.nn.softmax(t_logits_bk / T)
    kl_b = jnp.sum(pt * (jnp.log(jnp.clip(pt, 1e-12)) - log_ps), axis=-1) * T * T
    ce_b = optax.softmax_cross_entropy_with_integer_labels(s_logits_bk, labels_b) * class_w_k[labels_b]
    per_b = hardness * kl_b + (1.0 - hardness) * ce_b
    return jnp.sum(row_w_b * per_b) / jnp.maximum(jnp.sum(row_w_b), 1.0)


def student_lr_schedule(cfg: StudentConfig, total_steps: int, prune_at: list[int]):
    """Learning rate per step.

    Dense (no pruning): linear warm-up then linear decay to 0.
    Pruning: after each pruning step the rate is rewound to ``learning_rate`` and decays linearly
    to ``min_lr`` at the next pruning step; after the last one it decays to 0 at the end
    (recovery phase).
    """
    o = cfg.optim
    if not prune_at:
        warm = max(1, int(o.warmup_fraction * total_steps))
        return optax.join_schedules(
            [optax.linear_schedule(0.0, o.learning_rate, warm), optax.linear_schedule(o.learning_rate, 0.0, max(1, total_steps - warm))],
            [warm],
        )
    starts = jnp.asarray(prune_at, jnp.float32)
    ends = jnp.asarray(prune_at[1:] + [total_steps], jnp.float32)
    floors = jnp.asarray([o.min_lr] * (len(prune_at) - 1) + [0.0], jnp.float32)

    def sched(count):
        c = jnp.asarray(count, jnp.float32)
        i = jnp.clip(jnp.searchsorted(starts, c, side="right") - 1, 0, len(prune_at) - 1)
        frac = jnp.clip((c - starts[i]) / jnp.maximum(ends[i] - starts[i], 1.0), 0.0, 1.0)
        return floors[i] + (o.learning_rate - floors[i]) * (1.0 - frac)

    return sched


def _teacher_logits_for(prep: Prepared, teacher_dir: Path) -> np.ndarray:
    path = teacher_dir / "pool_logits.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: export the teacher first (make teacher)")
    z = np.load(path)
    by_id = dict(zip(z["tweet_id"].tolist(), range(len(z["tweet_id"]))))
    try:
        rows = [by_id[e.id] for e in prep.data.train]
    except KeyError as e:
        raise ValueError(f"teacher logits have no entry for training tweet {e}: were they made on another split?") from None
    return z["logits"][rows].astype(np.float32)


def _init_params(cfg: StudentConfig) -> tuple[BertClassifier, dict, dict | None]:
    if cfg.init == "teacher":
        model, params, _ = load_teacher(cfg.kd.teacher_dir)
        masks = None
    else:
        model, params, masks = load_student(cfg.init)
    if cfg.keep_layers is not None:
        params = drop_layers(params, tuple(cfg.keep_layers))
        if masks is not None:
            raise ValueError("layer dropping applies to dense models only")
        model = BertClassifier(dataclasses.replace(model.cfg, num_layers=len(cfg.keep_layers)))
    if cfg.quantize:
        model = BertClassifier(model.cfg, quantize=True)
    return model, params, masks


def load_student(run_dir: str | Path) -> tuple[BertClassifier, dict, dict]:
    """(model, params, masks) from a student run's ``final.msgpack``, or from a packaged student
    (``models/students/<run>/model.safetensors``, written by ``compression.package``)."""
    run_dir = Path(run_dir)
    if (run_dir / "model.safetensors").is_file() and not (run_dir / "final.msgpack").is_file():
        return load_packaged_student(run_dir)
    path = run_dir / "final.msgpack"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: train that student first")
    raw = flax.serialization.msgpack_restore(path.read_bytes())
    from .model import BertConfig

    cfg = BertConfig(**json.loads((run_dir / "model.json").read_text()))
    params = jax.tree_util.tree_map(np.asarray, raw["params"])
    masks = jax.tree_util.tree_map(np.asarray, raw["masks"])
    return BertClassifier(cfg), params, masks


def train_student(cfg: StudentConfig, run_dir: str | Path, *, resume: bool = False, max_steps: int | None = None, prepared: Prepared | None = None, progress: bool = True) -> dict:
    run_dir = Path(run_dir)
    setup_logging(run_dir)
    prep = prepared or prepare(cfg)
    t_logits = _teacher_logits_for(prep, Path(cfg.kd.teacher_dir))
    model, params, masks = _init_params(cfg)
    masks = masks if masks is not None else ones_masks(params)
    params = apply_masks(params, masks)
    o, pc = cfg.optim, cfg.prune
    spe = math.ceil(len(prep.ids["train"]) / o.batch_size)
    total = int(round(o.epochs * spe))
    prune_at = [] if pc.method == "none" else pruning_steps(int(pc.start_epoch * spe), int(pc.end_epoch * spe), max(1, int(pc.frequency_epochs * spe)))
    targets = [cubic_sparsity(s, pc.initial_sparsity, pc.final_sparsity, prune_at[0], prune_at[-1]) for s in prune_at] if prune_at else []
    if prune_at and prune_at[-1] >= total:
        raise ValueError(f"pruning ends at step {prune_at[-1]} but training has only {total} steps: no recovery phase")
    tx = optax.chain(optax.clip_by_global_norm(o.grad_clip), optax.adamw(student_lr_schedule(cfg, total, prune_at), weight_decay=o.weight_decay))
    cw = jnp.asarray(class_weights(prep.labels["train"], model.cfg.num_labels, o.class_weight_power))
    record_config(run_dir, {"config": dataclasses.asdict(cfg), "prune_at": prune_at, "targets": targets, "total_steps": total}, resume)
    (run_dir / "model.json").write_text(json.dumps(model.cfg.to_dict()))
    base_key = jax.random.PRNGKey(cfg.run.seed)
    T, hard = cfg.kd.temperature, cfg.kd.hardness

    def loss_fn(p, mk, b, key, deterministic):
        kw = {} if deterministic else {"rngs": {"dropout": key}}
        logits = model.apply({"params": p}, b["input_ids"], b["attention_mask"], masks=mk, deterministic=deterministic, **kw)
        return kd_loss(logits, b["teacher_logits"], b["labels"], b["weights"], cw, T, hard)

    @jax.jit
    def _step(p, opt_state, mk, b, step):
        loss, grads = jax.value_and_grad(loss_fn)(p, mk, b, jax.random.fold_in(base_key, step), False)
        updates, opt_state = tx.update(grads, opt_state, p)
        p = apply_masks(optax.apply_updates(p, updates), mk)  # masks survive every step
        return p, opt_state, loss

    _grad = jax.jit(jax.grad(lambda p, mk, b: loss_fn(p, mk, b, None, True)))

    def grad_fn(p, mk, b):
        return _grad(p, mk, b)

    def batch_dict(b) -> dict:
        tl = np.zeros((len(b.index), t_logits.shape[1]), np.float32)
        real = b.index >= 0
        tl[real] = t_logits[b.index[real]]
        return {"input_ids": b.input_ids, "attention_mask": b.attention_mask, "labels": b.labels, "weights": b.weights, "teacher_logits": tl}

    state = {
        "step": 0,
        "params": params,
        "opt_state": tx.init(params),
        "masks": masks,
        "prune_events": 0,
        "best": {"score": -1.0, "step": 0, "sparsity": 0.0},
        "epochs_evaluated": 0,
        "history": {},
    }

    def before_step(st, step):
        i = st["prune_events"]
        if i < len(prune_at) and step >= prune_at[i]:
            grad_batches = (batch_dict(b) for b in iter_batches(prep.ids["train"], prep.labels["train"], pc.grad_batch, shuffle_seed=cfg.run.seed * 7919 + i))
            p, mk, rep = prune_step(
                jax.tree_util.tree_map(np.asarray, st["params"]),
                jax.tree_util.tree_map(np.asarray, st["masks"]),
                targets[i],
                method=pc.method,
                group_shape=tuple(pc.group_shape),
                grad_fn=grad_fn,
                batches=grad_batches,
                num_grads=pc.num_grads,
                damp=pc.damp,
                block_size=pc.block_size,
                chunk=pc.woodbury_chunk,
            )
            log.info("prune event %d at step %d: target %.4f -> sparsity %.4f (+%d groups) in %.1f s (grads %.1f s)", i, step, rep.target, rep.sparsity, rep.newly_pruned_groups, rep.seconds, rep.grads_seconds)
            st.update(params=p, masks=mk, prune_events=i + 1)
        return st

    def step_fn(st, b, step):
        p, os_, loss = _step(st["params"], st["opt_state"], st["masks"], b, step)
        st.update(params=p, opt_state=os_)
        return st, loss

    eval_fn = jax.jit(lambda p, x, m: model.apply({"params": p}, x, m))

    def end_of_epoch(st, epoch):
        logits = predict_logits(model, st["params"], prep.ids["valid"], cfg.run.eval_batch_size, apply_fn=lambda pp, x, m, _: eval_fn(pp, x, m))
        m = classification_metrics(prep.labels["valid"], logits.argmax(-1))
        sp = mask_sparsity(st["masks"])
        log.info("epoch %d step %d sparsity %.4f valid macro_recall=%.4f acc=%.4f", epoch, st["step"], sp, m["macro_recall"], m["accuracy"])
        st["history"] = {**st["history"], str(epoch): {"step": st["step"], "sparsity": sp, "valid_macro_recall": m["macro_recall"]}}
        at_final = st["prune_events"] == len(prune_at)
        if at_final and m["macro_recall"] > st["best"]["score"]:
            st["best"] = {"score": m["macro_recall"], "step": st["step"], "sparsity": sp}
            atomic_write(run_dir / "best.msgpack", flax.serialization.to_bytes({"params": st["params"], "masks": st["masks"]}))
        save_json(run_dir / "history.json", {"history": st["history"], "best": st["best"]})
        return st

    spec = LoopSpec.from_config(cfg, run_dir, prep, state, total, step_fn, batch_dict, end_of_epoch, before_step)
    t0 = time.perf_counter()
    state = run_loop(spec, resume=resume, max_steps=max_steps, progress=progress)
    if state["step"] >= total:
        best = run_dir / "best.msgpack"
        src = best.read_bytes() if best.is_file() else flax.serialization.to_bytes({"params": state["params"], "masks": state["masks"]})
        atomic_write(run_dir / "final.msgpack", src)
        log.info("finished: final.msgpack written (best at step %s)", state["best"]["step"])
    state["total_steps"] = total
    state["seconds"] = time.perf_counter() - t0
    return state


def evaluate_student(cfg: StudentConfig, run_dir: str | Path, prepared: Prepared | None = None) -> dict:
    """Validation and test metrics of a finished student, recovery vs the teacher -> run_dir/metrics.json."""
    run_dir = Path(run_dir)
    prep = prepared or prepare(cfg)
    model, params, masks = load_student(run_dir)
    if cfg.quantize:  # a QAT student is measured as it will run: INT8 simulation of the C kernels
        model = BertClassifier(model.cfg, quantize=True)
    out: dict = {"quantized": bool(cfg.quantize), "sparsity": mask_sparsity(masks), "num_layers": model.cfg.num_layers, "group_shape": list(cfg.prune.group_shape), "method": cfg.prune.method}
    teacher_metrics = json.loads((Path(cfg.kd.teacher_dir) / "metrics.json").read_text())
    for split in ("valid", "test"):
        logits = predict_logits(model, params, prep.ids[split], cfg.run.eval_batch_size)
        out[split] = classification_metrics(prep.labels[split], logits.argmax(-1))
    out["recovery"] = {s: out[s]["macro_recall"] / teacher_metrics[s]["macro_recall"] for s in ("valid", "test")}
    out["wall_time_s"] = wall_time_s(run_dir)
    save_json(run_dir / "metrics.json", out)
    return out


def compare_layer_drops(cfg: StudentConfig, run_dir: str | Path, *, only: tuple | None = None, progress: bool = True) -> dict:
    """Distil one short dense run per candidate keep-set; validation macro recall of each -> layerdrop.json.

    ``only`` (one keep-set) rebuilds that candidate alone — e.g. the recorded winner, which the 3-layer
    pruning recipes start from, on a checkout without ``runs/`` — and leaves layerdrop.json as it is."""
    run_dir = Path(run_dir)
    if only is not None and tuple(only) not in {tuple(k) for k in cfg.layer_candidates}:
        raise ValueError(f"--only {only}: not one of the candidates {cfg.layer_candidates}")
    prep = prepare(cfg)
    results = {}
    for keep in ([tuple(only)] if only is not None else cfg.layer_candidates):
        sub = run_dir / ("keep_" + "_".join(map(str, keep)))
        c = dataclasses.replace(
            cfg,
            keep_layers=tuple(keep),
            name=f"{cfg.name}-keep{''.join(map(str, keep))}",
            optim=dataclasses.replace(cfg.optim, epochs=cfg.layerdrop_epochs),
        )
        st = train_student(c, sub, resume=True, prepared=prep, progress=progress)
        if st["step"] < st["total_steps"]:
            raise RuntimeError("interrupted")
        results["_".join(map(str, keep))] = evaluate_student(c, sub, prepared=prep)["valid"]["macro_recall"]
    if only is not None:
        return {"valid_macro_recall": results}
    best = max(results, key=results.get)
    out = {"valid_macro_recall": results, "best": best}
    save_json(run_dir / "layerdrop.json", out)
    return out
