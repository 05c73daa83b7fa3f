"""In-tree PEP 517 backend: setuptools plus the ``cffi_modules`` listed in pyproject.toml.

cffi's ``cffi_modules`` is a ``setup()`` keyword that pyproject.toml cannot carry for setuptools
(python-cffi/cffi#55), so this backend reads ``[tool.sparsepulse] cffi_modules`` and passes it to
``setup()``; everything else is setuptools' own ``build_meta``.
"""
from __future__ import annotations

import tomllib

from setuptools import build_meta as _bm

__all__ = [
    "build_sdist",
    "build_wheel",
    "build_editable",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
    "get_requires_for_build_editable",
    "prepare_metadata_for_build_wheel",
    "prepare_metadata_for_build_editable",
]


class _Backend(_bm._BuildMetaBackend):
    def run_setup(self, setup_script="setup.py"):
        """What setuptools would run from a setup.py: ``setup()``, here with the cffi modules."""
        from setuptools import setup

        with open("pyproject.toml", "rb") as f:
            mods = tomllib.load(f)["tool"]["sparsepulse"]["cffi_modules"]
        setup(cffi_modules=mods)


_b = _Backend()
build_sdist = _b.build_sdist
build_wheel = _b.build_wheel
build_editable = _b.build_editable
get_requires_for_build_sdist = _b.get_requires_for_build_sdist
get_requires_for_build_wheel = _b.get_requires_for_build_wheel
get_requires_for_build_editable = _b.get_requires_for_build_editable
prepare_metadata_for_build_wheel = _b.prepare_metadata_for_build_wheel
prepare_metadata_for_build_editable = _b.prepare_metadata_for_build_editable
