"""cffi (API mode) build script for ``runtime._native``: compiled during ``pip install``.

Build switches (environment; an unknown value is an error, not a silent default):
    SPARSEPULSE_OPENMP=1|0     multi-threading through OpenMP (default 1)
    SPARSEPULSE_SANITIZE=0|1   -fsanitize=address,undefined (CI's sanitizer build; default 0)
    SPARSEPULSE_DEBUG=0|1      -O0 -g instead of -O3 (default 0)
The AVX2 and AVX-512 VNNI kernels are compiled with function-level target attributes and chosen
at run time (``sp_cpu_has_avx2``, ``sp_cpu_has_avx512_vnni``), so one build serves CPUs with and
without them; on other architectures only the portable kernels are built.
"""
from __future__ import annotations

import os
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parents[1]
NATIVE = ROOT / "native"
HEADER = NATIVE / "sparsepulse.h"


def _flag(name: str, default: str) -> bool:
    val = os.environ.get(name, default)
    if val not in ("0", "1"):
        raise SystemExit(f"error: {name}={val!r}: expected 0 or 1")
    return val == "1"


def _cdef_from_header(text: str) -> str:
    """The header's declarations for cffi: preprocessor lines dropped (integer #defines kept),
    ``#ifdef __cplusplus`` blocks removed."""
    out, in_cpp = [], False
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#ifdef __cplusplus"):
            in_cpp = True
            continue
        if in_cpp:
            in_cpp = not s.startswith("#endif")
            continue
        if s.startswith("#"):
            parts = s.split()
            if parts[0] == "#define" and len(parts) == 3 and parts[2].isdigit():
                out.append(f"#define {parts[1]} {parts[2]}")
            continue
        out.append(line)
    return "\n".join(out)


ffibuilder = FFI()
ffibuilder.cdef(_cdef_from_header(HEADER.read_text()))

_openmp = _flag("SPARSEPULSE_OPENMP", "1")
_sanitize = _flag("SPARSEPULSE_SANITIZE", "0")
_debug = _flag("SPARSEPULSE_DEBUG", "0")
_cflags = ["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-ffp-contract=off", "-Wall", "-Wextra", "-Wno-unused-function"]
_cflags += ["-O0", "-g"] if _debug else ["-O3"]
_ldflags: list[str] = []
if _openmp:
    _cflags.append("-fopenmp")
    _ldflags.append("-fopenmp")
if _sanitize:
    _cflags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    _ldflags += ["-fsanitize=address,undefined"]

ffibuilder.set_source(
    "runtime._native",
    '#include "sparsepulse.h"',
    sources=[str((NATIVE / "sparsepulse.c").relative_to(ROOT))],
    include_dirs=[str(NATIVE.relative_to(ROOT))],
    depends=[str(p.relative_to(ROOT)) for p in sorted(NATIVE.glob("*.h"))],
    extra_compile_args=_cflags,
    extra_link_args=_ldflags,
    libraries=["m"],
)

if __name__ == "__main__":  # in-place build for development: python runtime/_build.py
    os.chdir(ROOT)
    built = Path(ffibuilder.compile(verbose=True))
    # the same file name as `pip install -e .` gives (abi3), so that one never shadows the other
    target = ROOT / "runtime" / "_native.abi3.so"
    if built.resolve() != target.resolve():
        built.replace(target)
    for leftover in (ROOT / "runtime").glob("_native.c*"):
        leftover.unlink()
    for obj in list((ROOT / "runtime").glob("_native.o")) + list(NATIVE.glob("*.o")):
        obj.unlink()
    print(f"built {target}")
