"""Teacher variant: the `teacher` recipe with class weights (n / (K n_c)) ** 0.5 instead of ** 1.

Motivation (the stronger-teacher issue; every teacher seed measured so far): with full inverse-frequency
weights every seed over-calls the minority negative class on the 2017 test (negative recall 90-94%) and
under-calls neutral (42-51%); a square-root weight halves the negative up-weighting. Chosen or rejected on
validation only, like the seeds.
"""
import dataclasses

from . import teacher


def get_config():
    cfg = teacher.get_config()
    return dataclasses.replace(cfg, name="teacher-cw05", optim=dataclasses.replace(cfg.optim, class_weight_power=0.5))


def get_tiny_config():
    return teacher.get_tiny_config()
