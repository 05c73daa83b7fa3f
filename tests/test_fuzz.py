"""A short atheris run of tests/fuzz_runtime.py (model loader + tokenised-input path) in CI."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_short_fuzz_run():
    r = subprocess.run([sys.executable, str(REPO / "tests/fuzz_runtime.py"), "-runs=3000", "-seed=1"], cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "Done 3000 runs" in r.stderr
