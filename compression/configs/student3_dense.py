"""3-layer dense student (layer dropping + distillation), the start of the 3-layer pruning runs.

`python -m compression layerdrop --config student3_dense --run-dir runs/layerdrop` compares the
candidate keep-sets on validation; the winner is recorded in compression/RESULTS.md and set here.
Measured (1 epoch of distillation each, validation macro recall): layers 0,2,4 72.40 (kept); 0,1,5 72.39;
1,3,5 71.99. The teacher has 73.88.
"""
from .recipes import dense3, tiny


def get_config():
    return dense3(keep=(0, 2, 4))


def get_tiny_config():
    return tiny(get_config())
