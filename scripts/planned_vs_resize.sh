#!/usr/bin/env bash
# The plan from the data against the resize recipe on DSB 2018 nuclei, at the same steps and pixels per step:
# unet_contour, crops of 160 px at the images' own scale (the plan) vs --img-size 160 (whole images shrunk), batch 8,
# each run on one core of its own, one after the other. Prints each run's validation nucleus PQ (docs/training.md).
# Usage: scripts/planned_vs_resize.sh STEPS [WIDTH] [SEED] [CORE]   (environment: WORK=runs/pvr, DATA=../shared/data)
set -euo pipefail
STEPS=${1:?usage: scripts/planned_vs_resize.sh STEPS [WIDTH] [SEED] [CORE]}
WIDTH=${2:-16}; SEED=${3:-0}; CORE=${4:-0}
PY=${PY:-.venv/bin/python}; WORK=${WORK:-runs/pvr}; DATA=${DATA:-../shared/data}
mkdir -p "$WORK"
for recipe in planned resize; do
  size=(); [ "$recipe" = resize ] && size=(--img-size 160)
  out="$WORK/$recipe-$STEPS-w$WIDTH-s$SEED"
  taskset -c "$CORE" env OMP_NUM_THREADS=1 "$PY" -m segcli train --data "$DATA/dsb2018_nuclei" --model unet_contour \
    --mode panoptic --width "$WIDTH" --steps "$STEPS" --val-every 0 --seed "$SEED" --workers 0 "${size[@]}" --quiet \
    --out "$out"
  tail -1 "$out/metrics.jsonl" | "$PY" -c "import json, sys; d = json.load(sys.stdin); \
print('$recipe', d['step'], 'steps', d['seconds'], 's; validation nucleus PQ', round(d['things']['pq'], 3))"
done
