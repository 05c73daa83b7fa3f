"""Builders for the student recipes; each ``compression/configs/<recipe>.py`` calls one.

Defaults for this 2-core machine (oBERT's values in brackets):
- num_grads m = 512 [1024]: B = 32 needs m ≫ 32 for a Fisher block of full rank; gradients are of
  mini-batches of grad_batch = 4 tweets. Measured here for the 6-layer model with m = 1024 (machine
  shared with other work): 377 s of gradients + 428 s of Woodbury/saliency/update per pruning step;
  m = 512 halves both, which keeps a whole student run inside one working session.
- damp λ = 1e-7 [1e-7]: with float64 arithmetic the paper's value is usable as is.
- block_size B = 32 [50 unstructured, 32 for 4-block]: 32 divides the 384 / 1536 row lengths, so
  Fisher blocks never straddle rows and 4-blocks never straddle Fisher blocks; F⁻¹ for the 6-layer
  model is 10.6M × 32 float64 = 2.7 GB, which fits in 24 GB.
- schedule: 30% at the first pruning step, cubic to the final sparsity with one pruning step every
  half epoch (epochs 0, 0.5, 1, 1.5) and learning-rate rewinds, then 1.5 recovery epochs (3 epochs
  in all). Distillation runs at ~45 tweets/s for 6 layers and ~90 for 3 here, so an epoch of the
  44,613 training tweets costs ~16.5 / ~8 min, plus ~7 / ~3.5 min per pruning step: ~1 h 20 min
  for a 6-layer student. The 3-layer students start from a distilled dense 3-layer model (one
  epoch) and take 2 epochs, pruning steps at epochs 0, 1/3, 2/3, 1: ~35 min. oBERT used 30 epochs for BERT-base (~9 h per
  student here). The budget that binds is one 3-hour working session, which has to hold the
  6-layer and 3-layer students and their QAT; longer schedules are the first thing to try where a
  target is missed.
- KD: temperature 2, hardness 1.0 (pure distillation, as in oBERT; the teacher was trained with
  class weights, so its soft targets already carry the macro-recall balance).
"""
from __future__ import annotations

import dataclasses

from .common import DataConfig, KDConfig, ModelConfig, PruneConfig, RunConfig, StudentConfig, StudentOptim

TEACHER_DIR = "models/teacher"
#: the 3-layer dense student the 3-layer pruning runs start from: the winner of the layer-dropping
#: comparison (`python -m compression layerdrop --config student3_dense --run-dir runs/layerdrop`),
#: layers 0, 2, 4 of the teacher distilled dense for one epoch
DENSE3_RUN = "runs/layerdrop/keep_0_2_4"


def dense3(keep: tuple = (0, 2, 4)) -> StudentConfig:
    """3-layer student from the 6-layer teacher, distilled dense (before it is pruned)."""
    return StudentConfig(
        name="student3-dense",
        init="teacher",
        keep_layers=keep,
        layer_candidates=((0, 2, 4), (1, 3, 5), (0, 1, 5)),
        data=DataConfig(max_len=128, demojize=True),
        kd=KDConfig(teacher_dir=TEACHER_DIR, temperature=2.0, hardness=1.0),
        prune=PruneConfig(method="none"),
        optim=StudentOptim(learning_rate=1e-4, epochs=2.0, warmup_fraction=0.06),
        run=RunConfig(seed=0, checkpoint_every=200, log_every=20),
    )


def obert(depth: int, sparsity: float, group_shape: tuple, method: str = "obs", epochs: float = 3.0, prune_end: float = 1.5) -> StudentConfig:
    """Four pruning steps evenly spaced over epochs 0 .. prune_end, recovery until ``epochs``."""
    pattern = "4b" if tuple(group_shape) == (1, 4) else ("unstr" if tuple(group_shape) == (1, 1) else "x".join(map(str, group_shape)))
    name = f"{method}-{depth}l-{int(round(sparsity * 100))}-{pattern}"
    return StudentConfig(
        name=name,
        init="teacher" if depth == 6 else DENSE3_RUN,
        keep_layers=None,
        data=DataConfig(max_len=128, demojize=True),
        kd=KDConfig(teacher_dir=TEACHER_DIR, temperature=2.0, hardness=1.0),
        prune=PruneConfig(
            method=method,
            group_shape=tuple(group_shape),
            initial_sparsity=0.3,
            final_sparsity=sparsity,
            start_epoch=0.0,
            end_epoch=prune_end,
            frequency_epochs=prune_end / 3,
            num_grads=512,
            damp=1e-7,
            block_size=32,
            grad_batch=4,
            woodbury_chunk=16,
        ),
        optim=StudentOptim(learning_rate=8e-5, min_lr=1e-6, epochs=epochs),
        run=RunConfig(seed=0, checkpoint_every=200, log_every=20),
    )


def _continue(student: str, name: str, optim: StudentOptim, quantize: bool = False) -> StudentConfig:
    """Further distillation of a finished pruned student at constant sparsity (its masks kept, no
    pruning of its own): the shared part of ``recover`` and ``qat``."""
    return StudentConfig(
        name=name,
        init=student,
        quantize=quantize,
        data=DataConfig(max_len=128, demojize=True),
        kd=KDConfig(teacher_dir=TEACHER_DIR, temperature=2.0, hardness=1.0),
        prune=PruneConfig(method="none"),
        optim=optim,
        run=RunConfig(seed=0, checkpoint_every=200, log_every=20),
    )


def recover(student_dir: str, name: str, epochs: float = 2.0, learning_rate: float = 5e-5) -> StudentConfig:
    """Longer recovery of a finished pruned student: distillation at constant sparsity (its masks
    kept, no further pruning), a short warm-up to ``learning_rate`` then linear decay to 0. Used
    where a student's validation recall was still rising at the end of its schedule (the 6-layer
    80% one: 71.21 -> 72.11 -> 72.61 over its three epochs): together with the original run this
    is the longer schedule the module docstring names as the first thing to try, without
    repeating the pruning steps."""
    return _continue(student_dir, name, StudentOptim(learning_rate=learning_rate, epochs=epochs, warmup_fraction=0.03))


def qat(student_run: str, name: str) -> StudentConfig:
    """Quantisation-aware training of a pruned student: INT8 simulation exactly as the C runtime
    computes (weights per output channel, activations per token, dynamic, so no observers or
    calibration phase are needed), masks kept, distillation from the teacher, half an epoch at a
    small learning rate decaying to 0 (the INT8 gap after post-training quantisation is already
    small: -0.3 validation points for the teacher, so a short phase suffices)."""
    return _continue(student_run, name, StudentOptim(learning_rate=1e-5, epochs=0.5, warmup_fraction=0.0), quantize=True)


def tiny(cfg: StudentConfig, teacher_dir: str = TEACHER_DIR) -> StudentConfig:
    """Seconds-long variant for tests: 64 tweets, tiny Fisher, 2 pruning events."""
    return dataclasses.replace(
        cfg,
        name=cfg.name + "-tiny",
        data=dataclasses.replace(cfg.data, max_len=32, limit_train=64, limit_eval=32),
        kd=dataclasses.replace(cfg.kd, teacher_dir=teacher_dir),
        prune=dataclasses.replace(cfg.prune, start_epoch=0.0, end_epoch=1.0, frequency_epochs=1.0, num_grads=4, grad_batch=2, block_size=8, woodbury_chunk=2),
        optim=dataclasses.replace(cfg.optim, batch_size=16, epochs=2.0),
        run=dataclasses.replace(cfg.run, checkpoint_every=2, log_every=1, eval_batch_size=16),
    )
