"""The common dataset type and what every format's reader shares (segcli.data.load reads a dataset).

Every reader gives a list of `Record`s (one per image: its name and the files it needs) and a
function that turns a record into a `Sample`. What a format does not store is derived here, the
same way for all: instances from the connected components of thing classes, the semantic map by
painting instances over the background, the panoptic map from both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from segcli import io
from segcli.data.classes import parse_classes_txt
from segcli.errors import DataError, UsageError
from segcli.structures import IGNORE_INDEX, Instance, LabelSpace, Sample, paste_segments

SPLITS = ("train", "val", "test", "all")


@dataclass
class Record:
    name: str  # the image's stem: image_id for predict and eval
    image: Path
    files: dict[str, object] = field(default_factory=dict)  # label files or annotations, per format


@dataclass
class DatasetOptions:
    images: Path | None = None  # where COCO images live
    masks: Path | None = None  # where panoptic PNGs live
    classes: Path | None = None  # --classes: a classes.txt overriding the format's own
    class_list: LabelSpace | None = None  # --classes read (load_dataset reads it once)
    binary: bool = False  # 0/255 masks: 255 -> class 1
    val: Path | None = None  # COCO: the json of the validation split
    seed: int = 0
    channels: io.Channels = io.RGB  # the image channels a model gets (train --channels)


class SegDataset(Sequence):
    """Samples of one split; `label_space` names their classes, `channels` says which image channels they hold."""

    channels: io.Channels = io.RGB  # load_dataset sets the one its readers read with

    def __init__(self, root: Path, format: str, label_space: LabelSpace, records: list[Record],
                 loader: Callable[[Record], Sample], split: str = "all") -> None:
        self.root, self.format, self.label_space = Path(root), format, label_space
        self.records, self._loader, self.split = records, loader, split

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        record = self.records[index]
        sample = self._loader(record)
        sample.path = str(record.image)
        return complete_sample(sample, self.label_space)

    def names(self) -> list[str]:
        return [r.name for r in self.records]

    def fingerprint(self) -> str:
        """Changes when any image or label file of the split changes (names, sizes, modification times)."""
        digest = hashlib.sha1(self.format.encode())
        for record in self.records:
            for path in [record.image, *[p for p in record.files.values() if isinstance(p, Path)]]:
                stat = path.stat() if path.exists() else None
                size, mtime = (stat.st_size, int(stat.st_mtime)) if stat else (-1, -1)
                digest.update(f"{record.name}|{path.name}|{size}|{mtime}".encode())
        return digest.hexdigest()[:16]


# ---------------------------------------------------------------- deriving what a format lacks


def instances_from_semantic(semantic: np.ndarray, label_space: LabelSpace) -> list[Instance]:
    """One instance per 4-connected component of each thing class."""
    instances = []
    for label in label_space.thing_indices:
        region = (semantic == label).astype(np.uint8)
        if not region.any():
            continue
        count, components = cv2.connectedComponents(region, connectivity=4)
        for number in range(1, count):
            instances.append(Instance(mask=components == number, label=label))
    return instances


def semantic_from_instances(shape: tuple[int, int], instances: list[Instance], background: int) -> np.ndarray:
    """Paint instances over the background, smaller ones last: an object lying on another (an orange in
    a bowl, a COCO polygon drawn around its contents) stays visible, as in COCO panoptic annotations."""
    semantic = np.full(shape, background, np.uint8)
    for inst in reversed(smallest_first(instances)):
        semantic[inst.mask] = inst.label
    return semantic


def smallest_first(instances: list[Instance]) -> list[Instance]:
    """Instances by ascending pixel count (stable): the paste order in which small objects stay visible."""
    areas = [inst.area for inst in instances]
    return [instances[i] for i in np.argsort(areas, kind="stable")]


def complete_sample(sample: Sample, label_space: LabelSpace) -> Sample:
    if sample.semantic is None:
        # Instance formats: pixels outside every object are the first stuff class (background), even
        # in an image without objects.
        stuff = label_space.stuff_indices
        background = stuff[0] if stuff else IGNORE_INDEX
        sample.semantic = semantic_from_instances(sample.image.shape[:2], sample.instances, background)
    elif not sample.instances and sample.panoptic is None:
        sample.instances = instances_from_semantic(sample.semantic, label_space)
    if sample.panoptic is None:
        # Earlier instances win in paste_segments: smallest first, the overlap order of the semantic map.
        ordered = smallest_first(sample.instances)
        sample.panoptic, sample.segments = paste_segments(sample.semantic, ordered, label_space.isthing)
    return sample


# ---------------------------------------------------------------- splits


def read_split_file(root: Path, split: str) -> list[str] | None:
    path = Path(root) / "splits" / f"{split}.txt"
    if not path.is_file():
        return None
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def select_split(records: list[Record], root: Path, split: str, seed: int) -> list[Record]:
    """Records of a split: from splits/<split>.txt, else a seeded 10% hold-out for val (the rest is train)."""
    if split not in SPLITS:
        raise UsageError(f"--split {split!r}: choose one of {', '.join(SPLITS)}")
    if split == "all":
        return records
    names = read_split_file(root, split)
    if names is not None:
        by_name = {r.name: r for r in records}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise DataError(f"{Path(root) / 'splits' / (split + '.txt')}: {len(missing)} listed image(s) not found, "
                            f"e.g. {missing[0]!r}")
        return [by_name[n] for n in names]
    if split == "test":
        raise DataError(f"{root}: no splits/test.txt, so there is no test split; use --split val or all")
    order = np.random.default_rng(seed).permutation(len(records))
    n_val = max(1, round(0.1 * len(records))) if len(records) > 1 else 0
    chosen = set(order[:n_val].tolist()) if split == "val" else set(order[n_val:].tolist())
    return [r for i, r in enumerate(records) if i in chosen]


# ---------------------------------------------------------------- checks and helpers the readers share


def check_dataset(dataset: SegDataset, mode: str) -> list[str]:
    """Read every sample once before training: unreadable or impossible labels raise DataError naming the file."""
    warnings = []
    empty = 0
    for index in range(len(dataset)):
        sample = dataset[index]
        if mode == "semantic" and sample.semantic is None:
            raise DataError(f"{sample.path}: no semantic labels in this {dataset.format} dataset")
        if mode in ("instance", "panoptic") and not sample.instances:
            empty += 1
        if sample.semantic is not None:
            valid = sample.semantic[sample.semantic != IGNORE_INDEX]
            if valid.size and int(valid.max()) >= dataset.label_space.num_classes:
                raise DataError(f"{sample.path}: class id {int(valid.max())} "
                                f"beyond the {dataset.label_space.num_classes} classes")
    if not dataset.label_space.thing_indices and mode in ("instance", "panoptic"):
        raise DataError(f"{dataset.root}: no class is marked as a thing, so there are no instances; "
                        "mark them in classes.txt")
    if empty:
        warnings.append(f"{empty} of {len(dataset)} images have no instances")
    return warnings


def image_mask_pairs(image_dir: Path, mask_dir: Path) -> list[Record]:
    """Records for images with a same-stem label PNG; an image without one is an error naming it."""
    from segcli.io import IMAGE_EXTENSIONS

    images = sorted(p for p in Path(image_dir).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    masks = {p.stem: p for p in Path(mask_dir).iterdir() if p.suffix.lower() == ".png"}
    records = []
    for image in images:
        if image.stem not in masks:
            raise DataError(f"{image}: no label file {mask_dir / (image.stem + '.png')}")
        records.append(Record(image.stem, image, {"mask": masks[image.stem]}))
    return records


def check_same_size(image: np.ndarray, label: np.ndarray, label_path: Path) -> None:
    if image.shape[:2] != label.shape[:2]:
        raise DataError(f"{label_path}: label is {label.shape[1]}x{label.shape[0]} px, "
                        f"its image {image.shape[1]}x{image.shape[0]}")


def instances_by_majority_class(ids: np.ndarray, semantic: np.ndarray, skip_ids: tuple[int, ...] = (0,),
                                skip_classes: tuple[int, ...] = (IGNORE_INDEX,)) -> list[Instance]:
    """One instance per id of an instance-id map (ids in `skip_ids` are none), of the class most of its pixels
    have in the semantic map (classes in `skip_classes` not counted); an id with no counted pixel is dropped."""
    instances = []
    for number in np.unique(ids):
        if number in skip_ids:
            continue
        mask = ids == number
        labels = semantic[mask]
        labels = labels[~np.isin(labels, skip_classes)]
        if labels.size:
            instances.append(Instance(mask=mask, label=int(np.bincount(labels).argmax())))
    return instances


def class_list(root: Path, options: DatasetOptions) -> tuple[LabelSpace, Path] | None:
    """The classes.txt of a format that keeps its classes in one (folder, idmap, yolo), read, with its path:
    --classes, else ROOT/classes.txt, else None."""
    if options.class_list is not None:
        return options.class_list, Path(options.classes)
    path = Path(root) / "classes.txt"
    return (parse_classes_txt(path), path) if path.is_file() else None



# ---------------------------------------------------------------- writing (segcli data convert): shared by every writer


@dataclass
class Entry:
    """One image to write: its output name (unique), its image file, its split (None: in none of the source's),
    and where its sample comes from (read when the writer asks, so a dataset never sits in memory whole)."""

    name: str
    image: Path
    split: str | None
    dataset: SegDataset
    index: int
    loaded: Callable[[], None] = lambda: None  # called after each read (progress)

    def load(self) -> Sample:
        sample = self.dataset[self.index]
        self.loaded()
        return sample


@dataclass
class Losses:
    """What a target format cannot hold, counted while writing; each kind becomes one warning line."""

    target: str
    crowd: int = 0  # crowd regions written as ordinary objects
    void_images: int = 0  # images whose void (255) pixels became background
    hidden_pixels: int = 0  # instance pixels another instance covers (one id per pixel)
    unsplit: int = 0  # images in no split of the source, put into the target's train split

    def messages(self) -> list[str]:
        said = []
        if self.crowd:
            said.append(f"{self.crowd} crowd regions became ordinary objects ({self.target} has no crowd flag)")
        if self.void_images:
            said.append(f"{self.void_images} images have void (255) pixels: {self.target} has no void, they became "
                        "background")
        if self.hidden_pixels:
            said.append(f"{self.hidden_pixels} pixels of overlapping objects went to the smaller one ({self.target} "
                        "holds one object per pixel)")
        if self.unsplit:
            said.append(f"{self.unsplit} images listed in no split went into {self.target}'s train split")
        return said


def copy_image(source: Path, folder: Path, name: str) -> str:
    """Copy an image file byte for byte as `<name><its suffix>` into folder (atomically); returns the file name."""
    import shutil

    from segcli.io import atomic_path

    file_name = f"{name}{Path(source).suffix}"
    with atomic_path(Path(folder) / file_name) as tmp:
        shutil.copyfile(source, tmp)
    return file_name


def write_split_lists(out: Path, entries: list[Entry]) -> None:
    """splits/<split>.txt for the splits the entries name (the folder, idmap and yolo readers read them)."""
    from segcli.io import atomic_path

    splits: dict[str, list[str]] = {}
    for entry in entries:
        if entry.split is not None:
            splits.setdefault(entry.split, []).append(entry.name)
    for split, names in splits.items():
        with atomic_path(Path(out) / "splits" / f"{split}.txt") as tmp:
            tmp.write_text("".join(f"{name}\n" for name in names), encoding="utf-8")


def instance_ids(instances: list[Instance], shape: tuple[int, int], losses: Losses) -> np.ndarray:
    """uint16 ids 1..N in list order; where objects overlap the smaller one shows (as in the semantic map)."""
    ids = np.zeros(shape, np.uint16)
    order = np.argsort([inst.area for inst in instances], kind="stable")[::-1]  # largest first, smallest on top
    for number in order.tolist():
        ids[instances[number].mask] = number + 1
    losses.crowd += sum(inst.iscrowd for inst in instances)
    losses.hidden_pixels += sum(inst.area for inst in instances) - int((ids > 0).sum())
    return ids


def count_void(sample: Sample, losses: Losses) -> None:
    if sample.semantic is not None and (sample.semantic == IGNORE_INDEX).any():
        losses.void_images += 1
