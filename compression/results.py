"""The students' results table (compression/RESULTS.md), built from each run's metrics.json."""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_results"]

_OUT = Path(__file__).resolve().parent / "RESULTS.md"


def write_results(students: str | Path = "models/students", out: Path = _OUT) -> Path:
    """One row per packaged student (``compression.package`` copies each finished run's metrics.json
    and config.json to ``models/students/<run>/``, which is committed; ``runs/`` is not)."""
    rows = []
    for m in sorted(Path(students).glob("*/metrics.json")):
        d = json.loads(m.read_text())
        if "recovery" not in d:
            continue  # the teacher's run has no recovery figure
        pattern = {(1, 4): "4-block", (1, 1): "unstructured"}.get(tuple(d["group_shape"]), "x".join(map(str, d["group_shape"])))
        method = "QAT INT8" if d.get("quantized") else d["method"]
        if d["method"] == "none" and not d.get("quantized"):
            pattern = "-"
        rows.append(
            f"| {m.parent.name} | {d['num_layers']} | {100 * d['sparsity']:.1f}% | {pattern} | {method} | "
            f"{100 * d['valid']['macro_recall']:.2f} | {100 * d['test']['macro_recall']:.2f} | {100 * d['recovery']['test']:.2f}% | "
            f"{(d.get('wall_time_s') or 0) / 3600:.2f} h | `python -m compression student --config {m.parent.name} --run-dir runs/{m.parent.name}` |"
        )
    teacher = json.loads((Path("models/teacher/metrics.json")).read_text()) if Path("models/teacher/metrics.json").is_file() else None
    head = [
        "# Compression results",
        "",
        "Macro-averaged recall (%) on the validation split and the SemEval-2017 test set; recovery = student test / teacher test;",
        "sparsity = measured fraction of zero weights in the encoder's linear layers; wall time on the 2-core build machine (runs may have shared it).",
        "`qat_*` rows: quantisation-aware trained students, evaluated as INT8 (the JAX simulation of the C kernels).",
        "Regenerate with `python -m compression results` (reads `models/students/*/metrics.json`, copied there by",
        "`python -m compression package` / `save-student`).",
        "",
    ]
    if teacher:
        head.append(f"Teacher (`models/teacher`): valid {100 * teacher['valid']['macro_recall']:.2f}, test {100 * teacher['test']['macro_recall']:.2f}.")
        head.append("")
    head += ["| run | layers | sparsity | pattern | method | valid | test | recovery | wall time | command |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    body = head + (rows or ["| (no finished student yet) | | | | | | | | | |"])
    ld = Path(students) / "layerdrop.json"
    if ld.is_file():
        d = json.loads(ld.read_text())
        body += [
            "",
            "## Layer dropping (6 -> 3 layers)",
            "",
            "Each candidate keeps three of the teacher's layers and is distilled (dense) for 1 epoch; validation decides.",
            "Command: `python -m compression layerdrop --config student3_dense --run-dir runs/layerdrop`.",
            "",
            "| kept teacher layers | valid macro recall |",
            "| --- | --- |",
        ]
        body += [f"| {k.replace('_', ', ')}{' (kept)' if k == d['best'] else ''} | {100 * v:.2f} |" for k, v in d["valid_macro_recall"].items()]
    out.write_text("\n".join(body) + "\n")
    return out
