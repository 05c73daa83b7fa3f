"""Experiment configs: each module has ``get_config()`` and ``get_tiny_config()`` (tests)."""
from __future__ import annotations

import importlib

__all__ = ["load_config"]


def load_config(name: str, tiny: bool = False):
    """``load_config("teacher")`` -> ``compression.configs.teacher.get_config()``."""
    try:
        mod = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        raise ValueError(f"unknown config {name!r}") from e
    return mod.get_tiny_config() if tiny else mod.get_config()
