#!/usr/bin/env bash
# make demo: synthetic data -> a tiny U-Net trained for about a minute -> scored with eval ->
# predictions on the validation images -> pictures of them against the ground truth.
set -euo pipefail
SEGCLI=.venv/bin/segcli
OUT=demo_out
rm -rf "$OUT"
$SEGCLI data synth --kind shapes --out "$OUT/data" --n 48 --size 96 --seed 0
$SEGCLI train --data "$OUT/data" --model unet --mode semantic --steps 150 --batch-size 8 --img-size 96 --width 8 --out "$OUT/run" --val-every 50
$SEGCLI eval --data "$OUT/data" --weights "$OUT/run/best.safetensors" --mode semantic --json "$OUT/metrics.json"
# The validation images as a list of paths on stdin, as a batch job would pass them.
sed "s|^|$OUT/data/images/|; s|\$|.png|" "$OUT/data/splits/val.txt" \
  | $SEGCLI predict - --weights "$OUT/run/best.safetensors" --mode semantic --out "$OUT/pred" --json > "$OUT/predict.jsonl"
$SEGCLI visualize "$OUT/data/images/shapes_0036.png" "$OUT/data/images/shapes_0037.png" --pred "$OUT/pred" \
  --gt "$OUT/data/masks" --side-by-side --out "$OUT/pictures"
$SEGCLI visualize $(sed "s|^|$OUT/data/images/|; s|\$|.png|" "$OUT/data/splits/val.txt") --pred "$OUT/pred" \
  --grid --cols 6 --out "$OUT/sheet" --quiet
if [ "${README_IMAGES:-0}" = 1 ]; then
  mkdir -p docs/images
  cp "$OUT/pictures/shapes_0036.png" docs/images/demo_side_by_side.png
  cp "$OUT/pred/overlays/shapes_0037.jpg" docs/images/demo_overlay.jpg
fi
echo "demo outputs: $OUT/data (dataset), $OUT/run (checkpoints), $OUT/metrics.json (validation metrics)," \
  "$OUT/pred (predict output, $OUT/predict.jsonl its --json lines), $OUT/pictures and $OUT/sheet/grid.png" >&2
