"""Runtime benchmark: ``python -m benchmarks.runtime_bench --model models/A [--onnx NAME=ENGINE:PATH ...]``.

The 12,284 tweets of the SemEval-2017 test set, tokenised once (the same token ids for every
engine), 2 threads, engines interleaved round by round so that a noisy machine hits all alike; the
external workers are stopped (SIGSTOP) while another engine runs, so idle spinning threads steal
nothing. Every engine gets the same batches of 64 (``benchmarks.engines``): length-sorted (the
headline protocol) and in arrival order (file order, as a live stream delivers them); each pads
them as it runs best (ours: no padding; ONNX Runtime: to the batch's longest tweet; DeepSparse:
fixed shapes, to the next multiple of 8 tokens). Padding is prepared outside the timed region.

For each engine: throughput per protocol (tweets/s, median over rounds), batch-1 latency p50/p99 on
median-length tweets, macro recall on the 2017 test set and argmax agreement with our runtime on
the first ``--model`` (so an anchor's speed is read beside what its form costs in accuracy). For
our runtime also: effective GMAC/s (non-zero weights × tokens + attention) against the INT8 peak of
its instruction set *measured on this CPU* (``benchmarks.peak``), and where the time goes.

External engines run in their own venv (``--bench-python``, one with onnxruntime and
deepsparse==1.8.0) through ``benchmarks/_worker.py``. ENGINE is ``ort``, ``deepsparse`` or
``deepsparse-avx2`` (DeepSparse as on an AVX2-only CPU: ``NM_ARCH=avx2`` and, because that alone
leaves its run-time compiled kernels on AVX-512 VNNI, a /proc/cpuinfo without AVX-512/VNNI/AMX flags
in a private mount namespace, ``engines.avx2_only_wrapper``; the worker disassembles the code
DeepSparse generated and the run stops if it holds VNNI instructions) or ``deepsparse-avx2-fast``
(the same with ``NM_FAST_VNNI_EMULATION=1``, which DeepSparse offers on CPUs without VNNI: faster int8
emulation "at the expense of accuracy"; the accuracy columns show what it costs). The notes column
shows the int8 dot-product instructions of each DeepSparse engine's generated code.
``--update`` appends the table, command, date and CPU to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from runtime.format import LINEAR_NAMES, load_model
from runtime.native import NativeModel
from runtime.scorer import Scorer
from stream.formats import semeval_test_file

from .engines import PROTOCOLS, ExternalEngine, avx2_only_wrapper, make_batches, write_npz
from .peak import peak_gmacs
from .report import append_benchmarks

_LABELS = {"negative": 0, "neutral": 1, "positive": 2}
_ISA_PEAK = {"avx2": "avx2", "avx512vnni": "avx512vnni", "amx": "amx"}


def _synthetic_dir(layers: int, sparsity: float = 0.8) -> Path:
    """A model directory with random weights (runtime.synthetic) and the committed tokenizer files."""
    import shutil

    from runtime.format import TOKENIZER_FILES, save_model
    from runtime.synthetic import MINILM_CONFIG, random_tensors

    d = Path(tempfile.mkdtemp()) / f"synthetic-{layers}l-{int(sparsity * 100)}-4b-int8"
    d.mkdir()
    cfg = {**MINILM_CONFIG, "num_layers": layers}
    save_model(d, random_tensors(cfg, sparsity, seed=layers), config=cfg, labels=["negative", "neutral", "positive"], max_len=128, demojize=True, sparsity=sparsity)
    for f in TOKENIZER_FILES:
        shutil.copy2(Path(__file__).resolve().parents[1] / "models" / "teacher" / f, d / f)
    return d


def test_set(data_root: Path) -> tuple[list[str], np.ndarray]:
    """Texts and gold labels (0 negative, 1 neutral, 2 positive) of the SemEval-2017 test file."""
    texts, labels = [], []
    for line in semeval_test_file(str(data_root)).read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[1].strip().lower() in _LABELS:
            texts.append(" ".join(parts[2:]).strip())
            labels.append(_LABELS[parts[1].strip().lower()])
    return texts, np.asarray(labels)


def macro_recall(gold: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[gold == k] == k) for k in np.unique(gold)]))


def _macs(model_dir: Path, lengths: np.ndarray) -> float:
    d = load_model(model_dir)
    c = d.config
    nnz = sum(int(np.count_nonzero(d.tensors[f"layer_{i}.{n}.values"])) for i in range(c["num_layers"]) for n in LINEAR_NAMES)
    attn = 2.0 * c["num_layers"] * c["hidden_size"] * float(np.sum(lengths.astype(np.float64) ** 2))
    return nnz * float(lengths.sum()) + attn


class _Ours:
    def __init__(self, model_dir: Path, ids, lengths, lat_idx, threads: int, kernel: str = "auto"):
        data = load_model(model_dir)
        self.m = NativeModel(data, kernel=kernel)
        self.order = data.label_order
        self.name = f"sparsepulse {model_dir.name} ({self.m.isa_name})"
        self.ids, self.lengths, self.lat_idx, self.threads = ids, lengths, lat_idx, threads
        self.off = np.concatenate([[0], np.cumsum(lengths)])
        self.timings = np.zeros(5)
        self.macs = _macs(model_dir, lengths)
        self.batches = {p: [self._gather(b[b >= 0]) for b in make_batches(lengths, p)] for p in PROTOCOLS}

    def _gather(self, rows):
        return np.concatenate([self.ids[self.off[i] : self.off[i + 1]] for i in rows]), self.lengths[rows].copy()

    def throughput(self, protocol: str) -> float:
        t0 = time.perf_counter()
        for x, ls in self.batches[protocol]:
            self.m.forward(x, ls, self.threads, self.timings)
        return time.perf_counter() - t0

    def latency(self) -> list[float]:
        ts = []
        for i in self.lat_idx:
            x = self.ids[self.off[i] : self.off[i + 1]]
            t0 = time.perf_counter()
            self.m.forward(x, self.lengths[i : i + 1], self.threads)
            ts.append(time.perf_counter() - t0)
        return ts

    def predict(self) -> np.ndarray:
        out = np.zeros((len(self.lengths), 3), np.float32)
        for b in make_batches(self.lengths, "sorted"):
            rows = b[b >= 0]
            out[rows] = self.m.forward(*self._gather(rows), self.threads)[:, self.order]
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.runtime_bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], help="a runtime model directory (repeatable); the first is the reference for agreement")
    ap.add_argument("--synthetic", action="append", type=int, default=[], metavar="LAYERS", help="also a random 80%% 4-block INT8 model of the real shapes with LAYERS layers (speed equals a trained one's)")
    ap.add_argument("--onnx", action="append", default=[], metavar="NAME=ENGINE:PATH", help="external engine on an ONNX file, e.g. 'ORT FP32 teacher=ort:/tmp/teacher.onnx'")
    ap.add_argument("--bench-python", default=None, help="python of the venv with onnxruntime / deepsparse")
    ap.add_argument("--data", default=os.environ.get("SPARSEPULSE_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kernels", default="auto", help="our kernels to measure, comma-separated (auto, avx2, avx512vnni, amx, scalar); e.g. 'auto,avx512vnni,avx2' adds the VNNI-only and AVX2-only figures on an AMX CPU")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-samples", type=int, default=200)
    ap.add_argument("--update", action="store_true", help="append the results to BENCHMARKS.md")
    args = ap.parse_args(argv)
    for layers in args.synthetic:
        args.model.append(str(_synthetic_dir(layers)))
    if not args.model:
        ap.error("give at least one --model or --synthetic")
    texts, gold = test_set(Path(args.data))
    scorer = Scorer(args.model[0], threads=args.threads)
    t0 = time.perf_counter()
    ids, lengths, truncated = scorer.encode(texts)
    tok_rate = len(texts) / (time.perf_counter() - t0)
    med = int(np.median(lengths))
    rng = np.random.default_rng(0)
    lat_idx = rng.choice(np.flatnonzero(lengths == med), size=min(args.latency_samples, int((lengths == med).sum())), replace=False)
    work = tempfile.TemporaryDirectory(prefix="runtime-bench-")  # the token file and the AVX2 wrappers' cpuinfo copies
    npz = os.path.join(work.name, "tokens.npz")
    write_npz(npz, ids, lengths, lat_idx)
    kernels = [k.strip() for k in args.kernels.split(",") if k.strip()]
    engines: list = [_Ours(Path(m), ids, lengths, lat_idx, args.threads, k) for m in args.model for k in kernels]
    for spec in args.onnx:
        name, rest = spec.split("=", 1)
        engine, path = rest.split(":", 1)
        if not args.bench_python:
            ap.error("--onnx needs --bench-python")
        avx2 = engine in ("deepsparse-avx2", "deepsparse-avx2-fast")
        env = {"NM_ARCH": "avx2", **({"NM_FAST_VNNI_EMULATION": "1"} if engine.endswith("-fast") else {})} if avx2 else None
        print(f"starting {name} ...", file=sys.stderr)
        x = ExternalEngine(name, "deepsparse" if engine.startswith("deepsparse") else engine, path, npz, args.bench_python, args.threads,
                           env, avx2_only_wrapper(tempfile.mkdtemp(dir=work.name)) if avx2 else None)
        jit = str(x.info.get("jit"))
        if avx2 and ("vpdpbusd" in jit or "vpmaddubsw" not in jit):
            # an AVX2 anchor counts only when its generated code is seen to be AVX2 (objdump present, no VNNI)
            raise SystemExit(f"{name}: DeepSparse's generated code is not shown to be AVX2 ({jit}); told the CPU is AVX2-only")
        engines.append(x)
    externals = [e for e in engines if isinstance(e, ExternalEngine)]
    preds = {}
    for e in engines:  # accuracy first (also the warm-up); each engine alone on the machine
        for x in externals:
            (x.resume if x is e else x.pause)()
        preds[e.name] = e.predict().argmax(1)
        e.latency()
    ref = preds[engines[0].name]
    thr: dict[str, dict[str, list[float]]] = {e.name: {p: [] for p in PROTOCOLS} for e in engines}
    lat: dict[str, list[float]] = {e.name: [] for e in engines}
    for x in externals:
        x.pause()
    for r in range(args.rounds):
        for e in engines:  # each engine alone on the machine: the other workers are stopped
            if isinstance(e, ExternalEngine):
                e.resume()
            for p in PROTOCOLS:
                thr[e.name][p].append(len(texts) / e.throughput(p))
            lat[e.name] += e.latency()
            if isinstance(e, ExternalEngine):
                e.pause()
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    rows = []
    for e in engines:
        l_ms = np.asarray(lat[e.name]) * 1e3
        row = {"engine": e.name, **{p: statistics.median(thr[e.name][p]) for p in PROTOCOLS}, "p50_ms": float(np.percentile(l_ms, 50)), "p99_ms": float(np.percentile(l_ms, 99))}
        row["recall"] = macro_recall(gold, preds[e.name])
        row["agree"] = float(np.mean(preds[e.name] == ref))
        if isinstance(e, _Ours):
            secs = len(texts) / row["sorted"]
            row["gmacs"] = e.macs / secs / 1e9
            row["peak"] = peak_gmacs(_ISA_PEAK.get(e.m.isa_name, ""), args.threads) if e.m.isa_name in _ISA_PEAK else None
            t = e.timings / max(e.timings[4], 1e-12)
            row["split"] = f"linear {100 * t[0]:.0f}% / attention {100 * t[1]:.0f}% / LN+GELU+quant {100 * t[2]:.0f}% / other {100 * t[3]:.0f}%"
        else:
            fr = e.info.get("fraction_of_supported_ops")
            row["split"] = (f"DeepSparse {e.info.get('version')} ({e.info.get('arch')}), {e.info.get('engines')} engines, fraction_of_supported_ops {fr}, run-time code: {e.info.get('jit')}" if "engines" in e.info else f"ONNX Runtime {e.info.get('version')}")
        rows.append(row)
    for e in externals:
        e.close()
    work.cleanup()
    head = (f"{len(texts)} tweets, median {med} tokens (p95 {int(np.percentile(lengths, 95))}, max {lengths.max()}), {truncated} truncated; "
            f"threads {args.threads}; {args.rounds} interleaved rounds; batches of 64, the same for every engine; agreement = argmax agreement with {engines[0].name}")
    lines = [head, "", "| engine | tweets/s sorted | tweets/s arrival | p50 ms (batch 1) | p99 ms | 2017-test macro recall | agreement | GMAC/s (% of measured ISA peak) | notes |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        g = "-"
        if "gmacs" in r:
            g = f"{r['gmacs']:.1f}" + (f" ({100 * r['gmacs'] / r['peak']:.0f}% of {r['peak']:.0f})" if r.get("peak") else "")
        lines.append(f"| {r['engine']} | {r['sorted']:.0f} | {r['arrival']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {100 * r['recall']:.2f} | {100 * r['agree']:.2f}% | {g} | {r['split']} |")
    lines.append("")
    lines.append(f"Normalisation + tokenisation (batch call): {tok_rate:.0f} tweets/s.")
    table = "\n".join(lines)
    print(table)
    if args.update:
        append_benchmarks("Runtime benchmark", "python -m benchmarks.runtime_bench " + " ".join(argv if argv is not None else sys.argv[1:]), table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
