"""Per-object measurements: one row per object of a label image (predict --measure, segcli measure).

The measurements are scikit-image's `regionprops_table`, named as the table's columns (`table_columns`).
Positions share the polygons' and COCO boxes' coordinates: the image's top-left corner is (0, 0) and
pixel (row r, column c) spans [c, c + 1) x [r, r + 1), so a centroid is scikit-image's plus 0.5.
Intensities are measured on the image's stored values (a 16-bit image's counts), channel by channel.
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np

from segcli.errors import DataError, UsageError
from segcli.structures import IGNORE_INDEX, LabelSpace

# Column -> its regionprops_table property, in table order; positions are converted to pixel-edge coordinates.
SHAPE_COLUMNS = {
    "area": "area", "centroid_x": "centroid-1", "centroid_y": "centroid-0",
    "bbox_x": "bbox-1", "bbox_y": "bbox-0", "bbox_w": "bbox-3", "bbox_h": "bbox-2",  # width, height: end - start
    "perimeter": "perimeter", "equivalent_diameter": "equivalent_diameter_area",
    "major_axis": "axis_major_length", "minor_axis": "axis_minor_length",
    "eccentricity": "eccentricity", "solidity": "hull_solidity", "orientation": "orientation",
}
PROPERTIES = ("label", "area", "centroid", "bbox", "perimeter", "equivalent_diameter_area", "axis_major_length",
              "axis_minor_length", "eccentricity", "orientation")  # solidity: hull_solidity, below
INTENSITY_STATISTICS = ("mean", "std", "min", "max")  # then "integrated": mean x area, the sum of the values
# With --pixel-size: lengths in µm and areas in µm², beside the pixel values.
LENGTHS = ("centroid_x", "centroid_y", "perimeter", "equivalent_diameter", "major_axis", "minor_axis")
ID_COLUMNS = ("image", "id", "class", "class_id", "is_thing", "score")


@dataclass
class Objects:
    """The objects of one image: a label image (0 = none) and, per id, its class index and score."""

    ids: np.ndarray  # (H, W) integer ids
    labels: dict[int, int]  # id -> class index of the LabelSpace
    scores: dict[int, float] = field(default_factory=dict)  # id -> score, when the model gave one

    def ordered_ids(self) -> list[int]:
        return sorted(self.labels)


def components(classmap: np.ndarray, space: LabelSpace) -> Objects:
    """The objects of a class-index map: each 4-connected region of a thing class (as segcli's datasets derive
    instances from semantic labels); stuff classes and 255 (ignore) are no objects."""
    ids = np.zeros(classmap.shape, np.int32)
    labels: dict[int, int] = {}
    for label in space.thing_indices:
        if label == IGNORE_INDEX:
            continue
        count, parts = cv2.connectedComponents((classmap == label).astype(np.uint8), connectivity=4, ltype=cv2.CV_32S)
        if count > 1:
            first = len(labels)
            inside = parts > 0
            ids[inside] = parts[inside] + first
            labels.update({first + n: label for n in range(1, count)})
    return Objects(ids, labels)


def check_pixel_size(pixel_size: float | None) -> None:
    if pixel_size is not None and not pixel_size > 0:
        raise UsageError(f"--pixel-size {pixel_size}: must be above 0 (the side of a pixel in µm, e.g. 0.25)")


def measure(objects: Objects, space: LabelSpace, image_id: str, intensities: np.ndarray | None = None,
            pixel_size: float | None = None) -> list[dict]:
    """One row per object (`table_columns`' keys): class, score, shape from regionprops_table, and for each channel
    of `intensities` ((H, W) or (H, W, C), the image's stored values) mean, std, min, max and integrated."""
    from skimage.measure import regionprops_table

    ids = objects.ids
    present = [i for i in objects.ordered_ids() if i > 0]
    if not present:
        return []
    if not np.isin(np.unique(ids), [0, *present]).all():
        ids = np.where(np.isin(ids, present), ids, 0)  # ids without a class (unlisted segments) are no objects
    channels = _channels(intensities, ids.shape)
    table = regionprops_table(ids, properties=PROPERTIES, extra_properties=(hull_solidity,))
    if channels is not None:
        table |= _intensity_table(ids, channels, table["label"])
    rows = []
    for i, object_id in enumerate(table["label"].tolist()):
        label = objects.labels[object_id]
        row = {"image": image_id, "id": int(object_id), "class": space.names[label],
               "class_id": int(space.category_ids[label]), "is_thing": bool(space.isthing[label]),
               "score": float(objects.scores[object_id]) if object_id in objects.scores else None}
        row.update(_shape(table, i))
        if channels is not None:
            row.update(_intensity(table, i, channels))
        if pixel_size is not None:
            row.update(_in_microns(row, pixel_size))
        rows.append(row)
    return rows


# The edge midpoints of a pixel, in half pixels from its centre: the points scikit-image's convex hull starts from.
DIAMOND = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]], np.int32)


def hull_solidity(region: np.ndarray) -> float:
    """scikit-image's `solidity` (the object's area over the pixels of `convex_hull_image`) with the hull found by
    OpenCV: qhull's set-up for each object was half of regionprops_table's time. The same points (the edge midpoints
    of the outline's pixels, in half pixels so they are whole numbers), so the same polygon and the same pixels in it;
    tests/test_regions.py compares the two."""
    from skimage.measure import grid_points_in_poly

    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    centres = np.concatenate(contours).reshape(-1, 2) * 2  # (x, y) of every outline pixel, in half pixels
    hull = cv2.convexHull((centres[:, None, :] + DIAMOND).reshape(-1, 2)).reshape(-1, 2)
    inside = grid_points_in_poly(region.shape, hull[:, ::-1] / 2.0, binarize=False)  # vertices and edges count
    return np.count_nonzero(region) / np.count_nonzero(inside)


def _channels(intensities: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    if intensities is None:
        return None
    if intensities.shape[:2] != shape:
        raise DataError(f"the image is {intensities.shape[1]}x{intensities.shape[0]} px, "
                        f"its labels {shape[1]}x{shape[0]}")
    return intensities


def _shape(table: dict, i: int) -> dict:
    x0, y0 = int(table["bbox-1"][i]), int(table["bbox-0"][i])
    computed = {"bbox_x": x0, "bbox_y": y0,
                "bbox_w": int(table["bbox-3"][i]) - x0, "bbox_h": int(table["bbox-2"][i]) - y0,
                "area": int(table["area"][i]),
                # pixel centres lie half a pixel from their edges
                "centroid_x": float(table["centroid-1"][i]) + 0.5, "centroid_y": float(table["centroid-0"][i]) + 0.5}
    return {column: computed[column] if column in computed else float(table[prop][i])
            for column, prop in SHAPE_COLUMNS.items()}


def _intensity_table(ids: np.ndarray, channels: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """regionprops_table's intensity_mean, _std, _min and _max columns (`-C` per channel) for the objects `labels`
    (ascending, as regionprops_table orders them): the objects' pixels sorted by id once, then each statistic of
    every object in one numpy reduction. scikit-image cuts every object out once per statistic and channel, which
    was half of the measuring time on the DSB test images."""
    flat_ids = ids.ravel()
    inside = np.flatnonzero(flat_ids)
    order = inside[np.argsort(flat_ids[inside], kind="stable")]
    starts = np.searchsorted(flat_ids[order], labels)  # every label is present: regionprops_table found it
    counts = np.diff(np.append(starts, order.size))
    planes = channels.reshape(ids.size, -1)
    table = {}
    for channel in range(planes.shape[1]):
        suffix = f"-{channel}" if channels.ndim == 3 else ""
        values = planes[order, channel].astype(np.float64)  # float64 sums, as numpy's per-object mean and std
        mean = np.add.reduceat(values, starts) / counts
        deviations = (values - np.repeat(mean, counts)) ** 2  # centred, as np.std: no cancellation on large counts
        std = np.sqrt(np.add.reduceat(deviations, starts) / counts)
        table |= {f"intensity_mean{suffix}": mean, f"intensity_std{suffix}": std,
                  f"intensity_min{suffix}": np.minimum.reduceat(values, starts),
                  f"intensity_max{suffix}": np.maximum.reduceat(values, starts)}
    return table


def _intensity(table: dict, i: int, channels: np.ndarray) -> dict:
    row = {}
    whole = np.issubdtype(channels.dtype, np.integer)  # an integer image's minimum and maximum are its own counts
    for channel in range(channels.shape[2] if channels.ndim == 3 else 1):
        suffix = f"-{channel}" if channels.ndim == 3 else ""
        for statistic in INTENSITY_STATISTICS:
            value = float(table[f"intensity_{statistic}{suffix}"][i])
            row[f"ch{channel}_{statistic}"] = int(value) if whole and statistic in ("min", "max") else value
        integrated = row[f"ch{channel}_mean"] * int(table["area"][i])  # the sum of the object's values
        row[f"ch{channel}_integrated"] = round(integrated) if whole else integrated
    return row


def _in_microns(row: dict, pixel_size: float) -> dict:
    microns = {"area_um2": row["area"] * pixel_size**2}
    microns.update({f"{column}_um": row[column] * pixel_size for column in LENGTHS})
    return microns


def class_counts(rows: list[dict]) -> dict[str, int]:
    """Objects per class name, in order of first appearance."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["class"]] = counts.get(row["class"], 0) + 1
    return counts


def table_columns(rows: list[dict]) -> list[str]:
    """The columns of a table of rows: identity, shape, µm (when given), then channels in order (images of one
    table may differ in channel count; a grey image's rows leave ch1, ch2 empty)."""
    columns = [*ID_COLUMNS, *SHAPE_COLUMNS]
    if any("area_um2" in row for row in rows):
        columns += ["area_um2", *(f"{c}_um" for c in LENGTHS)]
    channels = max((int(key[2:].split("_")[0]) + 1 for row in rows for key in row
                    if key.startswith("ch") and key.endswith("_mean")), default=0)
    for channel in range(channels):
        columns += [f"ch{channel}_{s}" for s in (*INTENSITY_STATISTICS, "integrated")]
    return columns


def parquet_available() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


def write_csv(path: Path, rows: list[dict]) -> Path:
    """The rows as CSV (a header even with no rows: an image without objects is a valid answer)."""
    from segcli.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        write_csv_stream(f, rows)
    return Path(path)


def write_csv_stream(stream: TextIO, rows: list[dict]) -> None:
    writer = csv.DictWriter(stream, table_columns(rows), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def write_parquet(path: Path, rows: list[dict]) -> Path:
    """The rows as Parquet (pyarrow; the same columns as the CSV, typed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from segcli.io import atomic_path

    columns = table_columns(rows)
    table = pa.table({column: [row.get(column) for row in rows] for column in columns}, schema=_schema(columns))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def _schema(columns: list[str]):
    import pyarrow as pa

    kinds = {"image": pa.string(), "class": pa.string(), "id": pa.int64(), "class_id": pa.int64(),
             "is_thing": pa.bool_(), "area": pa.int64(), "bbox_x": pa.int64(), "bbox_y": pa.int64(),
             "bbox_w": pa.int64(), "bbox_h": pa.int64()}
    return pa.schema([(column, kinds.get(column, pa.float64())) for column in columns])


def write_table(path: Path, rows: list[dict]) -> Path:
    """CSV, or Parquet for a .parquet path (which needs pyarrow)."""
    if Path(path).suffix.lower() == ".parquet":
        if not parquet_available():
            raise UsageError(f"{path}: Parquet needs pyarrow (pip install pyarrow); or name a .csv file")
        return write_parquet(path, rows)
    return write_csv(path, rows)
