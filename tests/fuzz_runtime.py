"""atheris fuzz target: the model loader (arbitrary bytes as a model file, and mutations of a valid
one) and the tokenised-input path of the C forward (arbitrary ids / lengths). Any exception other
than the typed errors, or a crash, is a finding.

    python tests/fuzz_runtime.py -runs=2000            # what CI runs (tests/test_fuzz.py)
    python tests/fuzz_runtime.py -max_total_time=600    # a longer local session
"""
import struct
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import numpy as np

    from runtime.errors import ModelFormatError, NativeError
    from runtime.format import load_model, save_model
    from runtime.native import NativeModel
    from runtime.synthetic import TINY_CONFIG, random_tensors

_DIR = Path(tempfile.mkdtemp())
save_model(_DIR, random_tensors(TINY_CONFIG, 0.8), config=TINY_CONFIG, labels=["negative", "neutral", "positive"], max_len=32, demojize=True, sparsity=0.8)
_VALID = (_DIR / "model.safetensors").read_bytes()
_MODEL = NativeModel(load_model(_DIR))
_PATH = _DIR / "fuzz.safetensors"


def test_one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 2)
    if mode == 0:  # arbitrary bytes
        _PATH.write_bytes(fdp.ConsumeBytes(fdp.remaining_bytes()))
    elif mode == 1:  # a valid file with a few bytes overwritten (header or tensor data)
        buf = bytearray(_VALID)
        for _ in range(fdp.ConsumeIntInRange(1, 8)):
            pos = fdp.ConsumeIntInRange(0, len(buf) - 1)
            buf[pos] = fdp.ConsumeIntInRange(0, 255)
        _PATH.write_bytes(bytes(buf))
    else:  # the tokenised-input path
        n = fdp.ConsumeIntInRange(0, 6)
        lengths = np.array([fdp.ConsumeIntInRange(-2, 45) for _ in range(n)], np.int32)
        total = int(np.clip(lengths, 0, None).sum())
        ids = np.array([fdp.ConsumeIntInRange(-5, 200) for _ in range(total)], np.int32)
        try:
            _MODEL.forward(ids, lengths, threads=1)
        except (NativeError, ValueError):
            pass
        return
    try:
        NativeModel(load_model(_PATH))
    except (ModelFormatError, NativeError):
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()
