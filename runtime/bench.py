"""Benchmark: ``python -m runtime.bench --model models/A [--model models/B] [--onnx NAME=ENGINE:PATH ...]``.

The 12,284 tweets of the SemEval-2017 test set, tokenised once (the same token ids for every
engine), 2 threads, engines interleaved round by round so that a noisy machine hits all alike; the external
workers are stopped (SIGSTOP) while another engine runs, so idle spinning threads steal nothing.
For each engine: throughput at batch 64 (tweets/s, median over rounds) and batch-1 latency p50/p99
on median-length tweets. For our runtime also: effective GMAC/s (non-zero weights × tokens +
attention) against the ~157 GMAC/s INT8 peak of two Zen 3 cores, where the time goes (linear /
attention / LayerNorm+GELU+quantisation / other, from the C timers), and the tokenisation rate.

External engines run in their own venv (``--bench-python``, e.g. one with onnxruntime and
deepsparse==1.8.0) through ``runtime/_bench_worker.py``; ENGINE is ``ort`` or ``deepsparse``.
``--update`` appends the table, command, date and CPU to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .format import LINEAR_NAMES, load_model
from .native import NativeModel
from .scorer import Scorer

PEAK_GMACS = 157.0
TEST_FILE = "semeval2017-task4a/test/SemEval2017-task4-test.subtask-A.english.txt"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores visible)"
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def append_benchmarks(title: str, command: str, body: str) -> None:
    """Append a dated section (machine, command, table) to BENCHMARKS.md."""
    with open(Path(__file__).resolve().parents[1] / "BENCHMARKS.md", "a", encoding="utf-8") as f:
        f.write(f"\n## {title}, {dt.date.today().isoformat()}\n\nMachine: {_cpu_name()}. Command: `{command}`\n\n{body}\n")


def _synthetic_dir(layers: int, sparsity: float = 0.8) -> Path:
    """A model directory with random weights (runtime.synthetic) and the committed tokenizer files."""
    import shutil

    from .format import TOKENIZER_FILES, save_model
    from .synthetic import MINILM_CONFIG, random_tensors

    d = Path(tempfile.mkdtemp()) / f"synthetic-{layers}l-{int(sparsity * 100)}-4b-int8"
    d.mkdir()
    cfg = {**MINILM_CONFIG, "num_layers": layers}
    save_model(d, random_tensors(cfg, sparsity, seed=layers), config=cfg, labels=["negative", "neutral", "positive"], max_len=128, demojize=True, sparsity=sparsity)
    for f in TOKENIZER_FILES:
        shutil.copy2(Path(__file__).resolve().parents[1] / "models" / "teacher" / f, d / f)
    return d


def _test_texts(data_root: Path) -> list[str]:
    texts = []
    for line in (data_root / TEST_FILE).read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            texts.append(" ".join(parts[2:]).strip())
    return texts


def _macs(model_dir: Path, lengths: np.ndarray) -> float:
    d = load_model(model_dir)
    c = d.config
    nnz = sum(int(np.count_nonzero(d.tensors[f"layer_{i}.{n}.values"])) for i in range(c["num_layers"]) for n in LINEAR_NAMES)
    attn = 2.0 * c["num_layers"] * c["hidden_size"] * float(np.sum(lengths.astype(np.float64) ** 2))
    return nnz * float(lengths.sum()) + attn


class _Ours:
    def __init__(self, model_dir: Path, ids, lengths, lat_idx, threads: int, kernel: str = "auto"):
        self.m = NativeModel(load_model(model_dir), kernel=kernel)
        self.name = f"sparsepulse {model_dir.name} ({self.m.isa_name})"
        self.ids, self.lengths, self.lat_idx, self.threads = ids, lengths, lat_idx, threads
        self.off = np.concatenate([[0], np.cumsum(lengths)])
        self.timings = np.zeros(5)
        self.macs = _macs(model_dir, lengths)

    def throughput(self) -> float:
        t0 = time.perf_counter()
        for s in range(0, len(self.lengths), 64):
            e = min(s + 64, len(self.lengths))
            self.m.forward(self.ids[self.off[s] : self.off[e]], self.lengths[s:e], self.threads, self.timings)
        return time.perf_counter() - t0

    def latency(self) -> list[float]:
        ts = []
        for i in self.lat_idx:
            x = self.ids[self.off[i] : self.off[i + 1]]
            t0 = time.perf_counter()
            self.m.forward(x, self.lengths[i : i + 1], self.threads)
            ts.append(time.perf_counter() - t0)
        return ts


class ExternalEngine:
    def __init__(self, name: str, engine: str, onnx_path: str, npz: str, python: str, threads: int):
        self.name = name
        env = {**os.environ, "BENCH_THREADS": str(threads), "NM_DISABLE_ANALYTICS": "True"}
        self.p = subprocess.Popen([python, str(Path(__file__).with_name("_bench_worker.py")), engine, onnx_path, npz], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        ready = self.p.stdout.readline()
        if not ready:
            raise RuntimeError(f"{name}: the worker failed to start (see its stderr above)")
        self.info = json.loads(ready)

    def _ask(self, cmd: str) -> dict:
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())

    def throughput(self) -> float:
        return self._ask("throughput")["seconds"]

    def latency(self) -> list[float]:
        return self._ask("latency")["latencies"]

    def predict(self) -> np.ndarray:
        """Logits of every tweet of the npz, in order."""
        path = tempfile.mktemp(suffix=".npy")
        self._ask("predict " + path)
        try:
            return np.load(path)
        finally:
            os.unlink(path)

    def pause(self) -> None:
        """Stop the worker process (SIGSTOP) while other engines are measured: engines whose idle
        threads spin (thread pools waiting for work) would otherwise take CPU from them."""
        os.kill(self.p.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.p.pid, signal.SIGCONT)

    def close(self) -> None:
        self.resume()
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.flush()
        except OSError:
            pass
        self.p.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runtime.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], help="a runtime model directory (repeatable)")
    ap.add_argument("--synthetic", action="append", type=int, default=[], metavar="LAYERS", help="also a random 80%% 4-block INT8 model of the real shapes with LAYERS layers (speed equals a trained one's)")
    ap.add_argument("--onnx", action="append", default=[], metavar="NAME=ENGINE:PATH", help="external engine on an ONNX file, e.g. 'ORT FP32 teacher=ort:/tmp/teacher.onnx'")
    ap.add_argument("--bench-python", default=None, help="python of the venv with onnxruntime / deepsparse")
    ap.add_argument("--data", default=os.environ.get("SPARSEPULSE_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kernels", default="auto", help="our kernels to measure, comma-separated (auto, avx2, avx512vnni, scalar); e.g. 'auto,avx2' adds the AVX2-only figures")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-samples", type=int, default=200)
    ap.add_argument("--update", action="store_true", help="append the results to BENCHMARKS.md")
    args = ap.parse_args(argv)
    for layers in args.synthetic:
        args.model.append(str(_synthetic_dir(layers)))
    if not args.model:
        ap.error("give at least one --model or --synthetic")
    texts = _test_texts(Path(args.data))
    scorer = Scorer(args.model[0], threads=args.threads)
    t0 = time.perf_counter()
    ids, lengths, truncated = scorer.encode(texts)
    tok_rate = len(texts) / (time.perf_counter() - t0)
    med = int(np.median(lengths))
    rng = np.random.default_rng(0)
    lat_idx = rng.choice(np.flatnonzero(lengths == med), size=min(args.latency_samples, int((lengths == med).sum())), replace=False)
    npz = tempfile.mktemp(suffix=".npz")
    np.savez(npz, ids=ids, lengths=lengths, latency_idx=lat_idx)
    kernels = [k.strip() for k in args.kernels.split(",") if k.strip()]
    engines: list = [_Ours(Path(m), ids, lengths, lat_idx, args.threads, k) for m in args.model for k in kernels]
    for spec in args.onnx:
        name, rest = spec.split("=", 1)
        engine, path = rest.split(":", 1)
        if not args.bench_python:
            ap.error("--onnx needs --bench-python")
        engines.append(ExternalEngine(name, engine, path, npz, args.bench_python, args.threads))
    for e in engines:  # warm-up
        e.latency()
    thr: dict[str, list[float]] = {e.name: [] for e in engines}
    lat: dict[str, list[float]] = {e.name: [] for e in engines}
    externals = [e for e in engines if isinstance(e, ExternalEngine)]
    for x in externals:
        x.pause()
    for r in range(args.rounds):
        for e in engines:  # each engine alone on the machine: the other workers are stopped
            if isinstance(e, ExternalEngine):
                e.resume()
            thr[e.name].append(len(texts) / e.throughput())
            lat[e.name] += e.latency()
            if isinstance(e, ExternalEngine):
                e.pause()
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    rows = []
    for e in engines:
        l_ms = np.asarray(lat[e.name]) * 1e3
        row = {"engine": e.name, "tweets_per_s": statistics.median(thr[e.name]), "p50_ms": float(np.percentile(l_ms, 50)), "p99_ms": float(np.percentile(l_ms, 99))}
        if isinstance(e, _Ours):
            secs = len(texts) / row["tweets_per_s"]
            row["gmacs"] = e.macs / secs / 1e9
            t = e.timings / max(e.timings[4], 1e-12)
            row["split"] = f"linear {100 * t[0]:.0f}% / attention {100 * t[1]:.0f}% / LN+GELU+quant {100 * t[2]:.0f}% / other {100 * t[3]:.0f}%"
        rows.append(row)
    for e in engines:
        if isinstance(e, ExternalEngine):
            e.close()
    head = f"{len(texts)} tweets, median {med} tokens (p95 {int(np.percentile(lengths, 95))}, max {lengths.max()}), {truncated} truncated; threads {args.threads}; {args.rounds} interleaved rounds"
    lines = [head, "", "| engine | tweets/s (batch 64) | p50 ms (batch 1) | p99 ms | GMAC/s (of 157 peak) | time split |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        g = f"{r['gmacs']:.1f} ({100 * r['gmacs'] / PEAK_GMACS:.0f}%)" if "gmacs" in r else "-"
        lines.append(f"| {r['engine']} | {r['tweets_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {g} | {r.get('split', '-')} |")
    lines.append("")
    lines.append(f"Normalisation + tokenisation (batch call): {tok_rate:.0f} tweets/s.")
    table = "\n".join(lines)
    print(table)
    if args.update:
        append_benchmarks("Runtime benchmark", "python -m runtime.bench " + " ".join(argv if argv is not None else sys.argv[1:]), table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
