"""The data types every part of segcli shares.

Conventions (the contract between datasets, models, predict, eval and visualize):
- Images are RGB uint8 arrays of shape (H, W, 3).
- A *class index* is the contiguous 0..C-1 index into a `LabelSpace`; semantic maps hold
  class indices (uint8 when C <= 255), with 255 = ignore/void.
- A *category id* is the id written to COCO json files; `LabelSpace.category_ids[i]` maps
  class index i to it (default i + 1, since COCO reserves 0).
- Instance masks are boolean (H, W) arrays; instance ids in PNGs run 1..N, 0 = none.
- Panoptic maps hold segment ids (int32, 0 = void); each id is described by one `Segment`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from segcli.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    import torch

IGNORE_INDEX = 255


class Mode(StrEnum):
    """What a request asks for: the one list of modes. A mode's outputs are built from the modes before it
    (panoptic from the semantic map and the instances), so post-processing for a mode builds those only."""

    SEMANTIC = "semantic"
    INSTANCE = "instance"
    PANOPTIC = "panoptic"


def parse_mode(text: str, option: str = "--mode") -> Mode:
    """The Mode a user named, refused with the choices otherwise."""
    try:
        return Mode(text)
    except ValueError:
        raise UsageError(f"{option} {text}: choose one of {', '.join(Mode)}") from None


def default_palette(n: int) -> list[tuple[int, int, int]]:
    """The PASCAL VOC colour map, extended to n entries: distinct, stable, widely recognised."""
    colors = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors.append((r, g, b))
    return colors


@dataclass
class LabelSpace:
    """Class names in index order, with thing/stuff flags, colours and COCO category ids."""

    names: list[str]
    isthing: list[bool] | None = None
    colors: list[tuple[int, int, int]] | None = None
    category_ids: list[int] | None = None

    def __post_init__(self) -> None:
        n = len(self.names)
        if self.isthing is None:
            self.isthing = [False] * n
        if self.colors is None:
            self.colors = default_palette(n)
        if self.category_ids is None:
            self.category_ids = list(range(1, n + 1))
        self.colors = [tuple(int(v) for v in c) for c in self.colors]
        if not (len(self.isthing) == len(self.colors) == len(self.category_ids) == n):
            raise ValueError("LabelSpace: names, isthing, colors and category_ids differ in length")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def thing_indices(self) -> list[int]:
        return [i for i, t in enumerate(self.isthing) if t]

    @property
    def stuff_indices(self) -> list[int]:
        return [i for i, t in enumerate(self.isthing) if not t]

    def index_of_category(self, category_id: int) -> int:
        return self.category_ids.index(category_id)

    def to_dict(self) -> dict:
        return {
            "names": list(self.names),
            "isthing": list(self.isthing),
            "colors": [list(c) for c in self.colors],
            "category_ids": list(self.category_ids),
        }

    @classmethod
    def from_dict(cls, d: dict) -> LabelSpace:
        return cls(
            names=list(d["names"]),
            isthing=d.get("isthing"),
            colors=[tuple(c) for c in d["colors"]] if d.get("colors") else None,
            category_ids=d.get("category_ids"),
        )

    def coco_categories(self) -> list[dict]:
        """The `categories` list of COCO / COCO panoptic json files."""
        return [
            {"id": cid, "name": name, "isthing": int(thing), "color": list(color), "supercategory": name}
            for cid, name, thing, color in zip(self.category_ids, self.names, self.isthing, self.colors)
        ]


@dataclass
class Instance:
    """One object: a boolean mask, its class index, a confidence and an xywh box."""

    mask: np.ndarray
    label: int
    score: float = 1.0
    bbox: tuple[float, float, float, float] | None = None
    iscrowd: bool = False
    track_id: int | None = None  # the id it keeps across frames or planes (predict --track, --stitch)

    def __post_init__(self) -> None:
        if self.bbox is None:
            self.bbox = mask_to_xywh(self.mask)

    @property
    def area(self) -> int:
        return int(self.mask.sum())


@dataclass
class Segment:
    """One panoptic segment: its id in the panoptic map, class index and COCO fields."""

    id: int
    label: int
    area: int
    bbox: tuple[float, float, float, float]
    iscrowd: bool = False
    score: float | None = None


@dataclass
class Sample:
    """One dataset item; fields a format cannot provide stay None."""

    image: np.ndarray  # (H, W, 3) uint8 RGB; (H, W, C) for a model trained on C channels (train --channels)
    name: str  # the image's file stem: COCO image_id for predict/eval
    semantic: np.ndarray | None = None  # (H, W) class indices, 255 = ignore
    instances: list[Instance] = field(default_factory=list)
    panoptic: np.ndarray | None = None  # (H, W) int32 segment ids, 0 = void
    segments: list[Segment] = field(default_factory=list)
    path: str | None = None


@dataclass
class Prediction:
    """What any model family produces for one image, at the image's own resolution."""

    semantic: np.ndarray | None = None  # (H, W) uint8 class indices
    instances: list[Instance] = field(default_factory=list)  # sorted by descending score
    panoptic: np.ndarray | None = None  # (H, W) int32 segment ids, 0 = void
    segments: list[Segment] = field(default_factory=list)


@dataclass
class LabelMap:
    """One image's labels as files hold them: class indices (semantic), instance ids or panoptic segment ids
    (0 = none)."""

    kind: str  # semantic | instance | panoptic
    values: np.ndarray  # (H, W)
    classes: dict[int, int] = field(default_factory=dict)  # segment id -> class index; instance id -> category id
    scores: dict[int, float] = field(default_factory=dict)  # instance id -> score, when known
    space: LabelSpace | None = None  # names and colours these labels carry, when known
    tracked: bool = False  # ids persist across frames (predict --track): each id's colour follows from it alone


def mask_to_xywh(mask: np.ndarray) -> tuple[float, float, float, float]:
    """COCO-style [x, y, w, h] of a boolean mask's tight box (zeros for an empty mask)."""
    import numpy as np  # here, not at the top: the CLI reads `Mode` from this module and starts without numpy

    # Row and column projections: O(H + W) memory, where np.nonzero would list every pixel of a large mask.
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return (0.0, 0.0, 0.0, 0.0)
    x0, y0 = int(cols[0]), int(rows[0])
    return (float(x0), float(y0), float(cols[-1] - x0 + 1), float(rows[-1] - y0 + 1))


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> (N, 4) float32 xyxy with exclusive right/bottom edges, as torchvision's detection models
    expect (an empty mask gets the whole image; callers drop empty masks)."""
    import torch

    if masks.shape[0] == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    rows, cols = masks.any(2), masks.any(1)
    y0 = rows.float().argmax(1)
    y1 = masks.shape[1] - rows.flip(1).float().argmax(1)
    x0 = cols.float().argmax(1)
    x1 = masks.shape[2] - cols.flip(1).float().argmax(1)
    return torch.stack([x0, y0, x1, y1], dim=1).float()


def id_map_boxes(ids: np.ndarray, count: int) -> np.ndarray:
    """(count, 4) int xyxy boxes (exclusive right/bottom) of ids 1..count of an id map, from per-row and
    per-column counts (two bincounts): no mask per id is made."""
    import numpy as np

    h, w = ids.shape
    row_counts = np.bincount((ids * h + np.arange(h)[:, None]).ravel(), minlength=(count + 1) * h)
    col_counts = np.bincount((ids * w + np.arange(w)[None, :]).ravel(), minlength=(count + 1) * w)
    rows = row_counts.reshape(count + 1, h)[1:] > 0  # rows[k - 1, y]: id k has a pixel in row y
    cols = col_counts.reshape(count + 1, w)[1:] > 0
    y0, x0 = rows.argmax(1), cols.argmax(1)
    y1, x1 = h - rows[:, ::-1].argmax(1), w - cols[:, ::-1].argmax(1)
    return np.stack([x0, y0, x1, y1], 1)


def paste_segments(semantic: np.ndarray, instances: list[Instance], isthing: list[bool], stuff_area: int = 1,
                   overlap_threshold: float | None = None) -> tuple[np.ndarray, list[Segment]]:
    """A panoptic map: instances pasted in list order (earlier wins; ids 1..), then one segment per stuff class
    of `semantic` with at least `stuff_area` pixels no instance took.

    With `overlap_threshold`, an instance whose area is more than that fraction already taken is
    skipped, and a partly covered one keeps only its free pixels (the fusion rule); without it an
    instance keeps whatever pixels are free. Thing-class pixels no instance covers stay void (0).
    """
    import numpy as np

    panoptic = np.zeros(semantic.shape, dtype=np.int32)
    segments: list[Segment] = []
    for inst in instances:
        area = inst.area
        if area == 0:
            continue
        free = inst.mask & (panoptic == 0)
        if overlap_threshold is not None and (area - int(free.sum())) / area > overlap_threshold:
            continue
        if not free.any():
            continue
        segment_id = len(segments) + 1
        panoptic[free] = segment_id
        segments.append(Segment(segment_id, inst.label, int(free.sum()), mask_to_xywh(free), inst.iscrowd, inst.score))
    for label in np.unique(semantic).tolist():
        if label == IGNORE_INDEX or label >= len(isthing) or isthing[label]:
            continue
        region = (semantic == label) & (panoptic == 0)
        area = int(region.sum())
        if area < stuff_area:
            continue
        segment_id = len(segments) + 1
        panoptic[region] = segment_id
        segments.append(Segment(segment_id, label, area, mask_to_xywh(region)))
    return panoptic, segments


def mask_to_rle(mask: np.ndarray) -> dict:
    """COCO RLE of a boolean mask through pycocotools, with `counts` as str so it fits in JSON."""
    import numpy as np
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def rle_string_counts(counts: str | bytes) -> list[int]:
    """The run lengths of a compressed COCO RLE string: pycocotools' rleFrString (6-bit groups from '0',
    sign-extended, each run after the second stored as a difference to the run two before), in Python."""
    data = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    runs: list[int] = []
    position = 0
    while position < len(data):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(data):
                raise ValueError("the string ends inside a number")
            c = data[position] - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {chr(data[position])!r} is not part of an RLE string")
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            position += 1
            shift += 5
            if not more and c & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def rle_error(segmentation: dict, height: int, width: int) -> str | None:
    """What is wrong with an RLE for a height x width image (None: nothing). pycocotools decodes without bounds
    checks, so runs that do not add up to the image would read or write past its mask."""
    size = segmentation.get("size")
    if not isinstance(size, (list, tuple)) or [int(v) for v in size] != [height, width]:
        return f"RLE size {size} is not the image's [{height}, {width}]"
    counts = segmentation.get("counts")
    try:
        runs = rle_string_counts(counts) if isinstance(counts, (str, bytes)) else [int(v) for v in counts]
    except (TypeError, ValueError) as error:
        return f"RLE counts unreadable ({error})"
    if any(run < 0 for run in runs) or sum(runs) != height * width:
        return f"RLE counts cover {sum(runs)} pixels with {'negative ' if any(r < 0 for r in runs) else ''}runs, " \
               f"the image has {height * width}"
    return None


def coco_result(instance: Instance, image_id: object, label_space: LabelSpace) -> dict:
    """One entry of a COCO results list (what COCOeval's loadRes reads) for a predicted instance."""
    return {"image_id": image_id, "category_id": label_space.category_ids[instance.label],
            "segmentation": mask_to_rle(instance.mask), "bbox": [float(v) for v in instance.bbox],
            "score": float(instance.score), "area": instance.area}
