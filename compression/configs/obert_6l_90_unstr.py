"""Recipe obert_6l_90_unstr: see compression/configs/recipes.py for the shared schedule and its justification."""
from .recipes import obert, tiny


def get_config():
    return obert(6, 0.90, (1, 1))


def get_tiny_config():
    return tiny(get_config())
