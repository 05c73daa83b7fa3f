"""QAT of runs/obert_6l_90_4b (see compression/configs/recipes.py: qat)."""
from .recipes import qat, tiny


def get_config():
    return qat("runs/obert_6l_90_4b", "qat-6l-90-4b")


def get_tiny_config():
    return tiny(get_config())
