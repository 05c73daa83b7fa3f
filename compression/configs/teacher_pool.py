"""Whole-pool fit (the stronger-teacher issue): the `teacher` recipe trained on all 49,570 pool tweets (train +
valid), with the weights kept fixed in advance instead of chosen on validation: the EMA weights at the end of the
second of three epochs (epoch index 1): validation chose the end of the second epoch for every teacher run (seeds
0-3 and the class-weight variant, step 2790) and the EMA weights for all of them but seed 1. Its validation figures
are not held out; only the 2017 test figure is reported.
"""
import dataclasses

from . import teacher


def get_config():
    cfg = teacher.get_config()
    return dataclasses.replace(
        cfg,
        name="teacher-pool",
        data=dataclasses.replace(cfg.data, train_on_pool=True),
        run=dataclasses.replace(cfg.run, pool_pick=(1, "ema")),
    )


def get_tiny_config():
    cfg = teacher.get_tiny_config()
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train_on_pool=True), run=dataclasses.replace(cfg.run, pool_pick=(0, "ema")))
