"""`voc`: the PASCAL VOC 2012 layout: JPEGImages/, SegmentationClass/ (palette PNGs, 255 = void),
SegmentationObject/ (palette PNGs of object numbers), ImageSets/Segmentation/{train,val}.txt."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segcli import io
from segcli.data.dataset import DatasetOptions, Record, SegDataset, check_same_size, instances_by_majority_class
from segcli.errors import DataError
from segcli.structures import IGNORE_INDEX, LabelSpace, Sample

VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor"]


def read(root: Path, split: str, options: DatasetOptions) -> SegDataset:
    sets = root / "ImageSets" / "Segmentation"
    split_files = {s: sets / f"{s}.txt" for s in ("train", "val", "trainval")}
    names_by_split = {s: path.read_text().split() for s, path in split_files.items() if path.is_file()}
    if split == "all":
        names = sorted({n for ns in names_by_split.values() for n in ns})
    elif split in names_by_split:
        names = names_by_split[split]
    else:
        raise DataError(f"{sets}: no {split}.txt")
    records = []
    for name in names:
        image, mask = root / "JPEGImages" / f"{name}.jpg", root / "SegmentationClass" / f"{name}.png"
        if not image.is_file() or not mask.is_file():
            raise DataError(f"{root}: {name} is listed but {image if not image.is_file() else mask} is missing")
        records.append(Record(name, image, {"mask": mask, "objects": root / "SegmentationObject" / f"{name}.png"}))
    label_space = LabelSpace(VOC_CLASSES, isthing=[False] + [True] * 20)

    def load(record: Record) -> Sample:
        image = io.read_image(record.image, channels=options.channels)
        semantic = io.read_label_png(record.files["mask"]).astype(np.uint8)
        check_same_size(image, semantic, record.files["mask"])
        instances = []
        if record.files["objects"].is_file():
            # Object ids 255 (void) are no object; each object takes its most frequent class but background.
            instances = instances_by_majority_class(io.read_label_png(record.files["objects"]), semantic,
                                                    skip_ids=(0, IGNORE_INDEX), skip_classes=(0, IGNORE_INDEX))
        return Sample(image=image, name=record.name, semantic=semantic, instances=instances)

    return SegDataset(root, "voc", label_space, records, load, split)
