"""The INT8 MAC peak of this CPU per instruction set, measured by benchmarks/peak.c (see there)."""
from __future__ import annotations

import functools
import subprocess
import tempfile
from pathlib import Path

__all__ = ["peak_gmacs"]

_SRC = Path(__file__).with_name("peak.c")
_FLAGS = {
    "avx2": ["-mavx2"],
    "avx512vnni": ["-mavx2", "-mavx512f", "-mavx512bw", "-mavx512vnni", "-DPEAK_VNNI"],
    "amx": ["-mavx2", "-mamx-tile", "-mamx-int8", "-DPEAK_AMX"],
}


@functools.lru_cache(maxsize=None)
def peak_gmacs(isa: str, threads: int, seconds: float = 1.0) -> float | None:
    """GMAC/s of ``threads`` threads running ``isa``'s 8-bit dot-product instruction back to back;
    None when the ISA has no micro-benchmark (scalar) or the CPU cannot run it."""
    if isa not in _FLAGS:
        return None
    with tempfile.TemporaryDirectory(prefix="peak-") as tmp:
        exe = Path(tmp) / f"peak_{isa}"
        subprocess.run(["gcc", "-O2", "-fopenmp", *_FLAGS[isa], str(_SRC), "-o", str(exe)], check=True, capture_output=True, text=True)
        r = subprocess.run([str(exe), isa, str(threads), str(seconds)], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            return None
        runs = [float(r.stdout)]
        for _ in range(2):  # best of three: the machine may be busy for one of them
            r = subprocess.run([str(exe), isa, str(threads), str(seconds)], capture_output=True, text=True, timeout=60)
            runs.append(float(r.stdout))
    return max(runs)
