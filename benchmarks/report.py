"""Append dated, machine-stamped sections to BENCHMARKS.md (one helper for every benchmark script)."""
from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

__all__ = ["append_benchmarks", "cpu_name", "cpu_flags"]

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name() -> str:
    """Model name, visible cores and the SIMD level that matters here (AVX2 only, AVX-512 VNNI, + AMX-INT8)."""
    name = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    f = cpu_flags()
    isa = "AVX-512 VNNI" if "avx512_vnni" in f else ("AVX2, no AVX-512" if "avx2" in f else "no AVX2")
    if "amx_int8" in f:
        isa += " + AMX-INT8"
    return f"{name} ({os.cpu_count()} cores visible, {isa})"


def append_benchmarks(title: str, command: str, body: str) -> None:
    """Append a dated section (machine, command, table) to BENCHMARKS.md."""
    with open(BENCHMARKS_MD, "a", encoding="utf-8") as f:
        f.write(f"\n## {title}, {dt.date.today().isoformat()}\n\nMachine: {cpu_name()}. Command: `{command}`\n\n{body}\n")
