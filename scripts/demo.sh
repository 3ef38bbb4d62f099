#!/usr/bin/env bash
# make demo: no training and no network. The bundled `shapes` model predicts a few synthetic images in all three
# modes; the bundled `nuclei` model predicts a few images of the DSB 2018 test split when ../shared/data is there.
# Overlays, a side-by-side with the ground truth and contact sheets show the results.
set -euo pipefail
SEGCLI=${SEGCLI:-.venv/bin/segcli}
DATA=${DATA:-../shared/data}
OUT=${OUT:-demo_out}
rm -rf "$OUT"
export SEGCLI_OFFLINE=1  # the demo must never download: everything it uses ships with segcli

# Eight images the shapes model never saw in training (it was trained on seed 0).
$SEGCLI data synth --kind shapes --out "$OUT/shapes" --n 8 --size 128 --seed 7 --quiet
for mode in semantic instance panoptic; do
  $SEGCLI predict "$OUT/shapes/images" --model shapes --mode "$mode" --out "$OUT/shapes-$mode" --quiet
done
first=$(ls "$OUT/shapes/images" | head -n 1)
$SEGCLI visualize "$OUT/shapes/images/$first" --pred "$OUT/shapes-semantic" --gt "$OUT/shapes/masks" --side-by-side \
  --out "$OUT/pictures" --quiet
$SEGCLI visualize "$OUT/shapes/images" --pred "$OUT/shapes-panoptic" --grid --cols 4 --out "$OUT/sheet-shapes" --quiet
shown="$OUT/shapes-{semantic,instance,panoptic} (predictions and overlays), $OUT/pictures (against the ground truth), $OUT/sheet-shapes/grid.png"

nuclei="$DATA/dsb2018_nuclei"
if [ -f "$nuclei/splits/test.txt" ]; then
  # Four test images, as a batch job would pass them: one path per line on stdin.
  head -n 4 "$nuclei/splits/test.txt" | while read -r id; do echo "$nuclei/stage1_train/$id/images/$id.png"; done \
    > "$OUT/nuclei.txt"
  $SEGCLI predict - --model nuclei --mode instance --out "$OUT/nuclei-instance" --json --quiet \
    < "$OUT/nuclei.txt" > "$OUT/nuclei-instance.jsonl"
  $SEGCLI visualize - --pred "$OUT/nuclei-instance" --grid --cols 2 --out "$OUT/sheet-nuclei" --quiet < "$OUT/nuclei.txt"
  shown="$shown, $OUT/nuclei-instance (its --json lines in $OUT/nuclei-instance.jsonl), $OUT/sheet-nuclei/grid.png"
else
  echo "demo: $nuclei not found: the nuclei part is skipped" >&2
fi

if [ "${README_IMAGES:-0}" = 1 ]; then
  mkdir -p docs/images
  cp "$OUT/pictures/${first%.*}.png" docs/images/demo_side_by_side.png
  cp "$OUT/shapes-panoptic/overlays/${first%.*}.jpg" docs/images/demo_overlay.jpg
  [ -f "$OUT/sheet-nuclei/grid.png" ] && cp "$OUT/sheet-nuclei/grid.png" docs/images/demo_nuclei.png
fi
echo "demo outputs: $shown" >&2
