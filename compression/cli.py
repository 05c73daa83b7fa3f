"""Command line of the compression pipeline: ``python -m compression COMMAND ...``.

Commands (one function each below, ``_cmd_<name>``):
    teacher           fine-tune the dense teacher (resumable; ``--seed`` for ensemble members)
    evaluate          macro recall on validation and the 2017 test set of a run or an exported teacher
    logits            teacher logits on the training pool and the 2017 test set (distillation targets)
    save-teacher-logits  copy a finished teacher run's logits and metrics to models/teachers/<run>/
    ensemble          teacher ensemble from committed logits, size and prior correction chosen on validation
    stats             data report and token-length statistics per split
    export-teacher    write models/teacher (fp16 weights, card, metrics, logits)
    student           distil / prune / quantise a student (resumable), then evaluate it
    layerdrop         compare layer-dropping choices on validation
    export-int8       post-training INT8 export to the runtime format
    export-onnx       ONNX export (fp32, dynamic INT8, per-token INT8, QDQ, the SparseML/DeepSparse form)
    check-onnx        run an ONNX file in ONNX Runtime / DeepSparse and compare with JAX
    evaluate-runtime  C runtime accuracy + agreement with the JAX INT8 reference
    package           commit-ready student: fp16 float student + INT8 runtime model + card
    save-student      fp16 copy of a finished student run under models/students/
    results           compression/RESULTS.md from the committed metrics
    resave-model      re-write runtime model files in the current format version
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

import numpy as np

__all__ = ["main"]


def _add_common(p: argparse.ArgumentParser, default_config: str, run_dir_required: bool = True) -> None:
    p.add_argument("--config", default=default_config, help="config module in compression/configs (default: %(default)s)")
    p.add_argument("--tiny", action="store_true", help="use the config's tiny variant")
    p.add_argument("--run-dir", required=run_dir_required, help="folder for checkpoints, logs and outputs")
    p.add_argument("--data", default=None, help="folder containing semeval2017-task4a/ (default ../shared/data)")
    p.add_argument("--seed", type=int, default=None, help="override the config's run seed (initialisation, data order, dropout); the run is named <config>-s<seed>")


def _cfg(args):
    import dataclasses

    from .configs import load_config

    cfg = load_config(args.config, args.tiny)
    if args.data:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=args.data))
    if args.seed is not None:
        cfg = dataclasses.replace(cfg, name=f"{cfg.name}-s{args.seed}", run=dataclasses.replace(cfg.run, seed=args.seed))
    return cfg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m compression", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("teacher", help="fine-tune the dense teacher (resumable)")
    _add_common(t, "teacher")
    t.add_argument("--resume", action="store_true", help="continue from run-dir/checkpoint.msgpack")
    t.add_argument("--max-steps", type=int, default=None, help="stop after this global step (checkpointed)")

    e = sub.add_parser("evaluate", help="metrics on validation and the 2017 test set (of run-dir/best.msgpack or --model)")
    _add_common(e, "teacher", run_dir_required=False)
    e.add_argument("--model", default=None, help="an exported teacher directory (e.g. models/teacher) instead of a run")
    e.add_argument("--no-demojize", action="store_true", help="ablation: keep emoji as they are (they become [UNK]); prints only")

    lg = sub.add_parser("logits", help="teacher logits on the training pool and the 2017 test set -> run-dir/pool_logits.npz, test_logits.npz")
    _add_common(lg, "teacher", run_dir_required=False)
    lg.add_argument("--model", default=None, help="an exported teacher directory (e.g. models/teacher) instead of a run")
    lg.add_argument("--out", default=None, help="write the files here (default: the run dir)")

    stl = sub.add_parser("save-teacher-logits", help="copy a finished teacher run's logits and metrics to models/teachers/<run>/ (no weights)")
    stl.add_argument("run_dir")

    en = sub.add_parser("ensemble", help="ensemble of teachers from committed logits; size and prior correction chosen on validation")
    en.add_argument("members", nargs="*", help="folders with pool_logits.npz and test_logits.npz (default: models/teacher and models/teachers/*)")
    en.add_argument("--data", default=None)
    en.add_argument("--out", default=None, help="also write the JSON here")

    stt = sub.add_parser("stats", help="data report (kept / dropped by reason) and token-length statistics per split")
    _add_common(stt, "teacher", run_dir_required=False)

    x = sub.add_parser("export-teacher", help="write models/teacher (fp16 safetensors, card, metrics, logits)")
    _add_common(x, "teacher")
    x.add_argument("--out", default="models/teacher")

    st = sub.add_parser("student", help="distil / prune a student (resumable); then evaluates it")
    _add_common(st, "obert_6l_80_4b")
    st.add_argument("--resume", action="store_true", help="continue from run-dir/checkpoint.msgpack")
    st.add_argument("--max-steps", type=int, default=None, help="stop after this global step (checkpointed)")

    ld = sub.add_parser("layerdrop", help="compare layer-dropping choices (short dense distillation each) on validation")
    _add_common(ld, "student3_dense")
    ld.add_argument("--only", default=None, help="train and evaluate one candidate only, e.g. 0,2,4 (layerdrop.json untouched)")

    q = sub.add_parser("export-int8", help="post-training INT8 export of a teacher dir or a student run to the runtime format")
    q.add_argument("--teacher", default=None, help="an exported teacher directory (models/teacher)")
    q.add_argument("--student", default=None, help="a student run directory (its final.msgpack)")
    q.add_argument("--out", required=True)
    q.add_argument("--max-len", type=int, default=128)

    ox = sub.add_parser("export-onnx", help="ONNX (fp32, or dynamic INT8 with --int8) of a teacher dir or a student run")
    ox.add_argument("--teacher", default=None)
    ox.add_argument("--student", default=None)
    ox.add_argument("--out", required=True)
    ox.add_argument("--runtime-model", default=None, help="a runtime model directory (its dequantised INT8 weights)")
    ox.add_argument("--int8", action="store_true", help="DynamicQuantizeLinear + MatMulInteger encoder linears")
    ox.add_argument("--per-token-int8", action="store_true", help="our INT8 scheme (per-token activations, int8 x int8 MatMulInteger), as the C runtime computes it")
    ox.add_argument("--qdq", action="store_true", help="static QDQ INT8 (activation scales calibrated on 512 training tweets)")
    ox.add_argument("--sparseml", action="store_true", help="the form SparseML exports for QAT BERTs and DeepSparse's INT8 fast path runs: static uint8 activations, MatMulInteger + int32 bias + Cast + Mul, quantised attention matmuls; our per-channel INT8 weights")
    ox.add_argument("--sparseml-per-tensor", action="store_true", help="as --sparseml with one weight scale per matrix (SparseML's default)")
    ox.add_argument("--calibration", choices=["minmax", "mean"], default="minmax", help="static activation ranges for --sparseml*: extremes, or the mean of per-batch extremes (default %(default)s)")
    ox.add_argument("--calibration-tweets", type=int, default=2048, help="training tweets used to calibrate static activation scales (default %(default)s)")

    oc = sub.add_parser("check-onnx", help="run an ONNX file in ONNX Runtime / DeepSparse (separate venv) and compare with JAX on the 2017 test")
    oc.add_argument("--onnx", required=True)
    oc.add_argument("--engine", choices=["ort", "deepsparse"], default="ort")
    oc.add_argument("--bench-python", required=True, help="python of the venv holding onnxruntime / deepsparse")
    oc.add_argument("--teacher", default=None)
    oc.add_argument("--student", default=None)
    oc.add_argument("--runtime-model", default=None)
    oc.add_argument("--int8", action="store_true", help="compare with the JAX INT8 simulation instead of float")
    oc.add_argument("--out", default=None, help="also write the JSON here")

    ev = sub.add_parser("evaluate-runtime", help="C runtime accuracy + agreement with the JAX INT8 reference -> JSON")
    ev.add_argument("model_dir")
    ev.add_argument("--data", default=None)
    ev.add_argument("--out", default=None, help="write the JSON here (default: MODEL_DIR/runtime_eval.json)")

    pk = sub.add_parser("package", help="commit-ready student: fp16 float student + INT8 runtime model (evaluated in C) + card")
    pk.add_argument("--float-run", required=True, help="the finished pruned float student run (e.g. runs/obert_6l_80_4b)")
    pk.add_argument("--qat-run", required=True, help="its finished QAT run (e.g. runs/qat_6l_80_4b)")
    pk.add_argument("--out", required=True, help="the runtime model directory (e.g. models/sparsepulse-6l-80-4b-int8)")
    pk.add_argument("--data", default=None)

    ps = sub.add_parser("save-student", help="fp16 copy of a finished student run under models/students/ (no INT8 model)")
    ps.add_argument("run_dir")
    ps.add_argument("--metrics-only", action="store_true", help="copy metrics / config / history only (no weights)")

    rs = sub.add_parser("results", help="collect the packaged students' metrics.json into compression/RESULTS.md")
    rs.add_argument("--students", default="models/students", help="folder holding the packaged students (compression.package)")

    rv = sub.add_parser("resave-model", help="re-write runtime model files in the current format version (adds the v2 checksum)")
    rv.add_argument("model_dirs", nargs="+")

    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    from .data import DataNotFound

    if args.cmd in ("export-int8", "export-onnx"):
        sources = [args.teacher, args.student, getattr(args, "runtime_model", None)]
        if sum(bool(x) for x in sources) != 1:
            ap.error("give exactly one of --teacher, --student" + (", --runtime-model" if args.cmd == "export-onnx" else ""))
    if args.cmd == "export-onnx":
        forms = {"dynamic": args.int8, "qdq": args.qdq, "per_token": args.per_token_int8, "sparseml": args.sparseml, "sparseml_per_tensor": args.sparseml_per_tensor}
        if sum(forms.values()) > 1:
            ap.error("--int8, --per-token-int8, --qdq, --sparseml and --sparseml-per-tensor are different INT8 forms: give one")
    if args.cmd in ("evaluate",) and not (args.run_dir or args.model):
        ap.error("evaluate needs --run-dir or --model")
    try:
        return _COMMANDS[args.cmd](args)
    except (DataNotFound, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------ one function per command
def _cmd_teacher(args) -> int:
    from .train import train

    train(_cfg(args), args.run_dir, resume=args.resume, max_steps=args.max_steps)
    return 0


def _cmd_evaluate(args) -> int:
    import dataclasses

    from .teacher import evaluate_run

    cfg = _cfg(args)
    if args.no_demojize:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, demojize=False))
    evaluate_run(cfg, args.run_dir, model_dir=args.model, write=not args.no_demojize)
    return 0


def _cmd_logits(args) -> int:
    from .teacher import pool_logits

    if not (args.run_dir or args.model):
        raise ValueError("logits needs --run-dir or --model")
    pool_logits(_cfg(args), args.run_dir, model_dir=args.model, out_dir=args.out)
    return 0


def _cmd_save_teacher_logits(args) -> int:
    import shutil
    from pathlib import Path

    run = Path(args.run_dir)
    out = Path("models/teachers") / run.name
    out.mkdir(parents=True, exist_ok=True)
    for f in ("pool_logits.npz", "test_logits.npz", "metrics.json", "best.json", "config.json", "wall_time.json"):
        if (run / f).is_file():
            shutil.copy2(run / f, out / f)
        elif f in ("pool_logits.npz", "test_logits.npz", "metrics.json"):
            raise FileNotFoundError(f"{run / f} missing: run evaluate and logits first")
    print(out)
    return 0


def _cmd_ensemble(args) -> int:
    import glob
    from pathlib import Path

    from .ensemble import DEFAULT_MEMBERS, ensemble_report, format_report, trained_on_valid
    from .loop import save_json

    folders = args.members or [p for pat in DEFAULT_MEMBERS for p in sorted(glob.glob(pat)) if Path(p, "pool_logits.npz").is_file()]
    if not args.members:
        for p in [p for p in folders if trained_on_valid(p)]:
            print(f"skipped {p}: trained on the whole pool, validation included (its 2017-test figure is in its metrics.json)")
        folders = [p for p in folders if not trained_on_valid(p)]
    r = ensemble_report(folders, args.data)
    print(format_report(r))
    if args.out:
        save_json(Path(args.out), r)
    return 0


def _cmd_stats(args) -> int:
    from .train import prepare

    cfg = _cfg(args)
    prep = prepare(cfg)
    print(json.dumps({k: v for k, v in prep.data.report.items() if k != "pool_files"}, indent=1))
    print(f"token lengths (normalised, demojize={cfg.data.demojize}, incl. [CLS]/[SEP]); max_len {cfg.data.max_len}")
    for split in ("train", "valid", "test"):
        L = np.array([len(x) for x in prep.ids[split]])
        p = np.percentile(L, [50, 95, 99])
        print(f"  {split:<5} n={L.size:>6} median {p[0]:.0f}  p95 {p[1]:.0f}  p99 {p[2]:.0f}  max {L.max()}  truncated {prep.truncated[split]}")
    return 0


def _cmd_export_teacher(args) -> int:
    from .teacher import export_teacher

    export_teacher(_cfg(args), args.run_dir, args.out)
    return 0


def _cmd_student(args) -> int:
    from .student import evaluate_student, train_student

    cfg = _cfg(args)
    state = train_student(cfg, args.run_dir, resume=args.resume, max_steps=args.max_steps)
    if state["step"] >= state["total_steps"]:
        m = evaluate_student(cfg, args.run_dir)
        print(f"{cfg.name}: sparsity {m['sparsity']:.4f} valid {100 * m['valid']['macro_recall']:.2f} test {100 * m['test']['macro_recall']:.2f} (recovery {100 * m['recovery']['test']:.1f}%)")
    return 0


def _cmd_layerdrop(args) -> int:
    from .student import compare_layer_drops

    only = tuple(int(x) for x in args.only.split(",")) if args.only else None
    print(compare_layer_drops(_cfg(args), args.run_dir, only=only))
    return 0


def _load_source(args):
    """(model, params, masks, demojize) of the one source an export names."""
    if getattr(args, "runtime_model", None):
        from runtime.format import load_model

        from .runtime_eval import params_from_runtime

        model, params, masks = params_from_runtime(load_model(args.runtime_model))
        return model, params, masks, True
    if args.teacher:
        from .teacher import load_teacher

        model, params, meta = load_teacher(args.teacher)
        return model, params, None, json.loads(meta.get("demojize", "true"))
    from .student import load_student

    model, params, masks = load_student(args.student)
    return model, params, masks, True


def _cmd_export_int8(args) -> int:
    from .export import export_runtime_model

    model, params, masks, demojize = _load_source(args)
    print(export_runtime_model(params, model.cfg, args.out, max_len=args.max_len, demojize=demojize, masks=masks))
    return 0


def _cmd_export_onnx(args) -> int:
    from .onnx_export import export_onnx

    model, params, masks, demojize = _load_source(args)
    forms = {"dynamic": args.int8, "qdq": args.qdq, "per_token": args.per_token_int8, "sparseml": args.sparseml, "sparseml_per_tensor": args.sparseml_per_tensor}
    quantize = next((k for k, v in forms.items() if v), None)
    amax = ranges = None
    if quantize in ("qdq", "sparseml", "sparseml_per_tensor"):
        from .configs.common import DataConfig
        from .data import encode, load_semeval
        from .model import BertClassifier
        from .onnx_export import calibrate, calibrate_ranges
        from .weights import load_tokenizer

        dc = DataConfig()
        train = load_semeval(dc.root, dc.valid_fraction, dc.split_seed).split("train")
        n_cal = 512 if quantize == "qdq" else args.calibration_tweets
        pick = np.random.default_rng(0).choice(len(train), size=min(n_cal, len(train)), replace=False)
        ids, _ = encode(load_tokenizer(), [train[i].text for i in pick], dc.max_len, demojize)
        if quantize == "qdq":
            amax = calibrate(BertClassifier(model.cfg), params, ids, masks=masks)
        else:
            ranges = calibrate_ranges(BertClassifier(model.cfg), params, ids, masks=masks, method=args.calibration)
    print(export_onnx(params, model.cfg, args.out, masks=masks, quantize=quantize, amax=amax, ranges=ranges))
    return 0


def _cmd_check_onnx(args) -> int:
    from pathlib import Path

    from .loop import save_json
    from .onnx_check import check_onnx

    res = check_onnx(args.onnx, args.engine, args.bench_python, teacher=args.teacher, student=args.student, runtime_model=args.runtime_model, int8=args.int8)
    print(json.dumps(res, indent=1))
    if args.out:
        save_json(Path(args.out), res)
    return 0


def _cmd_evaluate_runtime(args) -> int:
    from pathlib import Path

    from .loop import save_json
    from .runtime_eval import evaluate_runtime_model

    res = evaluate_runtime_model(args.model_dir, args.data)
    save_json(Path(args.out or Path(args.model_dir) / "runtime_eval.json"), res)
    for split in ("valid", "test"):
        m = res[split]
        print(f"{split}: macro_recall {100 * m['macro_recall']:.2f}  acc {100 * m['accuracy']:.2f}  agreement_with_jax {100 * m['agreement_with_jax']:.2f}%  max|dp| {m['max_abs_dprob_vs_jax']:.4f}"
              f"  (C vs C with 1-ulp LayerNorm changes: max|dp| {m['noise_floor_1ulp']['max_abs_dprob']:.4f}, agreement {100 * m['noise_floor_1ulp']['agreement']:.2f}%)")
    return 0


def _cmd_package(args) -> int:
    from .package import package_int8

    m = package_int8(args.float_run, args.qat_run, args.out, args.data)
    print(json.dumps({k: m[k] for k in ("model", "sparsity", "valid", "test", "int8_delta", "recovery", "file_bytes", "encoder_compression")}, indent=1))
    return 0


def _cmd_save_student(args) -> int:
    from pathlib import Path

    from .package import STUDENTS_DIR, save_student

    print(save_student(args.run_dir, STUDENTS_DIR / Path(args.run_dir).name, weights=not args.metrics_only))
    return 0


def _cmd_results(args) -> int:
    from .results import write_results

    print(write_results(args.students))
    return 0


def _cmd_resave_model(args) -> int:
    from runtime.format import resave_model

    for d in args.model_dirs:
        print(resave_model(d))
    return 0


_COMMANDS = {
    "teacher": _cmd_teacher,
    "evaluate": _cmd_evaluate,
    "logits": _cmd_logits,
    "stats": _cmd_stats,
    "export-teacher": _cmd_export_teacher,
    "student": _cmd_student,
    "layerdrop": _cmd_layerdrop,
    "export-int8": _cmd_export_int8,
    "export-onnx": _cmd_export_onnx,
    "check-onnx": _cmd_check_onnx,
    "evaluate-runtime": _cmd_evaluate_runtime,
    "package": _cmd_package,
    "save-student": _cmd_save_student,
    "results": _cmd_results,
    "resave-model": _cmd_resave_model,
    "save-teacher-logits": _cmd_save_teacher_logits,
    "ensemble": _cmd_ensemble,
}
