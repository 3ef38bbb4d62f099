"""Polygons from masks, and masks from polygons, on one convention: pixel-edge coordinates.

The pixel in row r, column c covers x in [c, c + 1) and y in [r, r + 1) (ImageJ's, QuPath's and
YOLO's convention once normalised), so its centre is (c + 0.5, r + 0.5). A polygon covers the pixels
whose centres lie inside it (even-odd rule), as MATLAB's poly2mask and ImageJ's polygon filler do;
`cv2.fillPoly` would add every pixel its outline touches (objects come out a boundary ring larger).

`mask_polygons` traces the outline along the pixel edges ("crack" contours) with OpenCV's contour
finder, so `fill_rings(mask_polygons(mask))` gives the mask back exactly, holes and one-pixel
objects included.
"""

from __future__ import annotations

import cv2
import numpy as np

Ring = np.ndarray  # (N, 2) float64 x, y vertices in pixel-edge coordinates; closed implicitly (last joins first)
Polygon = list  # [outer ring, *hole rings]


def mask_polygons(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[Polygon]:
    """The polygons [outer, *holes] of a boolean mask (one per 8-connected part), along its pixel edges.

    Outer rings and holes turn opposite ways, so both the even-odd and the non-zero rule fill them right.
    `offset` (x, y) is added to every vertex: the mask may be a crop of a larger image.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return []
    # Traced inside the object's box only: the doubled mask below costs 4 bytes per pixel of what it covers.
    mask = mask[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
    offset = (offset[0] + int(cols[0]), offset[1] + int(rows[0]))
    # Traced on the mask at twice the resolution, each traced pixel is one half of a pixel, and the pixel edge on
    # that half's side is (half + 1) // 2: the contour finder's chain of pixel centres becomes the crack outline.
    # The padding (one half-pixel all round, so objects on the border are closed) shifts indices by one: index // 2.
    doubled = np.pad(np.repeat(np.repeat(mask.astype(np.uint8), 2, axis=0), 2, axis=1), 1)
    contours, hierarchy = cv2.findContours(doubled, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return []
    rings = [_ring(contour[:, 0, :].astype(np.int64) // 2 + offset) for contour in contours]
    polygons: dict[int, Polygon] = {}
    for index, (_next, _prev, _child, parent) in enumerate(hierarchy[0]):
        if parent < 0:
            polygons.setdefault(index, []).insert(0, rings[index])
        else:
            polygons.setdefault(int(parent), []).append(rings[index])
    return [polygon for _, polygon in sorted(polygons.items())]


def _ring(points: np.ndarray) -> Ring:
    """Vertices without repeats and without the middle points of straight runs."""
    points = points[np.any(points != np.roll(points, 1, axis=0), axis=1)]
    if len(points) > 2:
        before, after = np.roll(points, 1, axis=0), np.roll(points, -1, axis=0)
        turn = (points[:, 0] - before[:, 0]) * (after[:, 1] - points[:, 1]) - \
            (points[:, 1] - before[:, 1]) * (after[:, 0] - points[:, 0])
        points = points[turn != 0]
    return points.astype(np.float64)


def fill_rings(rings: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """A boolean (H, W) mask of the pixels whose centres lie inside the rings (even-odd rule).

    Each edge is crossed from its lower end, so an edge walked both ways (a YOLO bridge between rings)
    cancels exactly; vertices outside the image are fine (the mask is clipped).
    """
    height, width = shape
    rows, crossings = [], []
    for ring in rings:
        start = np.asarray(ring, np.float64).reshape(-1, 2)
        end = np.roll(start, -1, axis=0)
        low = np.where((start[:, 1] <= end[:, 1])[:, None], start, end)
        high = np.where((start[:, 1] <= end[:, 1])[:, None], end, start)
        # Row r's centre line y = r + 0.5 crosses an edge when low.y <= r + 0.5 < high.y.
        first = np.clip(np.ceil(low[:, 1] - 0.5), 0, height).astype(np.int64)
        last = np.clip(np.ceil(high[:, 1] - 0.5), 0, height).astype(np.int64)
        counts = np.maximum(last - first, 0)
        edge = np.repeat(np.arange(len(start)), counts)
        row = np.repeat(first, counts) + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        slope = (high[edge, 0] - low[edge, 0]) / (high[edge, 1] - low[edge, 1])
        rows.append(row)
        crossings.append(low[edge, 0] + (row + 0.5 - low[edge, 1]) * slope)
    mask = np.zeros((height, width + 1), np.int32)
    if rows:
        row, x = np.concatenate(rows), np.concatenate(crossings)
        order = np.lexsort((x, row))
        row, x = row[order], x[order]
        # Crossings pair up along each row (even-odd): a pixel is inside when its centre x + 0.5 lies in [left, right).
        column = np.clip(np.ceil(x - 0.5), 0, width).astype(np.int64)
        np.add.at(mask, (row[0::2], column[0::2]), 1)
        np.add.at(mask, (row[1::2], column[1::2]), -1)
    return np.cumsum(mask, axis=1)[:, :width] > 0


def fill_polygons(polygons: list[Polygon], shape: tuple[int, int]) -> np.ndarray:
    """The mask of polygons [outer, *holes] (pixel centres inside, even-odd rule)."""
    return fill_rings([ring for polygon in polygons for ring in polygon], shape)


def merged_ring(polygons: list[Polygon]) -> Ring:
    """One ring that fills like all the rings of `polygons` (even-odd): each further ring is joined to the
    ring so far by a zero-width bridge walked there and back, as Ultralytics joins a COCO object's parts
    into one YOLO polygon. Holes stay holes."""
    rings = [ring for polygon in polygons for ring in polygon]
    if not rings:
        return np.zeros((0, 2))
    merged = rings[0]
    for ring in rings[1:]:
        distance = ((merged[:, None, :] - ring[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(distance.argmin()), distance.shape)
        merged = np.concatenate([merged[: i + 1], ring[j:], ring[: j + 1], merged[i:]])
    return merged
