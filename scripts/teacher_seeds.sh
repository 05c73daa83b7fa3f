#!/bin/sh
# Teacher ensemble members one after another, each evaluated and its logits saved under
# models/teachers/ (resumable: re-run it; a finished member is skipped): the class-weight variant
# (compression/configs/teacher_cw05.py), then seeds 2-4. Usage: sh scripts/teacher_seeds.sh
cd "$(dirname "$0")/.."
d=runs/teacher_cw05
if [ ! -f models/teachers/teacher_cw05/test_logits.npz ]; then
  .venv/bin/python -m compression teacher --config teacher_cw05 --run-dir $d --resume >> $d.out 2>&1 || exit 1
  .venv/bin/python -m compression evaluate --config teacher_cw05 --run-dir $d >> $d.out 2>&1 || exit 1
  .venv/bin/python -m compression logits --config teacher_cw05 --run-dir $d >> $d.out 2>&1 || exit 1
  .venv/bin/python -m compression save-teacher-logits $d >> $d.out 2>&1 || exit 1
fi
for s in 2 3 4; do
  d=runs/teacher_s$s
  if [ ! -f models/teachers/teacher_s$s/test_logits.npz ]; then
    .venv/bin/python -m compression teacher --seed $s --run-dir $d --resume >> $d.out 2>&1 || exit 1
    .venv/bin/python -m compression evaluate --seed $s --run-dir $d >> $d.out 2>&1 || exit 1
    .venv/bin/python -m compression logits --seed $s --run-dir $d >> $d.out 2>&1 || exit 1
    .venv/bin/python -m compression save-teacher-logits $d >> $d.out 2>&1 || exit 1
  fi
done
