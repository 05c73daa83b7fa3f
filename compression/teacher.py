"""Teacher artefacts: evaluation, pool logits for distillation, and the fp16 ``models/teacher`` export."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import flax.serialization
import flax.traverse_util
import jax
import numpy as np
from safetensors.numpy import load_file, save_file

from runtime.format import TOKENIZER_FILES
from runtime.text import NORMALIZATION_VERSION
from .configs.common import TeacherConfig

from .evaluate import classification_metrics, predict_logits
from .model import LABELS, BertClassifier, BertConfig
from .loop import save_json, wall_time_s
from .train import build_model, prepare
from .weights import base_model_dir

__all__ = ["TEACHER_FORMAT", "load_run_params", "evaluate_run", "pool_logits", "export_teacher", "load_teacher"]

TEACHER_FORMAT = "sparsepulse-dense-fp16"
TEACHER_FORMAT_VERSION = 1


def load_run_params(cfg: TeacherConfig, run_dir: str | Path) -> tuple[BertClassifier, dict]:
    """The best (validation-selected) parameters of a training run."""
    model, template = build_model(cfg)
    path = Path(run_dir) / "best.msgpack"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: train first (python -m compression teacher --run-dir {run_dir})")
    return model, flax.serialization.from_bytes(template, path.read_bytes())


def _print_table(metrics: dict) -> None:
    print(f"{'split':<7} {'n':>6} {'macro_R':>8} {'acc':>7} " + " ".join(f"{'R_' + l[:3]:>7}" for l in LABELS))
    for split, m in metrics.items():
        print(
            f"{split:<7} {m['n']:>6} {100 * m['macro_recall']:8.2f} {100 * m['accuracy']:7.2f} "
            + " ".join(f"{100 * m['recall'][l]:7.2f}" for l in LABELS)
        )


def evaluate_run(cfg: TeacherConfig, run_dir: str | Path | None, model_dir: str | Path | None = None, write: bool = True) -> dict:
    """Macro recall, per-class recall, accuracy and confusion on validation and test.

    Evaluates ``run_dir/best.msgpack`` (and writes ``run_dir/metrics.json``) or, with ``model_dir``,
    an exported teacher (printed only; its committed metrics.json is not touched).
    """
    prep = prepare(cfg)
    if model_dir is not None:
        model, params, _ = load_teacher(model_dir)
    else:
        model, params = load_run_params(cfg, run_dir)
    out = {}
    for split in ("valid", "test"):
        logits = predict_logits(model, params, prep.ids[split], cfg.run.eval_batch_size)
        out[split] = classification_metrics(prep.labels[split], logits.argmax(-1))
        out[split]["truncated"] = prep.truncated[split]
    if model_dir is None and write:
        save_json(Path(run_dir) / "metrics.json", out)
    _print_table(out)
    return out


def pool_logits(cfg: TeacherConfig, run_dir: str | Path, model_dir: str | Path | None = None, out_dir: str | Path | None = None) -> Path:
    """Teacher logits for every tweet of the training pool (train + valid) and of the 2017 test set, keyed by tweet id.

    ``pool_logits.npz`` is the distillation target; ``test_logits.npz`` lets ensembles be scored on the
    test set without the weights (only the logits of each seed are committed).
    """
    prep = prepare(cfg)
    if model_dir is not None:  # an exported teacher (models/teacher)
        model, params, _ = load_teacher(model_dir)
    else:
        model, params = load_run_params(cfg, run_dir)
    out = Path(out_dir or run_dir)
    out.mkdir(parents=True, exist_ok=True)
    # a whole-pool fit's train split already holds valid (compression/configs/teacher_pool.py)
    splits = {"pool_logits.npz": ("train",) if cfg.data.train_on_pool else ("train", "valid"), "test_logits.npz": ("test",)}
    for name, parts in splits.items():
        ids = [x for s in parts for x in prep.ids[s]]
        exs = [e for s in parts for e in prep.data.split(s)]
        logits = predict_logits(model, params, ids, cfg.run.eval_batch_size)
        path = out / name
        np.savez_compressed(
            path,
            tweet_id=np.asarray([e.id for e in exs], np.int64),
            label=np.asarray([e.label for e in exs], np.int8),
            logits=logits.astype(np.float32),
        )
        print(f"wrote {path}: {logits.shape}")
    return out / "pool_logits.npz"


def export_teacher(cfg: TeacherConfig, run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write ``out_dir``: model.safetensors (fp16), tokenizer files, metrics.json, pool_logits.npz, README.md."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, params = load_run_params(cfg, run_dir)
    flat = flax.traverse_util.flatten_dict(params, sep=".")
    tensors = {k: np.asarray(v, np.float16) for k, v in flat.items()}
    meta = {
        "format": TEACHER_FORMAT,
        "format_version": str(TEACHER_FORMAT_VERSION),
        "config": json.dumps(model.cfg.to_dict()),
        "labels": json.dumps(list(LABELS)),
        "normalization": NORMALIZATION_VERSION,
        "demojize": json.dumps(cfg.data.demojize),
        "max_len": str(cfg.data.max_len),
    }
    save_file(tensors, str(out_dir / "model.safetensors"), metadata=meta)
    for f in TOKENIZER_FILES:
        shutil.copy2(base_model_dir() / f, out_dir / f)
    for f in ("metrics.json", "pool_logits.npz", "best.json"):
        if not (run_dir / f).is_file():
            raise FileNotFoundError(f"{run_dir / f} missing: run `evaluate` and `logits` first")
    shutil.copy2(run_dir / "metrics.json", out_dir / "metrics.json")
    shutil.copy2(run_dir / "pool_logits.npz", out_dir / "pool_logits.npz")
    train_cfg = json.loads((run_dir / "config.json").read_text())
    training = {**train_cfg, "best": json.loads((run_dir / "best.json").read_text()), "wall_time_s": wall_time_s(run_dir)}
    save_json(out_dir / "training.json", training)
    extra = run_dir / "card_notes.md"  # hand-written measurements (ablations) appended to the card
    (out_dir / "README.md").write_text(_model_card(training, json.loads((run_dir / "metrics.json").read_text()), (out_dir / "model.safetensors").stat().st_size, extra.read_text() if extra.is_file() else ""))
    print(f"wrote {out_dir}")
    return out_dir


def _model_card(training: dict, metrics: dict, size: int, notes: str) -> str:
    c, o = training["config"], training["config"]["optim"]
    rows = "\n".join(
        f"| {split} | {m['n']} | {100 * m['macro_recall']:.2f} | {100 * m['accuracy']:.2f} | "
        + " | ".join(f"{100 * m['recall'][l]:.2f}" for l in LABELS)
        + " |"
        for split, m in metrics.items()
    )
    wall = training.get("wall_time_s")
    return f"""# SparsePulse teacher: all-MiniLM-L6-v2 fine-tuned on SemEval-2017 4A

Dense 6-layer BERT (hidden 384, 12 heads, 22.7M parameters), stored in fp16 (`model.safetensors`, {size / 1e6:.1f} MB;
format `{TEACHER_FORMAT}` v{TEACHER_FORMAT_VERSION}, loaded by `compression.teacher.load_teacher`). It is the teacher
of every compressed student and the accuracy ceiling of what SparsePulse ships. `pool_logits.npz` holds its logits
for every tweet of the training pool (distillation targets, keyed by tweet id).

## Results (macro-averaged recall is the official SemEval-2017 4A metric)

| split | n | macro recall | accuracy | recall neg | recall neu | recall pos |
| --- | --- | --- | --- | --- | --- | --- |
{rows}

`valid` is the stratified 10% split of the training pool (seed {c['data']['split_seed']}) used for every choice; `test` is the
official 2017 test set, used only for this report. Machine-readable: `metrics.json` (`test.macro_recall`, ...).
Reference points on the same test set: RoBERTa-base 71.3, RoBERTa re-trained on tweets 72.8, a plain two-epoch
fine-tune of this base model 70.4.

## Training

- Data: training pool = all earlier SemEval years, de-duplicated by tweet id ({c['data']['valid_fraction']:.0%} held out for validation).
- Normalisation: `runtime.text.normalize` ({NORMALIZATION_VERSION}): HTML entities, URLs → `http`, mentions → `@user`,
  emoji → names (demojize={c['data']['demojize']}), long character repeats cut; max length {c['data']['max_len']} tokens (nothing in the
  pool is longer than 70), length-bucketed batches of {o['batch_size']}.
- Optimiser: AdamW, lr {o['learning_rate']}, {o['epochs']} epochs, warm-up {o['warmup_fraction']:.0%} then linear decay, weight decay {o['weight_decay']},
  layer-wise lr decay {o['layer_decay']}, gradient clip {o['grad_clip']}.
- Loss: class-weighted cross-entropy (weights (n / (K n_c))^{o['class_weight_power']}), label smoothing {o['label_smoothing']}.
- Weight average (EMA {o['ema_decay']}) and raw weights evaluated on validation after every epoch; kept: **{training['best']['which']}** at
  step {training['best']['step']} (validation macro recall {100 * training['best']['score']:.2f}).
- Wall time: {f"{wall / 60:.0f} min" if wall else "n/a"} on 2 AMD Zen 3 cores (no GPU), seed {c['run']['seed']}.

## Commands

```sh
.venv/bin/python -m compression teacher --run-dir runs/teacher --resume
.venv/bin/python -m compression evaluate --run-dir runs/teacher
.venv/bin/python -m compression logits --run-dir runs/teacher
.venv/bin/python -m compression export-teacher --run-dir runs/teacher --out models/teacher
```
{notes}"""


def load_teacher(model_dir: str | Path = "models/teacher") -> tuple[BertClassifier, dict, dict]:
    """Load an exported teacher: (model, float32 params, metadata)."""
    path = Path(model_dir) / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        meta = f.metadata() or {}
    if meta.get("format") != TEACHER_FORMAT or meta.get("format_version") != str(TEACHER_FORMAT_VERSION):
        raise ValueError(f"{path}: not a {TEACHER_FORMAT} v{TEACHER_FORMAT_VERSION} file (got {meta.get('format')!r} v{meta.get('format_version')!r})")
    cfg = BertConfig(**json.loads(meta["config"]))
    flat = {k: v.astype(np.float32) for k, v in load_file(str(path)).items()}
    params = flax.traverse_util.unflatten_dict(flat, sep=".")
    model = BertClassifier(cfg)
    ref = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, 8), np.int32), np.ones((1, 8), np.int32)))["params"]
    if jax.tree_util.tree_map(lambda a: a.shape, dict(ref)) != jax.tree_util.tree_map(np.shape, params):
        raise ValueError(f"{path}: tensor names or shapes do not match its config")
    return model, params, meta
