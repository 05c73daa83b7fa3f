"""The benchmark's tools for honest anchors: the probe of DeepSparse's run-time generated code and the
wrapper that shows an engine an AVX2-only CPU (benchmarks/_worker.py, benchmarks/engines.py)."""
import mmap
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

from benchmarks import _worker
from benchmarks.engines import WIDER_THAN_AVX2, avx2_only_wrapper

VPMADDUBSW_YMM = bytes.fromhex("c4e26d04cb")  # vpmaddubsw %ymm3,%ymm2,%ymm1
VPDPBUSD_ZMM = bytes.fromhex("62f2754850c2")  # vpdpbusd %zmm2,%zmm1,%zmm0


def test_jit_probe_counts_generated_code(tmp_path):
    """Code written at run time into anonymous executable memory (as a JIT does) is found and its int8
    dot products counted by register width."""
    assert shutil.which("objdump"), "binutils' objdump is part of the build toolchain"
    before = _worker._jit_isa(str(tmp_path)) or ""
    code = VPMADDUBSW_YMM * 7 + VPDPBUSD_ZMM * 3 + b"\xc3"
    m = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    try:
        m.write(code)
        got = _worker._jit_isa(str(tmp_path))
    finally:
        m.close()

    def count(report, key):
        for part in (report or "").split(", "):
            if part.startswith(key + " x"):
                return int(part.rsplit("x", 1)[1])
        return 0

    assert count(got, "vpmaddubsw ymm") - count(before, "vpmaddubsw ymm") == 7, got
    assert count(got, "vpdpbusd zmm") - count(before, "vpdpbusd zmm") == 3, got


def test_avx2_only_wrapper_hides_wider_flags(tmp_path):
    """Under the wrapper a program reads a /proc/cpuinfo without AVX-512, AVX-VNNI or AMX flags (the rest
    unchanged); outside it the real file is untouched."""
    real = open("/proc/cpuinfo").read()
    cmd = [*avx2_only_wrapper(str(tmp_path)), sys.executable, "-c", "print(open('/proc/cpuinfo').read(), end='')"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0 and ("Operation not permitted" in r.stderr or "unshare failed" in r.stderr):
        pytest.skip(f"this machine allows no private mount namespace for this user: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    flags = [ln for ln in r.stdout.splitlines() if ln.startswith("flags")]
    real_flags = [ln for ln in real.splitlines() if ln.startswith("flags")]
    assert len(flags) == len(real_flags) > 0
    for got, orig in zip(flags, real_flags):
        kept = [f for f in orig.split(":", 1)[1].split() if not f.startswith(WIDER_THAN_AVX2)]
        assert got.split(":", 1)[1].split() == kept
    assert not any(f.startswith(WIDER_THAN_AVX2) for ln in flags for f in ln.split(":", 1)[1].split())
    assert open("/proc/cpuinfo").read() == real


@pytest.mark.parametrize("isa,op", [("avx2", "vpmaddubsw"), ("avx512vnni", "vpdpbusd"), ("amx", "tdpbssd")])
def test_peak_loops_stay_in_registers(isa, op, tmp_path):
    """The ISA peak micro-benchmark (benchmarks/peak.c) as benchmarks/peak.py builds it: its inner loop holds
    every accumulator's instruction (unrolled, registers only; AVX2: two products of its own per accumulator, the
    kernel's paired blocks, not one product hoisted and added to all). A rolled loop kept the accumulators in memory
    and measured the store-to-load latency: a VNNI "peak" a third of the real one, and every share of peak
    three times too high."""
    from benchmarks import peak

    assert shutil.which("objdump"), "binutils' objdump is part of the build toolchain"
    exe = tmp_path / "peak"
    subprocess.run(["gcc", "-O2", "-fopenmp", *peak._FLAGS[isa], str(peak._SRC), "-o", str(exe)], check=True, capture_output=True)
    asm = subprocess.run(["objdump", "-d", str(exe)], check=True, capture_output=True, text=True).stdout
    lines = [ln for ln in asm.splitlines() if f"\t{op} " in ln]
    assert len(lines) >= {"amx": 4}.get(isa, 12), f"{isa}: {len(lines)} {op} in the binary"
    assert not any("(%" in ln for ln in lines), f"{isa}: {op} on a memory operand (accumulators spilled)"


def test_stream_bench_repeat_stores_every_copy(capsys):
    """stream_bench --repeat K replays the matched posts K times with distinct ids: every copy is stored once
    (the bench asserts stored == posts), none deduplicated away; K < 1 is refused."""
    from benchmarks import stream_bench

    model = str(REPO / "models" / "sparsepulse-3l-80-4b-int8")
    assert stream_bench.main(["--model", model, "--n", "40", "--repeat", "3", "--rounds", "1", "--threads", "1"]) == 0
    row = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| sparsepulse-3l")]
    assert len(row) == 1 and row[0].split("|")[2].strip() == "120", row
    with pytest.raises(SystemExit):
        stream_bench.main(["--model", model, "--n", "40", "--repeat", "0"])
