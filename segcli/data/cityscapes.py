"""`cityscapes`: leftImg8bit/<split>/<city>/*_leftImg8bit.png with gtFine/<split>/<city>/*_gtFine_labelIds.png
and *_gtFine_instanceIds.png. Label ids map to the 19 evaluation classes (trainIds); the others are void.
Instance ids >= 1000 are objects (label id * 1000 + n); a thing label id below 1000 marks a crowd group."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segcli import io
from segcli.data.dataset import DatasetOptions, Record, SegDataset, check_same_size
from segcli.errors import DataError
from segcli.structures import IGNORE_INDEX, Instance, LabelSpace, Sample

# (label id, name, colour) of the 19 evaluated classes, in trainId order (cityscapesScripts' labels.py).
CLASSES = [
    (7, "road", (128, 64, 128)), (8, "sidewalk", (244, 35, 232)), (11, "building", (70, 70, 70)),
    (12, "wall", (102, 102, 156)), (13, "fence", (190, 153, 153)), (17, "pole", (153, 153, 153)),
    (19, "traffic light", (250, 170, 30)), (20, "traffic sign", (220, 220, 0)), (21, "vegetation", (107, 142, 35)),
    (22, "terrain", (152, 251, 152)), (23, "sky", (70, 130, 180)), (24, "person", (220, 20, 60)),
    (25, "rider", (255, 0, 0)), (26, "car", (0, 0, 142)), (27, "truck", (0, 0, 70)), (28, "bus", (0, 60, 100)),
    (31, "train", (0, 80, 100)), (32, "motorcycle", (0, 0, 230)), (33, "bicycle", (119, 11, 32)),
]
FIRST_THING = 11  # person
LOOKUP = np.full(256, IGNORE_INDEX, np.uint8)
for train_id, (label_id, _, _) in enumerate(CLASSES):
    LOOKUP[label_id] = train_id


def read(root: Path, split: str, options: DatasetOptions) -> SegDataset:
    splits = ["train", "val", "test"] if split == "all" else [split]
    records = []
    for part in splits:
        for image in sorted((root / "leftImg8bit" / part).glob("*/*_leftImg8bit.png")):
            stem = image.name.replace("_leftImg8bit.png", "")
            gt = root / "gtFine" / part / image.parent.name
            labels, ids = gt / f"{stem}_gtFine_labelIds.png", gt / f"{stem}_gtFine_instanceIds.png"
            if not labels.is_file():
                raise DataError(f"{image}: no ground truth {labels}")
            records.append(Record(stem, image, {"labels": labels, "ids": ids}))
    label_space = LabelSpace([c[1] for c in CLASSES], isthing=[i >= FIRST_THING for i in range(len(CLASSES))],
                             colors=[c[2] for c in CLASSES], category_ids=[c[0] for c in CLASSES])

    def load(record: Record) -> Sample:
        image = io.read_image(record.image, channels=options.channels)
        label_ids = io.read_label_png(record.files["labels"])
        check_same_size(image, label_ids, record.files["labels"])
        semantic = LOOKUP[label_ids]
        instances = []
        if record.files["ids"].is_file():
            ids = io.read_label_png(record.files["ids"]).astype(np.int64)
            for value in np.unique(ids):
                label_id = value // 1000 if value >= 1000 else value
                train_id = LOOKUP[label_id] if label_id < 256 else IGNORE_INDEX
                if train_id == IGNORE_INDEX or train_id < FIRST_THING:
                    continue
                instances.append(Instance(mask=ids == value, label=int(train_id), iscrowd=value < 1000))
        return Sample(image=image, name=record.name, semantic=semantic, instances=instances)

    return SegDataset(root, "cityscapes", label_space, records, load, split)
