"""`segcli measure`: the objects table of label images that already exist (no model).

A label image is one of (`kind`, or recognised by `auto`):
- instance: one integer id per object (0 = none), grey PNG or TIFF of any integer depth (segcli's
  instance/ PNGs, an idmap dataset's instances/, Cellpose's or StarDist's label images);
- semantic: class indices (a palette PNG is read as semantic by `auto`); each 4-connected region of a
  thing class is one object;
- panoptic: a COCO panoptic PNG (RGB, id = R + 256 G + 256^2 B); every segment is one object.

Classes: from `segcli predict`'s folder when the label image lies in one (<out>/<mode>/<stem>.png:
instances.json gives each instance id its class and score, panoptic.json each segment's, and
categories.json the names), from a panoptic json named like the PNG folder (panopticapi's
convention), else `classes` (classes.txt), else one class "object" (instance, panoptic) or class0..N.

Intensities: the image of the same stem in `images` (any image format, its stored values).
The service never prints: it reports each label file through `callback("image", record=...)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segcli import io, outputs, regions
from segcli.data.classes import from_coco_categories, parse_classes_txt
from segcli.errors import DataError, SegcliError, UsageError
from segcli.structures import LabelSpace, Mode

Callback = Callable[..., None]
KINDS = ("auto", "instance", "semantic", "panoptic")
OBJECT_SPACE = LabelSpace(["background", "object"], isthing=[False, True])  # labels that name no class


@dataclass
class MeasureConfig:
    labels: list[str]  # label images: files, folders, quoted globs, "-" (paths on stdin)
    images: Path | None = None  # folder of the intensity images, matched by stem (or the one image of one label)
    kind: str = "auto"  # auto | instance | semantic | panoptic
    classes: Path | None = None  # classes.txt: names (and thing flags) in index order
    pixel_size: float | None = None  # µm per pixel: lengths and areas also in µm and µm²
    out: Path | None = Path("objects.csv")  # .csv or .parquet; None: only return the rows
    recursive: bool = False


@dataclass
class MeasureSummary:
    rows: list[dict] = field(default_factory=list)
    measured: int = 0  # label images measured
    failed: list[dict] = field(default_factory=list)  # {"input", "error"} per label image that failed
    out: Path | None = None


def measure_objects(config: MeasureConfig, callback: Callback | None = None) -> MeasureSummary:
    """Measure every label image; failed ones are reported (summary.failed), the others written to config.out."""
    notify = callback if callback is not None else (lambda *a, **k: None)
    if config.kind not in KINDS:
        raise UsageError(f"--kind {config.kind}: choose one of {', '.join(KINDS)}")
    regions.check_pixel_size(config.pixel_size)
    if config.out is not None and Path(config.out).suffix.lower() == ".parquet" and not regions.parquet_available():
        raise UsageError(f"--out {config.out}: Parquet needs pyarrow (pip install pyarrow); or name a .csv file")
    paths = io.expand_inputs(config.labels, recursive=config.recursive)
    if not paths:
        raise UsageError("no label images: give files, folders, quoted globs or - (paths on stdin)")
    if config.images is not None and not Path(config.images).exists():
        raise UsageError(f"--images {config.images}: no such folder")
    if config.images is not None and Path(config.images).is_file() and len(paths) > 1:
        raise UsageError(f"--images {config.images} is one image but {len(paths)} label images were given; "
                         "pass the folder of the images")
    if config.classes is not None and not Path(config.classes).is_file():
        raise UsageError(f"--classes {config.classes}: no such file (one class name per line, in index order)")
    classes = parse_classes_txt(config.classes) if config.classes is not None else None
    summary = MeasureSummary(out=config.out)
    for path, stem in zip(paths, io.unique_stems(paths)):
        try:
            rows = _measure_one(path, stem, config, classes)
        except SegcliError as error:
            message = str(error) if str(path) in str(error) else f"{path}: {error}"
            summary.failed.append({"input": str(path), "error": message})
            notify("image", record={"input": str(path), "ok": False, "error": message})
            continue
        summary.rows += rows
        summary.measured += 1
        notify("image", record={"input": str(path), "ok": True, "objects": regions.class_counts(rows)})
    if config.out is not None:
        regions.write_table(config.out, summary.rows)
    return summary


def _measure_one(path: Path, stem: str, config: MeasureConfig, classes: LabelSpace | None) -> list[dict]:
    values = io.read_label_png(path)
    kind = config.kind if config.kind != "auto" else _kind(path, values)
    objects, space = _objects(path, values, kind, classes)
    intensities = None
    if config.images is not None:
        image = _image_of(Path(config.images), path)
        intensities = io.read_intensities(image)
        if intensities.shape[:2] != objects.ids.shape:
            raise DataError(f"{path}: {objects.ids.shape[1]}x{objects.ids.shape[0]} px, but its image {image} is "
                            f"{intensities.shape[1]}x{intensities.shape[0]}")
    return regions.measure(objects, space, stem, intensities, config.pixel_size)


def _kind(path: Path, values: np.ndarray) -> str:
    if values.ndim == 3:
        return "panoptic"
    # Class indices are what palette PNGs hold (segcli's semantic PNGs, VOC's); other grey images hold ids.
    return "semantic" if path.suffix.lower() == ".png" and io.read_palette(path) is not None else "instance"


def _image_of(images: Path, labels: Path) -> Path:
    """The intensity image of a label image: --images itself (a file), or its file of the same stem."""
    if images.is_file():
        return images
    found = sorted(p for p in images.glob(f"{labels.stem}.*") if p.suffix.lower() in io.IMAGE_EXTENSIONS)
    if not found:
        raise DataError(f"{labels}: no image {labels.stem}.* in --images {images}")
    return found[0]


def _objects(path: Path, values: np.ndarray, kind: str, classes: LabelSpace | None
             ) -> tuple[regions.Objects, LabelSpace]:
    if kind == "panoptic":
        if values.ndim != 3:
            raise DataError(f"{path}: a panoptic PNG is RGB (id = R + 256 G + 256^2 B); this one has one channel")
        return _panoptic(path, io.read_panoptic_png(path), classes)
    if values.ndim != 2:
        raise DataError(f"{path}: {kind} labels have one channel; this image has {values.shape[2]} "
                        "(use --kind panoptic)")
    if np.issubdtype(values.dtype, np.floating):
        if not np.array_equal(values, np.round(values)):
            raise DataError(f"{path}: labels are whole numbers; this image holds fractions")
        values = values.astype(np.int64)
    if values.min(initial=0) < 0:
        raise DataError(f"{path}: labels are 0 or more; this image holds {int(values.min())}")
    if kind == "semantic":
        space = classes or _predict_categories(path) or _numbered(values)
        return regions.components(values, space), space
    return _instances(path, values, classes)


def _predict_folder(path: Path, mode: str) -> Path | None:
    """The `segcli predict --out` folder a label PNG lies in (<out>/<mode>/<stem>.png), or None."""
    folder = path.parent.parent
    return folder if path.parent.name == mode and (folder / outputs.CATEGORIES).is_file() else None


def _predict_categories(path: Path) -> LabelSpace | None:
    folder = _predict_folder(path, Mode.SEMANTIC)
    return from_coco_categories(outputs.read_categories(folder), panoptic=True) if folder else None


def _numbered(values: np.ndarray) -> LabelSpace:
    count = int(values.max(initial=0)) + 1
    return LabelSpace([f"class{i}" for i in range(count)], isthing=[i > 0 for i in range(count)])


def _instances(path: Path, ids: np.ndarray, classes: LabelSpace | None) -> tuple[regions.Objects, LabelSpace]:
    present = [int(v) for v in np.unique(ids) if v != 0]
    folder = _predict_folder(path, Mode.INSTANCE)
    results = outputs.read_instance_results(folder).get(path.stem, []) if folder else []
    if folder and len(results) == len(present):  # ids 1..N are the image's results in order (descending score)
        space = from_coco_categories(outputs.read_categories(folder), panoptic=True)
        labels = {n: space.index_of_category(r["category_id"]) for n, r in enumerate(results, 1)}
        return regions.Objects(ids, labels, {n: float(r["score"]) for n, r in enumerate(results, 1)}), space
    space = classes if classes is not None and classes.thing_indices else OBJECT_SPACE
    return regions.Objects(ids, {i: space.thing_indices[0] for i in present}), space


def _panoptic(path: Path, ids: np.ndarray, classes: LabelSpace | None) -> tuple[regions.Objects, LabelSpace]:
    """Segments named by predict's panoptic.json, or by the json named like the PNG folder (panopticapi)."""
    for json_path in (path.parent.parent / outputs.AGGREGATES[Mode.PANOPTIC], path.parent.with_suffix(".json")):
        if json_path.is_file():
            data = outputs.json_with(json_path, "annotations")
            annotation = {outputs.image_key(a): a for a in data["annotations"]}.get(path.stem)
            categories = data.get("categories")
            if annotation is not None and categories:
                space = from_coco_categories(categories, panoptic=True)
                infos = annotation["segments_info"]
                labels = {int(s["id"]): space.index_of_category(s["category_id"]) for s in infos}
                scores = {int(s["id"]): float(s["score"]) for s in infos if s.get("score") is not None}
                return regions.Objects(ids, labels, scores), space
    space = classes if classes is not None and classes.thing_indices else OBJECT_SPACE
    present = [int(v) for v in np.unique(ids) if v != 0]
    return regions.Objects(ids, {i: space.thing_indices[0] for i in present}), space
