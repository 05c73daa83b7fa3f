"""A short atheris run of tests/fuzz_runtime.py (model loader + tokenised-input path) in CI, against
a copy of the runtime whose C library is built with AddressSanitizer + UBSan (SPARSEPULSE_SANITIZE=1):
an out-of-bounds read inside C is a crash here, not a silent wrong answer."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sanitized_runtime(tmp_path_factory) -> Path:
    """A folder holding ``runtime/`` with a sanitized ``_native`` (built from this checkout's native/)."""
    root = tmp_path_factory.mktemp("sanitized")
    shutil.copytree(REPO / "runtime", root / "runtime", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    shutil.copytree(REPO / "native", root / "native")
    r = subprocess.run([sys.executable, "runtime/_build.py"], cwd=root, capture_output=True, text=True, env={**os.environ, "SPARSEPULSE_SANITIZE": "1"}, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return root


def _preload() -> str:
    libs = [subprocess.run(["gcc", f"-print-file-name={lib}"], capture_output=True, text=True).stdout.strip() for lib in ("libasan.so", "libubsan.so")]
    return " ".join(libs)


def test_short_fuzz_run_on_the_sanitized_build(sanitized_runtime):
    env = {**os.environ, "PYTHONPATH": str(sanitized_runtime), "LD_PRELOAD": _preload(), "ASAN_OPTIONS": "detect_leaks=0", "UBSAN_OPTIONS": "halt_on_error=1"}
    probe = subprocess.run([sys.executable, "-c", "import runtime._native as n; print(n.__file__)"], cwd=sanitized_runtime, capture_output=True, text=True, env=env)
    assert probe.stdout.strip().startswith(str(sanitized_runtime)), probe.stdout + probe.stderr  # the sanitized library is the one loaded
    r = subprocess.run([sys.executable, str(REPO / "tests/fuzz_runtime.py"), "-runs=3000", "-seed=1"], cwd=sanitized_runtime, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "Done 3000 runs" in r.stderr
