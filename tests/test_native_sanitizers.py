"""The C library under AddressSanitizer + UndefinedBehaviorSanitizer (and valgrind when present),
through a C smoke test of the public API. Needs gcc, which the build needs anyway."""
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _build(tmp_path, flags):
    exe = tmp_path / "smoke"
    cmd = ["gcc", "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-O1", "-g", "-fopenmp", "-ffp-contract=off", *flags, "-I", str(REPO / "native"), str(REPO / "tests/native/smoke.c"), str(REPO / "native/sparsepulse.c"), "-lm", "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return exe


def test_smoke_under_asan_ubsan(tmp_path):
    exe = _build(tmp_path, ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"])
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120, env={"ASAN_OPTIONS": "detect_leaks=1", "OMP_NUM_THREADS": "2"})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


def test_smoke_under_valgrind(tmp_path):
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed on this machine (the ASan/UBSan test above still ran)")
    exe = _build(tmp_path, [])
    r = subprocess.run(["valgrind", "--error-exitcode=9", "--leak-check=full", "--errors-for-leak-kinds=definite", str(exe)], capture_output=True, text=True, timeout=600, env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
