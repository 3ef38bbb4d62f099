"""Objects as the files other tools open (predict --export): QuPath GeoJSON, ImageJ ROI sets, YOLO polygons.

Every format gets the same polygons: the objects' pixel-edge outlines (segcli.polygons), which
filled by pixel centre give each object's mask back. Coordinates are pixels of the image, origin at
its top-left corner.

- geojson: a FeatureCollection QuPath imports (File > Import objects): one Feature per object,
  Polygon or MultiPolygon (holes kept), `objectType` "detection", `classification` {name, color},
  `measurements` (the objects.csv row's numbers);
- imagej: a ROI set (.zip) Fiji's ROI Manager opens, written with roifile: one ROI per object named
  "<class> <id>", in its class colour (a traced polygon; a composite shape when it has holes or parts);
- yolo: one line per thing object, `class x1 y1 x2 y2 ...` normalised by the image size (Ultralytics'
  segment format); an object's holes and parts are joined into one polygon by zero-width bridges.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from segcli.errors import UsageError
from segcli.io import atomic_path
from segcli.polygons import Polygon, mask_polygons, merged_ring
from segcli.regions import Objects
from segcli.structures import LabelSpace

EXPORT_FORMATS = ("geojson", "imagej", "yolo")
SUFFIXES = {"geojson": ".geojson", "imagej": ".zip", "yolo": ".txt"}
# What the table holds beside the numbers QuPath shows as measurements.
NOT_MEASUREMENTS = ("image", "id", "class", "class_id", "is_thing")


def parse_exports(values: list[str] | str | None) -> tuple[str, ...]:
    """--export geojson,imagej,yolo (commas or repeats) -> the formats in EXPORT_FORMATS order; unknown names
    refused."""
    if not values:
        return ()
    words = [w.strip().lower() for value in ([values] if isinstance(values, str) else values) for w in value.split(",")]
    unknown = [w for w in words if w and w not in EXPORT_FORMATS]
    if unknown:
        raise UsageError(f"--export {unknown[0]}: choose any of {', '.join(EXPORT_FORMATS)} (comma-separated)")
    return tuple(f for f in EXPORT_FORMATS if f in words)


def object_polygons(objects: Objects) -> dict[int, list[Polygon]]:
    """Each object's polygons [outer, *holes], traced inside its bounding box."""
    from scipy.ndimage import find_objects

    polygons = {}
    boxes = find_objects(objects.ids)
    for object_id in objects.ordered_ids():
        box = boxes[object_id - 1] if 0 < object_id <= len(boxes) else None
        if box is None:
            continue
        rows, cols = box
        polygons[object_id] = mask_polygons(objects.ids[box] == object_id, offset=(cols.start, rows.start))
    return polygons


def write(fmt: str, path: Path, objects: Objects, polygons: dict[int, list[Polygon]], space: LabelSpace,
          rows: list[dict], shape: tuple[int, int]) -> Path:
    """Write one image's objects in one format (an image without objects gives a valid empty file)."""
    if fmt == "geojson":
        return _write_text(path, json.dumps(geojson(objects, polygons, space, rows)))
    if fmt == "imagej":
        return write_imagej(path, objects, polygons, space)
    return _write_text(path, yolo_lines(objects, polygons, space, shape))


def _write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(path)


# ---------------------------------------------------------------- GeoJSON (QuPath)


def _closed(ring: np.ndarray, outer: bool) -> list[list[float]]:
    """A GeoJSON ring: closed (last = first), exterior counter-clockwise and holes clockwise (RFC 7946)."""
    x, y = ring[:, 0], ring[:, 1]
    area = float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))
    if (area > 0) != outer:
        ring = ring[::-1]
    closed = np.vstack([ring, ring[:1]])
    if np.array_equal(closed, np.round(closed)):  # pixel corners: whole numbers, written without ".0"
        return closed.astype(np.int64).tolist()
    return closed.astype(np.float64).tolist()


def geometry(polygons: list[Polygon]) -> dict:
    """A Polygon (one part) or MultiPolygon geometry, holes kept."""
    parts = [[_closed(ring, index == 0) for index, ring in enumerate(polygon)] for polygon in polygons]
    if len(parts) == 1:
        return {"type": "Polygon", "coordinates": parts[0]}
    return {"type": "MultiPolygon", "coordinates": parts}


def geojson(objects: Objects, polygons: dict[int, list[Polygon]], space: LabelSpace, rows: list[dict]) -> dict:
    """A FeatureCollection of detections, as QuPath writes and reads them."""
    by_id = {row["id"]: row for row in rows}
    features = []
    for object_id, parts in polygons.items():
        label = objects.labels[object_id]
        row = by_id.get(object_id, {})
        properties = {"objectType": "detection", "name": f"{space.names[label]} {object_id}",
                      "classification": {"name": space.names[label], "color": list(space.colors[label])},
                      "measurements": {k: v for k, v in row.items()
                                       if k not in NOT_MEASUREMENTS and isinstance(v, (int, float))}}
        features.append({"type": "Feature", "geometry": geometry(parts), "properties": properties})
    return {"type": "FeatureCollection", "features": features}


# ---------------------------------------------------------------- ImageJ ROI set (Fiji's ROI Manager)


def imagej_roi(polygons: list[Polygon], name: str, color: tuple[int, int, int]):
    """One ROI: a traced polygon (integer pixel-edge vertices, as ImageJ's wand makes), or a composite shape
    (a path ImageJ fills by the even-odd rule) for an object with holes or several parts."""
    from roifile import ROI_TYPE, ImagejRoi

    rings = [ring for polygon in polygons for ring in polygon]
    if len(rings) == 1:
        roi = ImagejRoi.frompoints(rings[0].astype(np.int32), name=name)
        roi.roitype = ROI_TYPE.TRACED
    else:
        path: list[float] = []
        for ring in rings:  # MOVETO x y, LINETO x y ..., CLOSE (java.awt.geom.PathIterator's codes)
            path += [0, *ring[0]]
            for x, y in ring[1:]:
                path += [1, x, y]
            path.append(4)
        points = np.concatenate(rings)
        roi = ImagejRoi.frompoints(points.astype(np.int32), name=name)  # the bounds
        roi.roitype, roi.integer_coordinates, roi.n_coordinates = ROI_TYPE.RECT, None, 0
        roi.multi_coordinates = np.array(path, np.float32)
        roi.shape_roi_size = len(path)
    roi.stroke_color = bytes([255, *color])  # ARGB
    return roi


def write_imagej(path: Path, objects: Objects, polygons: dict[int, list[Polygon]], space: LabelSpace) -> Path:
    import zipfile

    from roifile import roiwrite

    rois = [imagej_roi(parts, f"{space.names[objects.labels[i]]} {i}", space.colors[objects.labels[i]])
            for i, parts in polygons.items()]
    with atomic_path(path) as tmp:
        if rois:
            roiwrite(tmp, rois, mode="w")
        else:  # an empty ROI set: a valid zip with no entries
            zipfile.ZipFile(tmp, "w").close()
    return Path(path)


# ---------------------------------------------------------------- YOLO segments (Ultralytics)


def yolo_classes(space: LabelSpace) -> list[str]:
    """YOLO class i is the i-th thing class (stuff has no objects in YOLO's format)."""
    return [space.names[i] for i in space.thing_indices]


def yolo_line(number: int, polygons: list[Polygon], shape: tuple[int, int]) -> str:
    """`class x1 y1 x2 y2 ...`: one object's rings joined into one, divided by the image's width and height."""
    height, width = shape
    ring = merged_ring(polygons) / (width, height)
    return " ".join([str(number), *(f"{v:.6f}" for v in ring.ravel())])


def yolo_lines(objects: Objects, polygons: dict[int, list[Polygon]], space: LabelSpace, shape: tuple[int, int]) -> str:
    """One line per thing object (stuff has no place in YOLO's format)."""
    number = {label: n for n, label in enumerate(space.thing_indices)}
    lines = [yolo_line(number[objects.labels[i]], parts, shape) for i, parts in polygons.items()
             if objects.labels[i] in number]
    return "".join(line + "\n" for line in lines)


def yolo_data_yaml(space: LabelSpace) -> str:
    """data.yaml beside labels/: Ultralytics trains on it once images/ holds the images; segcli reads its names."""
    names = "".join(f"  {n}: {json.dumps(name, ensure_ascii=False)}\n" for n, name in enumerate(yolo_classes(space)))
    return f"path: .\ntrain: images\nval: images\nnames:\n{names}"
