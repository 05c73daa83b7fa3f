#!/bin/sh
# Teacher ensemble members one after another, each evaluated and its logits saved under
# models/teachers/ (resumable: re-run it; a finished member is skipped): the class-weight variant
# (compression/configs/teacher_cw05.py), then seeds 2-4. Usage: sh scripts/teacher_seeds.sh
cd "$(dirname "$0")/.."
# member NAME ARGS...: train (resuming), evaluate, logits, save-teacher-logits -> models/teachers/NAME
member() {
  name=$1; shift
  d=runs/$name
  [ -f models/teachers/$name/test_logits.npz ] && return 0
  .venv/bin/python -m compression teacher "$@" --run-dir $d --resume >> $d.out 2>&1 || exit 1
  .venv/bin/python -m compression evaluate "$@" --run-dir $d >> $d.out 2>&1 || exit 1
  .venv/bin/python -m compression logits "$@" --run-dir $d >> $d.out 2>&1 || exit 1
  .venv/bin/python -m compression save-teacher-logits $d >> $d.out 2>&1 || exit 1
}
member teacher_cw05 --config teacher_cw05
for s in 2 3 4; do member teacher_s$s --seed $s; done
