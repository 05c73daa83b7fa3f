"""Recipe magnitude_3l_80_4b: see compression/configs/recipes.py for the shared schedule and its justification."""
from .recipes import obert, tiny


def get_config():
    return obert(3, 0.80, (1, 4), method="magnitude", epochs=2.0, prune_end=1.0)


def get_tiny_config():
    return tiny(get_config())
