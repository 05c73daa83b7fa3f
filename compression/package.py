"""Packaging of finished students into ``models/`` (what is committed; ``runs/`` is not).

``python -m compression package --float-run runs/obert_6l_80_4b --qat-run runs/qat_6l_80_4b
--out models/sparsepulse-6l-80-4b-int8`` writes:

- ``models/students/<float run>/``: the masked float student in fp16 (format
  ``sparsepulse-student-fp16`` v1: flattened Flax parameters, masks as bit-packed uint8 tensors
  ``mask.<path>`` with their shapes in the metadata), its ``metrics.json``, ``config.json`` and
  ``history.json`` (the file format: ``compression.student_file``). ``load_student`` reads it, so QAT, the ONNX export and evaluation can start
  from it without the run directory.
- ``models/students/<qat run>/``: the QAT run's ``metrics.json`` and ``config.json`` (its weights
  are the INT8 model below).
- ``--out``: the runtime model (Contract 1: ``model.safetensors`` in ``sparsepulse-sparse-int8``,
  tokenizer files) from the QAT weights, its C-runtime evaluation (``runtime_eval.json``), a
  ``metrics.json`` with explicit keys and the model card ``README.md``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path


from runtime.format import WEIGHTS_FILE, load_model
from runtime.text import NORMALIZATION_VERSION
from .loop import save_json
from .model import LABELS
from .student import load_student
from .student_file import write_student_file

__all__ = ["save_student", "dense_fp32_encoder_bytes", "package_int8"]

STUDENTS_DIR = Path("models/students")
#: the dense fp32 teacher on disk (all-MiniLM-L6-v2 + classifier), the reference for file sizes
TEACHER_FP32_BYTES = 90_800_000


def save_student(run_dir: str | Path, out_dir: str | Path, *, weights: bool = True) -> Path:
    """fp16 weights + bit-packed masks of a finished student run, with its metrics and config
    (``weights=False``: the metrics, config and history only — for students no later step needs)."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not weights and not (run_dir / "metrics.json").is_file():
        raise FileNotFoundError(f"{run_dir}/metrics.json: the run is not finished and evaluated")
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in ("metrics.json", "config.json", "history.json", "model.json"):
        if (run_dir / f).is_file():
            shutil.copy2(run_dir / f, out_dir / f)
    if not weights:
        return out_dir
    model, params, masks = load_student(run_dir)
    write_student_file(out_dir / "model.safetensors", model, params, masks)
    return out_dir


def dense_fp32_encoder_bytes(config: dict) -> int:
    """Bytes of the same encoder (same depth) stored dense in fp32: linears, biases, LayerNorms."""
    C, I, L = config["hidden_size"], config["intermediate_size"], config["num_layers"]
    per_layer = 4 * (C * C + C) + (C * I + I) + (I * C + C) + 4 * C
    return 4 * L * per_layer


def _encoder_bytes(data) -> int:
    return sum(int(v.nbytes) for k, v in data.tensors.items() if k.startswith("layer_"))


def package_int8(float_run: str | Path, qat_run: str | Path, out_dir: str | Path, data_root: str | None = None, *,
                 students_dir: str | Path = STUDENTS_DIR, teacher_dir: str | Path = "models/teacher", limit: int | None = None) -> dict:
    """Package a finished float + QAT student pair (see the module docstring); returns metrics.json.
    ``limit`` evaluates only the first N tweets of each split (tests)."""
    from .export import export_runtime_model
    from .runtime_eval import evaluate_runtime_model

    float_run, qat_run, out_dir = Path(float_run), Path(qat_run), Path(out_dir)
    for run in (float_run, qat_run):
        if not (run / "metrics.json").is_file():
            raise FileNotFoundError(f"{run}/metrics.json missing: finish (and evaluate) that student first")
    fdir = save_student(float_run, Path(students_dir) / float_run.name)
    qdir = Path(students_dir) / qat_run.name
    qdir.mkdir(parents=True, exist_ok=True)
    for f in ("metrics.json", "config.json", "history.json"):
        if (qat_run / f).is_file():
            shutil.copy2(qat_run / f, qdir / f)
    model, params, masks = load_student(qat_run)
    export_runtime_model(params, model.cfg, out_dir, max_len=128, demojize=True, masks=masks)
    data = load_model(out_dir)
    ev = evaluate_runtime_model(out_dir, data_root, limit=limit)
    save_json(out_dir / "runtime_eval.json", ev)
    fm = json.loads((fdir / "metrics.json").read_text())
    qm = json.loads((qdir / "metrics.json").read_text())
    teacher = json.loads((Path(teacher_dir) / "metrics.json").read_text())
    enc, dense = _encoder_bytes(data), dense_fp32_encoder_bytes(data.config)
    size = (out_dir / WEIGHTS_FILE).stat().st_size
    strip = lambda m: {k: m[k] for k in ("macro_recall", "accuracy", "recall", "n") if k in m}  # noqa: E731
    metrics = {
        "model": out_dir.name,
        "num_layers": data.config["num_layers"],
        "sparsity": data.encoder_sparsity(),
        "pattern": "4-block (1x4)",
        "quantization": "INT8 weights per output channel, INT8 activations per token (dynamic), int32 accumulation",
        "valid": strip(ev["valid"]),
        "test": strip(ev["test"]),
        "float_student": {"run": float_run.name, "valid": strip(fm["valid"]), "test": strip(fm["test"])},
        "qat_jax_int8": {"run": qat_run.name, "valid": strip(qm["valid"]), "test": strip(qm["test"])},
        "int8_delta": {s: ev[s]["macro_recall"] - fm[s]["macro_recall"] for s in ("valid", "test")},
        "recovery": {s: ev[s]["macro_recall"] / teacher[s]["macro_recall"] for s in ("valid", "test")},
        "agreement_with_jax": {s: ev[s]["agreement_with_jax"] for s in ("valid", "test") if "agreement_with_jax" in ev[s]},
        "file_bytes": size,
        "encoder_bytes": enc,
        "dense_fp32_encoder_bytes": dense,
        "encoder_compression": dense / enc,
        "teacher_fp32_bytes": TEACHER_FP32_BYTES,
        "file_compression_vs_teacher_fp32": TEACHER_FP32_BYTES / size,
        "wall_time_s": {"float": fm.get("wall_time_s"), "qat": qm.get("wall_time_s")},
        "normalization": NORMALIZATION_VERSION,
    }
    save_json(out_dir / "metrics.json", metrics)
    (out_dir / "README.md").write_text(_card(metrics, teacher, float_run, qat_run))
    return metrics


def _card(m: dict, teacher: dict, float_run: Path, qat_run: Path) -> str:
    pct = lambda x: f"{100 * x:.2f}"  # noqa: E731
    rows = []
    for name, d in (("teacher (dense fp32, JAX)", teacher), ("float student (masked, JAX)", m["float_student"]), ("QAT student, INT8 simulated in JAX", m["qat_jax_int8"]), ("**this model, C runtime**", m)):
        rows.append(f"| {name} | {pct(d['valid']['macro_recall'])} | {pct(d['test']['macro_recall'])} | " + " | ".join(pct(d["test"]["recall"][l]) for l in LABELS) + " |")
    L = m["num_layers"]
    float_cfg, qat_cfg = float_run.name, qat_run.name
    agree = m["agreement_with_jax"]
    return f"""# {m['model']}

SemEval-2017 4A tweet sentiment (negative / neutral / positive) for the SparsePulse C runtime:
a {L}-layer BERT (hidden 384, 12 heads) distilled from `models/teacher` (all-MiniLM-L6-v2 fine-tuned),
{pct(m['sparsity'])}% of the encoder's linear weights removed in 4-blocks (4 consecutive inputs of one
output row) by gradual second-order (OBS, oBERT) pruning, then quantisation-aware trained to INT8 with
the masks kept. Format `sparsepulse-sparse-int8` (see `runtime/format.py`), read by `runtime.Scorer`.

## Accuracy (macro-averaged recall, %; the official metric)

| model | valid | test | test recall neg | neu | pos |
| --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

- Recovery vs the teacher: {100 * m['recovery']['test']:.1f}% on test, {100 * m['recovery']['valid']:.1f}% on validation.
- Effect of INT8 (this model in C vs the masked float student): {100 * m['int8_delta']['test']:+.2f} points on test, {100 * m['int8_delta']['valid']:+.2f} on validation.
- C runtime vs the JAX INT8 simulation of the same weights: argmax agreement {pct(agree.get('test', float('nan')))}% (test), {pct(agree.get('valid', float('nan')))}% (valid).
- `valid` = the stratified 10% of the training pool used for every choice; `test` = the 2017 test set (12,284 tweets), used only for reporting.

## Size

| | bytes |
| --- | --- |
| `model.safetensors` (whole model, incl. INT8 word embeddings) | {m['file_bytes'] / 1e6:.1f} MB ({m['file_compression_vs_teacher_fp32']:.1f}x smaller than the 90.8 MB dense fp32 teacher) |
| encoder (packed INT8 values, block indices, scales, biases, LayerNorms) | {m['encoder_bytes'] / 1e6:.2f} MB |
| the same {L}-layer encoder dense in fp32 | {m['dense_fp32_encoder_bytes'] / 1e6:.2f} MB (**{m['encoder_compression']:.1f}x** larger) |

## Inputs

Normalisation `{m['normalization']}` (`runtime.text.normalize`: HTML entities, URLs -> `http`, mentions -> `@user`,
emoji -> names, long character repeats cut), uncased WordPiece (the tokenizer files here), at most 128 tokens.

## Commands that produced it

```sh
.venv/bin/python -m compression student --config {float_cfg} --run-dir runs/{float_cfg} --resume
.venv/bin/python -m compression student --config {qat_cfg} --run-dir runs/{qat_cfg} --resume
.venv/bin/python -m compression package --float-run runs/{float_cfg} --qat-run runs/{qat_cfg} --out models/{m['model']}
```

Wall time on the 2-core build machine (no GPU; it may have been shared with another run): float student
{(m['wall_time_s']['float'] or 0) / 60:.0f} min, QAT {(m['wall_time_s']['qat'] or 0) / 60:.0f} min.
Machine-readable figures: `metrics.json` (`test.macro_recall`, `recovery.test`, `sparsity`, `int8_delta.test`, ...);
`runtime_eval.json` (confusion matrices, agreement, max |dp| vs JAX).
"""
