"""External engines (ONNX Runtime, DeepSparse) in their own venv, and the batches every engine gets.

Batching protocols (the same batches for every engine, 64 tweets each):
    sorted    tweets sorted by token length, then cut into batches: what a backfill or any batch
              scorer does, and what keeps padding (ONNX Runtime, DeepSparse) to a minimum
    arrival   tweets in file order: what a live stream delivers
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["ExternalEngine", "make_batches", "PROTOCOLS", "BATCH"]

BATCH = 64
PROTOCOLS = ("sorted", "arrival")


def make_batches(lengths: np.ndarray, protocol: str, batch: int = BATCH) -> np.ndarray:
    """Tweet indices per batch, ``(n_batches, batch)``, -1 where the last batch has no tweet."""
    if protocol == "sorted":
        order = np.argsort(lengths, kind="stable")
    elif protocol == "arrival":
        order = np.arange(len(lengths))
    else:
        raise ValueError(f"unknown protocol {protocol!r}")
    n = -(-len(order) // batch)
    out = np.full(n * batch, -1, np.int64)
    out[: len(order)] = order
    return out.reshape(n, batch)


def write_npz(path: str, ids, lengths, latency_idx) -> None:
    np.savez(path, ids=ids, lengths=lengths, latency_idx=latency_idx, **{f"batches_{p}": make_batches(lengths, p) for p in PROTOCOLS})


#: CPU flags an AVX2-only CPU (AMD Zen 3) lacks and this one may have
WIDER_THAN_AVX2 = ("avx512", "avx_vnni", "amx_")


def avx2_only_wrapper(tmpdir: str) -> list[str]:
    """A command prefix that runs a program seeing an AVX2-only CPU in /proc/cpuinfo: a private mount
    namespace (``unshare``; user namespace too when not root) with a copy of /proc/cpuinfo whose flags
    lack AVX-512, AVX-VNNI and AMX bind-mounted over it. DeepSparse takes its instruction set from
    there: ``NM_ARCH=avx2`` alone selects only its host binary, and its run-time compiled kernels
    stay AVX-512 VNNI on a VNNI CPU (the worker's ``jit`` report shows which instructions it wrote)."""
    lines = []
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                key, flags = line.split(":", 1)
                line = key + ": " + " ".join(x for x in flags.split() if not x.startswith(WIDER_THAN_AVX2)) + "\n"
            lines.append(line)
    fake = os.path.join(tmpdir, "cpuinfo-avx2")
    with open(fake, "w") as f:
        f.write("".join(lines))
    userns = [] if os.geteuid() == 0 else ["--map-root-user"]
    return ["unshare", "--mount", *userns, "sh", "-c", 'mount --bind "$0" /proc/cpuinfo && exec "$@"', fake]


class ExternalEngine:
    """A worker process (benchmarks/_worker.py) running one ONNX file in ONNX Runtime or DeepSparse;
    ``wrapper``: a command prefix (``avx2_only_wrapper``)."""

    def __init__(self, name: str, engine: str, onnx_path: str, npz: str, python: str, threads: int, env: dict | None = None,
                 wrapper: list[str] | None = None):
        self.name = name
        env = {**os.environ, "BENCH_THREADS": str(threads), "NM_DISABLE_ANALYTICS": "True", **(env or {})}
        cmd = [*(wrapper or []), python, str(Path(__file__).with_name("_worker.py")), engine, onnx_path, npz]
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.info = self._read_json("start")

    def _read_json(self, what: str) -> dict:
        """The worker's next JSON line; engines print banners on stdout too, those lines are skipped."""
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name}: the worker died during {what} (exit {self.p.poll()}; its stderr is above)")
            if line.lstrip().startswith("{"):
                return json.loads(line)

    def _ask(self, cmd: str) -> dict:
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self._read_json(repr(cmd))

    def throughput(self, protocol: str) -> float:
        return self._ask(f"throughput {protocol}")["seconds"]

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
