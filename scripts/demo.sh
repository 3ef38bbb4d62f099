#!/usr/bin/env bash
# make demo: synthetic data -> a tiny U-Net trained for about a minute -> scored with eval.
set -euo pipefail
SEGCLI=.venv/bin/segcli
OUT=demo_out
rm -rf "$OUT"
$SEGCLI data synth --kind shapes --out "$OUT/data" --n 48 --size 96 --seed 0
$SEGCLI train --data "$OUT/data" --model unet --mode semantic --steps 150 --batch-size 8 --img-size 96 --width 8 --out "$OUT/run" --val-every 50
$SEGCLI eval --data "$OUT/data" --weights "$OUT/run/best.safetensors" --mode semantic --json "$OUT/metrics.json"
echo "demo outputs: $OUT/data (dataset), $OUT/run (checkpoints), $OUT/metrics.json (validation metrics)" >&2
