"""Object ids that persist from frame to frame (videos, `predict --track`) and from plane to plane (stacks,
`predict --stitch`).

Each frame's objects are matched to the tracks on mask IoU, one to one, by an optimal assignment
(`scipy.optimize.linear_sum_assignment`), objects of one class only to tracks of that class. A match needs an IoU
of at least `min_iou`; an object left unmatched starts a new track. A track not seen in a frame is remembered for
`memory` frames (an object hidden for a moment keeps its id), then forgotten. With `memory=0` and the IoU threshold
of the user, this is Cellpose's `stitch_threshold`: masks of consecutive planes linked into 3D objects (Cellpose
links each mask to its best match; here the assignment is one to one).

Objects come as an id map (0 = none) with a class per id: the instance or panoptic map predict writes. Each track
keeps its last mask cut to its box, so a frame costs one pass over the id map plus small crops per candidate pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segcli.structures import id_map_boxes

TRACK_IOU = 0.3  # predict --track: the mask IoU that continues a track between frames
TRACK_MEMORY = 5  # predict --track: frames a vanished object is remembered for


@dataclass
class _Shape:
    """An object's mask cut to its box (y0, x0, y1, x1; exclusive ends), with its class and pixel count."""

    label: int
    box: tuple[int, int, int, int]
    crop: np.ndarray
    area: int


@dataclass
class _Track:
    id: int
    shape: _Shape
    missed: int = 0  # frames since it was last seen


class Tracker:
    """Assigns track ids to the objects of consecutive frames (see the module docstring)."""

    def __init__(self, min_iou: float = TRACK_IOU, memory: int = TRACK_MEMORY, first_id: int = 1) -> None:
        self.min_iou, self.memory = min_iou, memory
        self.next_id = first_id
        self.tracks: list[_Track] = []

    def update(self, ids: np.ndarray, labels: dict[int, int]) -> dict[int, int]:
        """The track id of each object of this frame: {id in `ids`: track id}; `labels` gives each id's class."""
        shapes = _shapes(ids, labels)
        numbers = sorted(shapes)
        rows, cols = _assignment([shapes[n] for n in numbers], [t.shape for t in self.tracks], self.min_iou)
        matched = {numbers[r]: self.tracks[c] for r, c in zip(rows, cols)}
        mapping: dict[int, int] = {}
        for number in numbers:
            track = matched.get(number)
            if track is None:
                track = _Track(self.new_id(), shapes[number])
                self.tracks.append(track)
            mapping[number] = track.id
        self._advance({mapping[n]: shapes[n] for n in numbers})
        return mapping

    def restore(self, ids: np.ndarray, labels: dict[int, int]) -> None:
        """A frame whose ids are track ids already (a resumed run reads back what it wrote): the state moves on as
        if `update` had given them."""
        shapes = _shapes(ids, labels)
        known = {t.id for t in self.tracks}
        for number, shape in shapes.items():
            if number not in known:
                self.tracks.append(_Track(number, shape))
        self.next_id = max([self.next_id, *(n + 1 for n in shapes)])
        self._advance(shapes)

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def _advance(self, seen: dict[int, _Shape]) -> None:
        """Seen tracks take their new shape; the others age, and are forgotten after `memory` frames."""
        kept = []
        for track in self.tracks:
            if track.id in seen:
                track.shape, track.missed = seen[track.id], 0
            else:
                track.missed += 1
            if track.missed <= self.memory:
                kept.append(track)
        self.tracks = kept


def _shapes(ids: np.ndarray, labels: dict[int, int]) -> dict[int, _Shape]:
    """Every object of an id map, cut to its box."""
    largest = int(ids.max(initial=0))
    present = sorted(int(n) for n in labels if 0 < n <= largest)
    if not present:
        return {}
    lookup = np.zeros(largest + 1, np.int32)  # ids -> 1..K: track ids grow large, and the boxes count per id
    lookup[present] = np.arange(1, len(present) + 1)
    boxes = id_map_boxes(lookup[ids], len(present))
    shapes = {}
    for number, (x0, y0, x1, y1) in zip(present, boxes.tolist()):
        if x1 <= x0 or y1 <= y0:  # no pixel in this map (an object another covers entirely)
            continue
        crop = ids[y0:y1, x0:x1] == number
        shapes[number] = _Shape(int(labels[number]), (y0, x0, y1, x1), crop, int(crop.sum()))
    return shapes


def mask_iou(a: _Shape, b: _Shape) -> float:
    """IoU of two cropped masks, from the overlap of their boxes only."""
    y0, x0 = max(a.box[0], b.box[0]), max(a.box[1], b.box[1])
    y1, x1 = min(a.box[2], b.box[2]), min(a.box[3], b.box[3])
    if y1 <= y0 or x1 <= x0:
        return 0.0
    inter = int(np.count_nonzero(a.crop[y0 - a.box[0] : y1 - a.box[0], x0 - a.box[1] : x1 - a.box[1]]
                                 & b.crop[y0 - b.box[0] : y1 - b.box[0], x0 - b.box[1] : x1 - b.box[1]]))
    return inter / (a.area + b.area - inter) if inter else 0.0


def _assignment(objects: list[_Shape], tracks: list[_Shape], min_iou: float) -> tuple[list[int], list[int]]:
    """Row (object) and column (track) indices of the optimal one-to-one matching by IoU, pairs below min_iou out."""
    from scipy.optimize import linear_sum_assignment  # here: scipy takes a while to import, and only --track needs it

    if not objects or not tracks:
        return [], []
    iou = np.zeros((len(objects), len(tracks)))
    boxes = np.array([t.box for t in tracks])
    for r, shape in enumerate(objects):
        y0, x0, y1, x1 = shape.box
        near = np.flatnonzero((boxes[:, 0] < y1) & (boxes[:, 2] > y0) & (boxes[:, 1] < x1) & (boxes[:, 3] > x0))
        for c in near.tolist():
            if tracks[c].label == shape.label:
                iou[r, c] = mask_iou(shape, tracks[c])
    rows, cols = linear_sum_assignment(iou, maximize=True)
    keep = (iou[rows, cols] >= min_iou) & (iou[rows, cols] > 0)
    return rows[keep].tolist(), cols[keep].tolist()
