"""A dataset split as a scanner at a lower magnification would give it: images and instance ids resampled by a factor.

    python scripts/downscale_split.py ../shared/data/monuseg2018_nuclei OUT --split test --factor 0.5

A 40x scan (0.2527 µm/px) downscaled by 0.5 is a 20x one (0.5054 µm/px), so

    segcli eval --data OUT --split test --model M --mode instance --pixel-size 0.5054

measures how well `--pixel-size` brings such inputs back to the model's scale (against the native tiles:
`segcli eval --data ../shared/data/monuseg2018_nuclei --split test --model M --mode instance`).
Images are area-averaged (cv2.INTER_AREA, as a sensor with larger pixels sees them); instance ids are sampled at
the nearest pixel centre (cv2.INTER_NEAREST_EXACT), so ids stay ids, and objects that no longer cover a pixel
centre are gone. The copy is an `idmap` dataset (images/, instances/, classes.txt, splits/SPLIT.txt) made from any
format segcli reads with one thing class (instance ids hold no class).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from segcli import io
from segcli.data import load_dataset


def instance_ids(sample) -> np.ndarray:
    """(H, W) uint16 ids 1..N of the sample's instances (0: none), in the sample's order."""
    ids = np.zeros(sample.image.shape[:2], np.uint16)
    for number, inst in enumerate(sample.instances, start=1):
        ids[inst.mask & (ids == 0)] = number
    return ids


def downscale(source: Path, out: Path, split: str, factor: float, data_format: str = "auto") -> int:
    """Write the resampled split to `out`; returns the number of images."""
    dataset = load_dataset(source, format=data_format, split=split)
    if len(dataset.label_space.thing_indices) != 1:
        raise SystemExit(f"{source}: {len(dataset.label_space.thing_indices)} thing classes; an idmap copy holds one")
    for folder in ("images", "instances", "splits"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(len(dataset)):
        sample = dataset[index]
        h, w = sample.image.shape[:2]
        size = (max(1, round(w * factor)), max(1, round(h * factor)))  # OpenCV's (width, height)
        image = cv2.resize(sample.image, size, interpolation=cv2.INTER_AREA)
        ids = cv2.resize(instance_ids(sample), size, interpolation=cv2.INTER_NEAREST_EXACT)
        io.write_image(out / "images" / f"{sample.name}.png", image)
        io.write_instance_png(out / "instances" / f"{sample.name}.png", ids)
        names.append(sample.name)
    (out / "splits" / f"{split}.txt").write_text("\n".join(names) + "\n")
    space = dataset.label_space  # the source's class names, so the copy's classes read as the model's
    class_lines = (f"{n} {'thing' if t else 'stuff'}\n" for n, t in zip(space.names, space.isthing))
    (out / "classes.txt").write_text("".join(class_lines))
    return len(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a dataset segcli reads (any format)")
    parser.add_argument("out", type=Path, help="folder for the resampled idmap copy")
    parser.add_argument("--split", default="test", help="the split to copy (default test)")
    parser.add_argument("--factor", type=float, default=0.5, help="resampling factor (0.5: half the size, a 20x "
                                                                    "scan from a 40x one)")
    parser.add_argument("--format", default="auto", help="the source's format (default: recognised)")
    args = parser.parse_args()
    if args.factor <= 0:
        parser.error(f"--factor {args.factor}: a factor above 0")
    count = downscale(args.source, args.out, args.split, args.factor, args.format)
    print(f"wrote {count} images of {args.source} ({args.split}) resampled by {args.factor:g} to {args.out}")


if __name__ == "__main__":
    main()
