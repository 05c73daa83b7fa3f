"""QAT of runs/obert_3l_80_4b (see compression/configs/recipes.py: qat)."""
from .recipes import qat, tiny


def get_config():
    return qat("runs/obert_3l_80_4b", "qat-3l-80-4b")


def get_tiny_config():
    return tiny(get_config())
