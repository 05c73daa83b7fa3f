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


FUZZ_EXECUTIONS = 3000  # a short run here; the 1,000,000-execution run and its figures are in BENCHMARKS.md (RELIABILITY)


def build_fuzz_loader(out_dir) -> Path:
    """tests/native/fuzz_loader.c against the library, under ASan + UBSan (aborts on any finding)."""
    exe = Path(out_dir) / "fuzz_loader"
    cmd = ["gcc", "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-O1", "-g", "-fopenmp", "-ffp-contract=off", "-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined", "-I", str(REPO / "native"), str(REPO / "tests/native/fuzz_loader.c"), str(REPO / "native/sparsepulse.c"), "-lm", "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return exe


def test_c_loader_fuzz_under_asan_ubsan(tmp_path):
    """The C entries by themselves (no Python validator in front): hostile CSR structure, shapes,
    scales, config fields, NULL pointers, ids and lengths must each end in a status, never in a
    sanitizer report."""
    exe = build_fuzz_loader(tmp_path)
    r = subprocess.run([str(exe), str(FUZZ_EXECUTIONS), "7"], capture_output=True, text=True, timeout=300, env={"ASAN_OPTIONS": "detect_leaks=1", "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0 and r.stdout.startswith(f"executions {FUZZ_EXECUTIONS} ok "), r.stdout + r.stderr[-3000:]
    # the run reached both sides: models accepted and forwarded, and every refusal class
    for status in ("ok ", "invalid argument", "inconsistent dimensions", "index out of range", "invalid value"):
        assert status in r.stdout, r.stdout


def test_c_rejects_row_pointers_that_jump_past_the_blocks(tmp_path):
    """The reproduction from the hostile-streams issue: row_ptr = [0, 1000000, 1] made check_linear
    read col_idx far out of bounds (confirmed under ASan before the fix)."""
    src = tmp_path / "rowptr.c"
    src.write_text(r'''
#include <stdio.h>
#include "sparsepulse.h"
int main(void) {
    int32_t row_ptr[3] = {0, 1000000, 1};
    uint16_t col[1] = {0};
    int8_t val[4] = {1, 2, 3, 4};
    float scale[2] = {0.1f, 0.1f}, bias[2] = {0, 0}, xs[1] = {0.1f}, y[2];
    int8_t xq[4] = {1, 1, 1, 1};
    sp_linear l = {2, 4, 1, row_ptr, col, val, scale, bias};
    int a = sp_linear_forward(&l, xq, xs, 1, SP_KERNEL_SCALAR, 1, y);
    sp_linear neg = {-2, -4, 0, row_ptr, col, val, scale, bias};
    int b = sp_linear_forward(&neg, xq, xs, 1, SP_KERNEL_SCALAR, 1, y);
    sp_linear wide = {2, 262144, 0, row_ptr, col, val, scale, bias};
    int c = sp_linear_forward(&wide, xq, xs, 1, SP_KERNEL_SCALAR, 1, y);
    printf("%d %d %d\n", a, b, c);
    return 0;
}
''')
    exe = tmp_path / "rowptr"
    subprocess.run(["gcc", "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-O1", "-g", "-fopenmp", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-I", str(REPO / "native"), str(src), str(REPO / "native/sparsepulse.c"), "-lm", "-o", str(exe)], check=True, capture_output=True, text=True)
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60, env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["4", "3", "3"]  # SP_ERR_INDEX, SP_ERR_SHAPE (negative sizes), SP_ERR_SHAPE (in > SP_MAX_DIM)
