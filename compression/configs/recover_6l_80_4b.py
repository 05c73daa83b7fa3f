"""Two more recovery epochs of the committed 6-layer 80% 4-block OBS student (see
compression/configs/recipes.py: recover); starts from models/students/obert_6l_80_4b, so it needs no
earlier run folder."""
from .recipes import recover, tiny


def get_config():
    return recover("models/students/obert_6l_80_4b", "obert-6l-80-4b-recovered")


def get_tiny_config():
    return tiny(get_config())
