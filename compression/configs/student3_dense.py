"""3-layer dense student (layer dropping + distillation), the start of the 3-layer pruning runs.

`python -m compression layerdrop --config student3_dense --run-dir runs/layerdrop` compares the
candidate keep-sets on validation; the winner is recorded in compression/RESULTS.md and set here.
"""
from .recipes import dense3, tiny


def get_config():
    return dense3(keep=(0, 2, 4))


def get_tiny_config():
    return tiny(get_config())
