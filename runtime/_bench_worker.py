"""Benchmark worker for engines that live in another venv (ONNX Runtime, DeepSparse).

Run by ``runtime.bench`` with the bench venv's python: ``python _bench_worker.py ENGINE ONNX IDS.npz``.
It loads the engine, then answers one JSON line per command read on stdin:
``throughput`` (one pass over all tweets in batches of 64), ``latency`` (batch-1 calls) or
``predict PATH`` (the logits of every tweet, in order, saved with numpy to PATH: for accuracy and
agreement checks). For DeepSparse the ready line carries ``fraction_of_supported_ops``.
Standard library + numpy + the engine only: it must not import the project.
"""
import json
import os
import shutil
import sys
import tempfile
import threading
import time

import numpy as np


def _batches(ids, lengths, bs, buckets=None):
    off = np.concatenate([[0], np.cumsum(lengths)])
    for s in range(0, len(lengths), bs):
        ls = lengths[s : s + bs]
        T = int(ls.max())
        if buckets:
            T = next(b for b in buckets if b >= T)
        n = bs if buckets else len(ls)
        x = np.zeros((n, T), np.int64)
        m = np.zeros((n, T), np.int64)
        for r, L in enumerate(ls):
            x[r, :L] = ids[off[s + r] : off[s + r] + L]
            m[r, :L] = 1
        yield x, m, len(ls)


def _exit_with_parent(tmpdir: str) -> None:
    """A daemon thread: when the benchmark process dies (killed mid-run), stop too and remove the
    temporary ONNX copies, instead of running on as an orphan."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        shutil.rmtree(tmpdir, ignore_errors=True)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def main():
    tmpdir = tempfile.mkdtemp(prefix="sparsepulse-bench-")
    _exit_with_parent(tmpdir)
    try:
        _serve(tmpdir)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)  # DeepSparse's per-engine copies of the ONNX file


def _serve(tmpdir: str):
    engine, onnx_path, npz = sys.argv[1:4]
    threads = int(os.environ.get("BENCH_THREADS", "2"))
    d = np.load(npz)
    ids, lengths, lat_idx = d["ids"], d["lengths"], d["latency_idx"]
    off = np.concatenate([[0], np.cumsum(lengths)])
    buckets = None
    ready = {"ready": True}
    if engine.startswith("ort"):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])

        def run(x, m):
            return sess.run(None, {"input_ids": x, "attention_mask": m, "token_type_ids": np.zeros_like(x)})[0]

    elif engine.startswith("deepsparse"):
        os.environ.setdefault("NM_DISABLE_ANALYTICS", "True")
        from deepsparse import compile_model

        buckets = [32, 64, 128]
        engines = {}
        for b in buckets:  # fixed shapes: one engine per length bucket, batch 64 (and 1 for latency)
            for bs in (64, 1):
                tmp = os.path.join(tmpdir, f"b{bs}_t{b}.onnx")
                shutil.copy(onnx_path, tmp)  # compile_model rewrites the file's input shapes in place
                engines[(bs, b)] = compile_model(tmp, batch_size=bs, num_cores=threads, input_shapes=[[bs, b]] * 3)
        fr = [getattr(e, "fraction_of_supported_ops", None) for e in engines.values()]
        ready["fraction_of_supported_ops"] = min(fr) if all(f is not None for f in fr) else None

        def run(x, m):
            e = engines[(x.shape[0], x.shape[1])]
            return e.run([x, m, np.zeros_like(x)])[0]

    else:
        raise SystemExit(f"unknown engine {engine}")
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "throughput":
            t0 = time.perf_counter()
            n = 0
            for x, m, k in _batches(ids, lengths, 64, buckets):
                run(x, m)
                n += k
            print(json.dumps({"seconds": time.perf_counter() - t0, "tweets": n}), flush=True)
        elif cmd == "latency":
            ts = []
            for i in lat_idx:
                L = int(lengths[i])
                T = next(b for b in buckets if b >= L) if buckets else L
                x = np.zeros((1, T), np.int64)
                m = np.zeros((1, T), np.int64)
                x[0, :L] = ids[off[i] : off[i] + L]
                m[0, :L] = 1
                t0 = time.perf_counter()
                run(x, m)
                ts.append(time.perf_counter() - t0)
            print(json.dumps({"latencies": ts}), flush=True)
        elif cmd.startswith("predict "):
            out = []
            for x, m, k in _batches(ids, lengths, 64, buckets):
                out.append(np.asarray(run(x, m))[:k])
            np.save(cmd.split(" ", 1)[1], np.concatenate(out).astype(np.float32))
            print(json.dumps({"ok": True}), flush=True)
        elif cmd == "quit":
            break


if __name__ == "__main__":
    main()
