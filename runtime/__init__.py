"""SparsePulse runtime: model format, text normalisation and the C-backed ``Scorer``.

Importing the package does not load the native library; ``Scorer`` does on first use.
"""
from __future__ import annotations

from .errors import InputError, ModelFormatError, NativeError, SparsePulseError
from .text import NORMALIZATION_VERSION, normalize

__all__ = [
    "Scorer",
    "SparsePulseError",
    "ModelFormatError",
    "NativeError",
    "InputError",
    "normalize",
    "NORMALIZATION_VERSION",
]


def __getattr__(name: str):
    if name == "Scorer":
        from .scorer import Scorer

        return Scorer
    raise AttributeError(name)
