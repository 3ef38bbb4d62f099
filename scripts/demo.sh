#!/usr/bin/env bash
# make demo: synthetic data -> a small U-Net trained for about a minute and a half -> scored with eval ->
# predictions on the validation images -> pictures of them against the ground truth.
set -euo pipefail
SEGCLI=.venv/bin/segcli
OUT=demo_out
rm -rf "$OUT"
$SEGCLI data synth --kind shapes --out "$OUT/data" --n 160 --size 96 --seed 0
$SEGCLI train --data "$OUT/data" --model unet --mode semantic --steps 400 --batch-size 8 --img-size 96 --width 16 \
  --out "$OUT/run" --val-every 100
$SEGCLI eval --data "$OUT/data" --weights "$OUT/run/best.safetensors" --mode semantic --json "$OUT/metrics.json"
# The validation images as a list of paths on stdin, as a batch job would pass them.
sed "s|^|$OUT/data/images/|; s|\$|.png|" "$OUT/data/splits/val.txt" > "$OUT/val.txt"
$SEGCLI predict - --weights "$OUT/run/best.safetensors" --mode semantic --out "$OUT/pred" --json \
  < "$OUT/val.txt" > "$OUT/predict.jsonl"
$SEGCLI visualize $(head -n 2 "$OUT/val.txt") --pred "$OUT/pred" --gt "$OUT/data/masks" --side-by-side --out "$OUT/pictures"
$SEGCLI visualize - --pred "$OUT/pred" --grid --cols 8 --out "$OUT/sheet" --quiet < "$OUT/val.txt"
if [ "${README_IMAGES:-0}" = 1 ]; then
  first=$(basename "$(head -n 1 "$OUT/val.txt")" .png)
  second=$(basename "$(sed -n 2p "$OUT/val.txt")" .png)
  mkdir -p docs/images
  cp "$OUT/pictures/$first.png" docs/images/demo_side_by_side.png
  cp "$OUT/pred/overlays/$second.jpg" docs/images/demo_overlay.jpg
fi
echo "demo outputs: $OUT/data (dataset), $OUT/run (checkpoints), $OUT/metrics.json (validation metrics)," \
  "$OUT/pred (predict output, $OUT/predict.jsonl its --json lines), $OUT/pictures and $OUT/sheet/grid.png" >&2
