"""Typed errors of the SparsePulse runtime: everything raised on purpose derives from SparsePulseError."""
from __future__ import annotations

__all__ = ["SparsePulseError", "ModelFormatError", "ModelFormatWarning", "NativeError", "InputError"]


class SparsePulseError(Exception):
    """Base class of all SparsePulse runtime errors."""


class ModelFormatError(SparsePulseError):
    """A model directory or weights file is missing, broken, or of an unknown format/version."""


class ModelFormatWarning(UserWarning):
    """A model file loads but lacks a safeguard (e.g. format v1: no checksum)."""


class NativeError(SparsePulseError):
    """The C library returned an error status."""

    def __init__(self, status: int, message: str, where: str = ""):
        super().__init__(f"{where}: {message} (status {status})" if where else f"{message} (status {status})")
        self.status = status


class InputError(SparsePulseError):
    """Bad input to the scorer (wrong types)."""
