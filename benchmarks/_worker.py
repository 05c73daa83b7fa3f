"""Benchmark worker for engines that live in another venv (ONNX Runtime, DeepSparse).

Run by ``benchmarks.engines.ExternalEngine`` with the bench venv's python:
``python _worker.py ENGINE ONNX BATCHES.npz``. The npz holds the token ids (``ids``, ``lengths``),
the batches of every protocol (``batches_<name>``: tweet indices, -1 = no tweet, one row per batch
of 64) and ``latency_idx``. The worker loads the engine, then answers one JSON line per command:
``throughput PROTOCOL`` (one pass over that protocol's batches), ``latency`` (batch-1 calls on
``latency_idx``), ``predict PATH`` (logits of every tweet, in order, saved with numpy), ``quit``.

Every engine gets the same batches; each pads them the way it runs best: ONNX Runtime to the longest
tweet of the batch; DeepSparse, which needs fixed shapes, to the next multiple of 8 tokens (one
engine compiled per (batch size, bucket) in use) with padding rows up to 64. For DeepSparse the
ready line carries ``fraction_of_supported_ops``. ``NM_ARCH`` (e.g. avx2) is passed through.
Standard library + numpy + the engine only: it must not import the project.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

BUCKET = 8


def _pad(ids, off, lengths, rows, T, n_rows):
    x = np.zeros((n_rows, T), np.int64)
    m = np.zeros((n_rows, T), np.int64)
    for r, i in enumerate(rows):
        L = int(lengths[i])
        x[r, :L] = ids[off[i] : off[i] + L]
        m[r, :L] = 1
    return x, m


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


def _jit_isa(tmpdir: str) -> str | None:
    """Which int8 dot-product instructions the engine's run-time generated code holds: DeepSparse
    compiles its kernels at run time into anonymous executable memory, and ``NM_ARCH`` picks only the
    host binary (on an AVX-512 VNNI CPU its JIT still writes 512-bit vpdpbusds under NM_ARCH=avx2).
    The executable anonymous mappings of this process are disassembled with binutils' objdump
    (None when it is missing) and the instructions counted by register width."""
    objdump = shutil.which("objdump")
    if not objdump:
        return None
    counts: dict[str, int] = {}
    with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb") as mem:
        regions = []
        for line in maps:
            f = line.split()
            if len(f) == 5 and "x" in f[1]:  # no path: anonymous (the JIT's); [vdso] etc. have one
                lo, hi = (int(a, 16) for a in f[0].split("-"))
                regions.append((lo, hi))
        for lo, hi in regions:
            try:
                mem.seek(lo)
                data = mem.read(hi - lo)
            except OSError:
                continue
            path = os.path.join(tmpdir, "jit.bin")
            with open(path, "wb") as out:
                out.write(data)
            dis = subprocess.run([objdump, "-D", "-b", "binary", "-mi386:x86-64", path], capture_output=True, text=True).stdout
            for ln in dis.splitlines():
                for op in ("vpdpbusds", "vpdpbusd", "vpmaddubsw", "tdpbusd"):
                    if f"\t{op} " in ln or ln.endswith(f"\t{op}"):
                        width = "zmm" if "%zmm" in ln else "ymm" if "%ymm" in ln else "tmm" if "%tmm" in ln else "xmm"
                        key = f"{op} {width}"
                        counts[key] = counts.get(key, 0) + 1
                        break
    if not counts:
        return "no int8 dot products found"
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


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
    protocols = {k[len("batches_"):]: d[k] for k in d.files if k.startswith("batches_")}
    off = np.concatenate([[0], np.cumsum(lengths)])
    fixed = engine.startswith("deepsparse")

    def shape(rows):
        T = int(lengths[rows].max())
        if fixed:
            return 64 if len(rows) > 1 else 1, -(-T // BUCKET) * BUCKET
        return len(rows), T

    ready = {"ready": True}
    if engine.startswith("ort"):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
        ready["version"] = ort.__version__

        def run(x, m):
            return sess.run(None, {"input_ids": x, "attention_mask": m, "token_type_ids": np.zeros_like(x)})[0]

    elif fixed:
        os.environ.setdefault("NM_DISABLE_ANALYTICS", "True")
        import deepsparse
        from deepsparse import compile_model

        needed = {shape(b[b >= 0]) for p in protocols.values() for b in p} | {shape(np.asarray([i])) for i in lat_idx}
        engines = {}
        for bs, T in sorted(needed):  # fixed shapes: one engine per (batch size, 8-token bucket) in use
            tmp = os.path.join(tmpdir, f"b{bs}_t{T}.onnx")
            shutil.copy(onnx_path, tmp)  # compile_model rewrites the file's input shapes in place
            engines[(bs, T)] = compile_model(tmp, batch_size=bs, num_cores=threads, input_shapes=[[bs, T]] * 3)
        fr = [getattr(e, "fraction_of_supported_ops", None) for e in engines.values()]
        ready["fraction_of_supported_ops"] = min(fr) if all(f is not None for f in fr) else None
        ready["engines"] = len(engines)
        ready["version"] = deepsparse.__version__
        ready["arch"] = os.environ.get("NM_ARCH", "auto") + (", NM_FAST_VNNI_EMULATION=1" if os.environ.get("NM_FAST_VNNI_EMULATION") == "1" else "")
        for (bs, T), e in engines.items():  # the JIT writes its code by the first run at the latest
            e.run([np.ones((bs, T), np.int64), np.ones((bs, T), np.int64), np.zeros((bs, T), np.int64)])
        ready["jit"] = _jit_isa(tmpdir)

        def run(x, m):
            return engines[(x.shape[0], x.shape[1])].run([x, m, np.zeros_like(x)])[0]

    else:
        raise SystemExit(f"unknown engine {engine}")

    def batch(rows):
        n, T = shape(rows)
        return _pad(ids, off, lengths, rows, T, n)

    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "throughput":
            prepared = [(batch(b[b >= 0]), int((b >= 0).sum())) for b in protocols[cmd[1]]]  # padding is not timed
            t0 = time.perf_counter()
            for (x, m), _ in prepared:
                run(x, m)
            print(json.dumps({"seconds": time.perf_counter() - t0, "tweets": sum(k for _, k in prepared)}), flush=True)
        elif cmd[0] == "latency":
            ts = []
            for i in lat_idx:
                x, m = batch(np.asarray([i]))
                t0 = time.perf_counter()
                run(x, m)
                ts.append(time.perf_counter() - t0)
            print(json.dumps({"latencies": ts}), flush=True)
        elif cmd[0] == "predict":
            order = protocols[sorted(protocols)[0]]
            out = np.zeros((len(lengths), 3), np.float32)
            for b in order:
                rows = b[b >= 0]
                x, m = batch(rows)
                out[rows] = np.asarray(run(x, m))[: len(rows)]
            np.save(cmd[1], out)
            print(json.dumps({"ok": True}), flush=True)
        elif cmd[0] == "quit":
            break


if __name__ == "__main__":
    main()
