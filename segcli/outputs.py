"""The `segcli predict --out DIR` folder: its names, the writers of one image's files per mode, and their readers.

    DIR/<mode>/<stem>.png             the label PNG of the mode (class indices, instance ids or panoptic ids)
    DIR/overlays/<stem>.jpg           the image with the prediction drawn on it
    DIR/<mode>/<video>/<frame>.png    a video's frames: stem <video stem>/<frame index, 6 digits>
    DIR/overlays/<video>.mp4          with --save-video, the overlays at the video's frame rate
    DIR/<mode>/<stem>.tif             with --stack, a TIFF stack's labels, a page per plane (overlays/<stem>.tif)
    DIR/instances.json, panoptic.json the mode's COCO aggregate, written from the parts (write_aggregates)
    DIR/categories.json               the label space (COCO categories in class-index order), for every mode
    DIR/objects.csv, objects.parquet  with --measure: one row per object (segcli.regions), from the parts' rows
    DIR/export/<format>/...           with --export: geojson/<stem>.geojson, imagej/<stem>.zip, yolo/labels/<stem>.txt
                                      and yolo/data.yaml (segcli.exports)
    DIR/.parts/<mode>/<stem>.json     written last for each image: an image is done exactly when its part exists

A folder holds the results of one configuration: `claim_out_dir` refuses a run whose settings differ from
those the folder holds (`.parts/run.json`), every part records them too, and the aggregates list every finished
part, so the folder and its json files agree after every run (an interrupted one included: predict writes them
then too).

`predict` writes it, `visualize` reads it back, and both know its names from here only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segcli import draw, exports, io, regions
from segcli.errors import DataError, SegcliError, UsageError
from segcli.structures import (
    IGNORE_INDEX,
    Instance,
    LabelMap,
    LabelSpace,
    Mode,
    Prediction,
    Sample,
    coco_result,
    mask_to_xywh,
)

if TYPE_CHECKING:
    from segcli.tracking import Tracker

AGGREGATES = {Mode.INSTANCE: "instances.json", Mode.PANOPTIC: "panoptic.json"}
PARTS = ".parts"
OVERLAYS = "overlays"
CATEGORIES = "categories.json"  # the label space (COCO categories, in class-index order) for every mode
OBJECTS = "objects"  # objects.csv and objects.parquet
EXPORT = "export"
# Instance colours are per image and name nothing, so predict's instance overlays carry no legend
# (visualize lists the instances when asked).
LEGEND = {Mode.SEMANTIC: True, Mode.INSTANCE: False, Mode.PANOPTIC: True}
RUN = "run.json"  # in PARTS: the settings of the results the folder holds
# Every name predict writes in DIR: what --overwrite removes from a folder segcli wrote (nothing else in it).
OWNED = (PARTS, *(mode.value for mode in Mode), OVERLAYS, CATEGORIES, *AGGREGATES.values(), f"{OBJECTS}.csv",
         f"{OBJECTS}.parquet", EXPORT)


@dataclass(frozen=True)
class Job:
    """One image to predict: a file, a URL's download, a video's frame, or (--stack) a TIFF stack's planes."""

    path: Path  # the file read (a URL's: its download)
    stem: str  # output name: the file stem, made unique over all inputs (io.unique_stems); a frame's <video>/<frame>
    url: str | None = None  # the input's address, when it was one: its name in records and parts
    frame: int | None = None  # a video frame's index...
    time: float | None = None  # ...and its time in the video, seconds (None when the video gives no frame rate)
    stack: bool = False  # predict every plane, write a multi-page TIFF
    error: str | None = None  # why the input cannot be read at all (a failed download, a video FFmpeg cannot open)

    @property
    def name(self) -> str:
        """The input as the user gave it: its path or URL (a frame: its video's)."""
        return self.url or str(self.path)

    @property
    def source(self) -> str:
        """What a part was made from, to tell a resumed run's inputs: the URL, or the file's absolute path."""
        return self.url or os.path.abspath(self.path)

    def position(self) -> dict:
        """A frame's index and time, for its record ({} for other inputs)."""
        return {} if self.frame is None else {"frame": self.frame, "time": self.time}


def frame_stem(stem: str, frame: int) -> str:
    """A video frame's output name: <video stem>/<index>, zero-padded so that files sort in frame order."""
    return f"{stem}/{frame:06d}"


@dataclass(frozen=True)
class ObjectOutputs:
    """What predict writes about each image's objects beside the mode's PNG (predict --measure, --export)."""

    measure: bool = False  # the rows go into the parts; objects.csv (and .parquet) are assembled from them
    exports: tuple[str, ...] = ()  # formats of segcli.exports.EXPORT_FORMATS
    pixel_size: float | None = None  # µm per pixel: lengths and areas in µm too

    @property
    def active(self) -> bool:
        return self.measure or bool(self.exports)

    @property
    def needs_intensities(self) -> bool:
        """The rows' intensity columns are in the table and in the GeoJSON's measurements."""
        return self.measure or "geojson" in self.exports


NO_OBJECTS = ObjectOutputs()


# ---------------------------------------------------------------- names


def label_png(out: Path, mode: str, stem: str) -> Path:
    return Path(out) / mode / f"{stem}.png"


def output_paths(out: Path, stem: str, mode: str, overlay: bool, formats: tuple[str, ...] = (),
                 stack: bool = False) -> dict[str, Path]:
    """The per-image files of a mode, by kind (the mode, "overlay", each export format; a stack's: multi-page TIFFs)."""
    paths = {mode: Path(out) / mode / f"{stem}.tif" if stack else label_png(out, mode, stem)}
    if overlay:
        paths["overlay"] = Path(out) / OVERLAYS / f"{stem}.{'tif' if stack else 'jpg'}"
    for fmt in formats:
        paths[fmt] = export_folder(out, fmt) / f"{stem}{exports.SUFFIXES[fmt]}"
    return paths


def export_folder(out: Path, fmt: str) -> Path:
    """Where an export format's per-image files go (YOLO's in labels/, beside its data.yaml)."""
    folder = Path(out) / EXPORT / fmt
    return folder / "labels" if fmt == "yolo" else folder


def video_path(out: Path, stem: str) -> Path:
    """--save-video: a video's overlays as a video, beside the folder of its frames' overlays."""
    return Path(out) / OVERLAYS / f"{stem}.mp4"


def part_path(out: Path, mode: str, stem: str) -> Path:
    return Path(out) / PARTS / mode / f"{stem}.json"


# ---------------------------------------------------------------- writing one image


def _segment(segment_id: int, label: int, area: int, bbox, space: LabelSpace, score: float | None = None) -> dict:
    entry = {"id": int(segment_id), "category": space.names[label], "category_id": space.category_ids[label],
             "isthing": bool(space.isthing[label]), "area": int(area), "bbox": [float(v) for v in bbox]}
    if score is not None:
        entry["score"] = float(score)
    return entry


def instance_id_map(instances: list[Instance], shape: tuple[int, int]) -> np.ndarray:
    """uint16 ids 1..N in list order (descending score), or their track ids (--track); where masks overlap, the
    better-scored one shows."""
    ids = np.zeros(shape, np.uint16 if max((i.track_id or 0 for i in instances), default=0) < 65536 else np.uint32)
    for number in range(len(instances), 0, -1):  # worst first, so better ones paint over it
        ids[instances[number - 1].mask] = instances[number - 1].track_id or number
    return ids


def ranked_instances(prediction: Prediction) -> list[Instance]:
    """Non-empty instances by descending score: the order of the instance PNG's ids."""
    return sorted((inst for inst in prediction.instances if inst.mask.any()), key=lambda inst: -inst.score)


def _semantic_outputs(path: Path, prediction: Prediction, space: LabelSpace, job: Job,
                      shape: tuple[int, int]) -> tuple[list[dict], None]:
    io.write_class_png(path, prediction.semantic, space.colors)
    return _semantic_entries(prediction.semantic, space), None


def _semantic_entries(labels: np.ndarray, space: LabelSpace) -> list[dict]:
    segments = []
    areas = draw.byte_counts(labels)  # one pass for every class's area (np.unique sorts)
    for label in np.flatnonzero(areas).tolist():
        if label != IGNORE_INDEX:
            segments.append(_segment(label, label, int(areas[label]), mask_to_xywh(labels == label), space))
    return segments


def _instance_outputs(path: Path, prediction: Prediction, space: LabelSpace, job: Job,
                      shape: tuple[int, int]) -> tuple[list[dict], list[dict]]:
    instances = ranked_instances(prediction)
    ids = instance_id_map(instances, shape)
    if ids.dtype != np.uint16:
        raise DataError(f"{path}: track id {int(ids.max())} does not fit a 16-bit instance PNG (at most 65535); "
                        "predict the video in parts, or with --mode panoptic (24-bit ids)")
    io.write_instance_png(path, ids)
    return _instance_entries(instances, space, job.stem, job.path.name)


def _instance_entries(instances: list[Instance], space: LabelSpace, image_id: str, file_name: str
                      ) -> tuple[list[dict], list[dict]]:
    """The record's segments and the COCO results of ranked instances (ids: their track ids, else 1..N)."""
    segments, results = [], []
    for number, inst in enumerate(instances, 1):
        segments.append(_segment(inst.track_id or number, inst.label, inst.area, inst.bbox, space, inst.score))
        tracked = {"track_id": inst.track_id} if inst.track_id else {}
        results.append(coco_result(inst, image_id, space) | {"file_name": file_name} | tracked)
    return segments, results


def _panoptic_outputs(path: Path, prediction: Prediction, space: LabelSpace, job: Job,
                      shape: tuple[int, int]) -> tuple[list[dict], dict]:
    io.write_panoptic_png(path, prediction.panoptic)
    segments, infos = _panoptic_entries(prediction, space)
    # file_name names the PNG in panoptic/, as panopticapi's convention has it.
    return segments, {"image_id": job.stem, "file_name": f"{job.stem}.png", "segments_info": infos}


def _panoptic_entries(prediction: Prediction, space: LabelSpace) -> tuple[list[dict], list[dict]]:
    """The record's segments and the COCO panoptic segments_info of a prediction."""
    segments, infos = [], []
    for s in prediction.segments:
        segments.append(_segment(s.id, s.label, s.area, s.bbox, space, s.score))
        info = {"id": int(s.id), "category_id": space.category_ids[s.label], "area": int(s.area),
                "bbox": [float(v) for v in s.bbox], "iscrowd": 0}
        if s.score is not None:
            info["score"] = float(s.score)
        infos.append(info)
    return segments, infos


# Each writes the mode's PNG and returns the image's segments (the --json record's) and its COCO entry.
WRITERS = {Mode.SEMANTIC: _semantic_outputs, Mode.INSTANCE: _instance_outputs, Mode.PANOPTIC: _panoptic_outputs}


def prediction_labels(prediction: Prediction, mode: str, shape: tuple[int, int], tracked: bool = False) -> LabelMap:
    """The label map of the mode's PNG, as drawn on the overlay."""
    if mode == Mode.SEMANTIC:
        return LabelMap("semantic", prediction.semantic)
    if mode == Mode.INSTANCE:
        return LabelMap("instance", instance_id_map(ranked_instances(prediction), shape), tracked=tracked)
    return LabelMap("panoptic", prediction.panoptic, classes={s.id: s.label for s in prediction.segments},
                    tracked=tracked)


def track_prediction(prediction: Prediction, mode: str, tracker: Tracker, space: LabelSpace,
                     shape: tuple[int, int]) -> Prediction:
    """The prediction with the tracker's ids (predict --track, --stitch): each instance's `track_id`; each panoptic
    thing segment's id is its track id, each stuff segment's its class index + 1 (the tracker counts from above the
    classes: tracker_first_id), so stuff ids are stable too."""
    if mode == Mode.INSTANCE:
        instances = ranked_instances(prediction)
        for inst in instances:
            inst.track_id = None
        ids = instance_id_map(instances, shape)
        mapping = tracker.update(ids, {n: inst.label for n, inst in enumerate(instances, 1)})
        for number, inst in enumerate(instances, 1):
            inst.track_id = mapping.get(number) or tracker.new_id()  # one no pixel of which shows: an id of its own
        return Prediction(semantic=prediction.semantic, instances=instances)
    things = {s.id: s.label for s in prediction.segments if space.isthing[s.label]}
    mapping = tracker.update(prediction.panoptic, things)
    lookup = np.zeros(int(prediction.panoptic.max(initial=0)) + 1, np.int32)
    segments, used = [], set()
    for segment in prediction.segments:
        new_id = mapping.get(segment.id) if segment.id in things else segment.label + 1
        if new_id is None or new_id in used:  # a thing with no pixel left, a second segment of one stuff class
            new_id = tracker.new_id()
        used.add(new_id)
        lookup[segment.id] = new_id
        segments.append(replace(segment, id=new_id))
    return Prediction(semantic=prediction.semantic, panoptic=lookup[prediction.panoptic], segments=segments)


def tracker_first_id(mode: str, space: LabelSpace) -> int:
    """Panoptic stuff segments take ids 1..C (their class + 1): track ids start above them."""
    return space.num_classes + 1 if mode == Mode.PANOPTIC else 1


def prediction_objects(prediction: Prediction, mode: str, shape: tuple[int, int], space: LabelSpace) -> regions.Objects:
    """The objects of the mode's PNG: its instances, its panoptic segments, or (semantic) each connected region of
    a thing class."""
    if mode == Mode.INSTANCE:
        instances = ranked_instances(prediction)
        return regions.Objects(instance_id_map(instances, shape),
                               {n: inst.label for n, inst in enumerate(instances, 1)},
                               {n: float(inst.score) for n, inst in enumerate(instances, 1)})
    if mode == Mode.PANOPTIC:
        return regions.Objects(prediction.panoptic, {s.id: s.label for s in prediction.segments},
                               {s.id: float(s.score) for s in prediction.segments if s.score is not None})
    return regions.components(prediction.semantic, space)


def write_object_files(paths: dict[str, Path], objects: regions.Objects, space: LabelSpace, job: Job,
                       intensities: np.ndarray | None, wanted: ObjectOutputs) -> list[dict]:
    """The image's export files; returns its measurement rows (for the table, and the GeoJSON's measurements)."""
    rows = []
    if wanted.needs_intensities:
        rows = regions.measure(objects, space, job.stem, intensities, wanted.pixel_size)
    if wanted.exports:
        polygons = exports.object_polygons(objects)
        for fmt in wanted.exports:
            exports.write(fmt, paths[fmt], objects, polygons, space, rows, objects.ids.shape)
    return rows


def sample_labels(sample: Sample, mode: str) -> LabelMap:
    """A sample's ground truth as the label map its mode draws (instances numbered in their order)."""
    if mode == Mode.SEMANTIC:
        return LabelMap("semantic", sample.semantic)
    if mode == Mode.INSTANCE:
        return LabelMap("instance", instance_id_map(sample.instances, sample.image.shape[:2]))
    return LabelMap("panoptic", sample.panoptic, classes={s.id: s.label for s in sample.segments})


def write_outputs(out: Path, mode: str, job: Job, image: np.ndarray, prediction: Prediction, space: LabelSpace,
                  alpha: float | None, seconds: float, wanted: ObjectOutputs = NO_OBJECTS,
                  intensities: np.ndarray | None = None, tracked: bool = False,
                  overlay_to: Callable[[np.ndarray], None] | None = None, settings: dict | None = None) -> dict:
    """Write one image's files (an overlay unless alpha is None; the objects' files `wanted`, measured on
    `intensities`, the image's stored values), then its part (last: the part says the image is done, and records
    the run's `settings`); returns its record, the --json line of predict. `overlay_to` also gets the overlay
    (--save-video); `tracked` colours each id by itself (--track)."""
    began = time.perf_counter()
    paths = output_paths(out, job.stem, mode, alpha is not None, wanted.exports)
    segments, coco = WRITERS[Mode(mode)](paths[mode], prediction, space, job, image.shape[:2])
    if alpha is not None:
        labels = prediction_labels(prediction, mode, image.shape[:2], tracked)
        overlay = draw.draw_labels(draw.display_rgb(image), labels, space, alpha, legend=LEGEND[Mode(mode)])
        io.write_image(paths["overlay"], overlay, quality=90)
        if overlay_to is not None:
            overlay_to(overlay)
    rows = []
    if wanted.active:
        objects = prediction_objects(prediction, mode, image.shape[:2], space)
        rows = write_object_files(paths, objects, space, job, intensities, wanted)
    record = {"input": job.name, **job.position(), "ok": True, "mode": mode,
              "outputs": {k: str(p) for k, p in paths.items()}, "segments": segments,
              "seconds": round(seconds + time.perf_counter() - began, 4)}
    part = {"source": job.source, "settings": settings, "record": record, "coco": coco}
    if wanted.measure:
        record["objects"] = regions.class_counts(rows)  # objects per class name
        part["rows"] = rows
    io.write_json(part_path(out, mode, job.stem), part)
    return record


def write_stack_outputs(out: Path, mode: str, job: Job, planes: np.ndarray, predictions: list[Prediction],
                        space: LabelSpace, alpha: float | None, seconds: float, stitch: Tracker | None = None,
                        settings: dict | None = None) -> dict:
    """A stack's files (--stack): the mode's labels as one multi-page TIFF (a page per plane; semantic class indices,
    instance ids, panoptic segment ids), the overlays as an RGB TIFF, then its part. With `stitch`, instance and
    thing ids are shared by the planes of one 3D object. Each segment of the record names its `plane`."""
    began = time.perf_counter()
    paths = output_paths(out, job.stem, mode, alpha is not None, stack=True)
    shape = planes.shape[1:3]
    pages, overlays, segments, coco = [], [], [], []
    for plane, prediction in enumerate(predictions):
        if stitch is not None:
            prediction = track_prediction(prediction, mode, stitch, space, shape)
        labels = prediction_labels(prediction, mode, shape, tracked=stitch is not None)
        pages.append(labels.values)
        entries, results = _stack_entries(prediction, mode, space, f"{job.stem}/{plane:06d}", f"{job.stem}.tif")
        segments += [entry | {"plane": plane} for entry in entries]
        coco += [result | {"page": plane} for result in results]
        if alpha is not None:
            overlays.append(draw.overlay_labels(draw.display_rgb(planes[plane]), labels, space, alpha))
    values = np.stack(pages)
    io.write_tiff_stack(paths[mode], values.astype(np.uint32 if values.max(initial=0) > 65535 else
                                                  np.uint8 if mode == Mode.SEMANTIC else np.uint16))
    if alpha is not None:
        io.write_tiff_stack(paths["overlay"], np.stack(overlays))
    record = {"input": job.name, "ok": True, "mode": mode, "planes": len(predictions),
              "outputs": {k: str(p) for k, p in paths.items()}, "segments": segments,
              "seconds": round(seconds + time.perf_counter() - began, 4)}
    io.write_json(part_path(out, mode, job.stem), {"source": job.source, "settings": settings, "record": record,
                                                   "coco": coco})
    return record


def _stack_entries(prediction: Prediction, mode: str, space: LabelSpace, image_id: str, file_name: str
                   ) -> tuple[list[dict], list[dict]]:
    """One plane's record segments and COCO entries (instance results, or one panoptic annotation)."""
    if mode == Mode.SEMANTIC:
        return _semantic_entries(prediction.semantic, space), []
    if mode == Mode.INSTANCE:
        return _instance_entries(ranked_instances(prediction), space, image_id, file_name)
    segments, infos = _panoptic_entries(prediction, space)
    return segments, [{"image_id": image_id, "file_name": file_name, "segments_info": infos}]


# ---------------------------------------------------------------- reading it back


def _read_part_file(path: Path, settings: dict | None) -> dict | None:
    """A part made with `settings`, or None (missing, unreadable: predicted again; made otherwise)."""
    if not path.is_file():
        return None
    try:
        part = io.read_json(path)
    except SegcliError:
        return None
    return part if isinstance(part, dict) and part.get("settings") == settings else None


def read_part(out: Path, mode: str, job: Job, overlay_wanted: bool = False, wanted: ObjectOutputs = NO_OBJECTS,
              settings: dict | None = None) -> dict | None:
    """The part of a finished image of this mode, input and settings with the files wanted, or None (missing,
    another input or settings, a file since removed, no measurements when they are wanted)."""
    part = _read_part_file(part_path(out, mode, job.stem), settings)
    if part is None or part.get("source") != job.source or (wanted.measure and "rows" not in part):
        return None
    paths = output_paths(out, job.stem, mode, overlay_wanted, wanted.exports, job.stack)
    if not all(part["record"]["outputs"].get(kind) == str(p) and p.is_file() for kind, p in paths.items()):
        return None
    return part


def finished_parts(out: Path, mode: str, jobs: list[Job], settings: dict | None) -> list[dict]:
    """Every finished input's part in the folder: those of `jobs` in their order, then those earlier runs of the
    same settings left (other inputs), by stem. A part whose labels (PNG, or a stack's TIFF) are gone is not
    finished. (The settings say whether parts carry measurement rows: all of them do, or none.)"""
    folder = Path(out) / PARTS / mode
    order = {job.stem: number for number, job in enumerate(jobs)}
    found = [p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.json")
             if not p.name.startswith(io.TEMP_PREFIX)] if folder.is_dir() else []  # a frame's stem: <video>/<frame>
    parts = []
    for stem in sorted(found, key=lambda stem: (order.get(stem, len(order)), stem)):
        part = _read_part_file(part_path(out, mode, stem), settings)
        labels = [label_png(out, mode, stem), Path(out) / mode / f"{stem}.tif"]
        if part is not None and any(path.is_file() for path in labels):
            parts.append(part)
    return parts


def write_aggregates(out: Path, mode: str, jobs: list[Job], space: LabelSpace, wanted: ObjectOutputs = NO_OBJECTS,
                     settings: dict | None = None) -> list[Path]:
    """Rebuild the mode's aggregate json (and objects.csv, the YOLO data.yaml when wanted) from every finished part
    (all shards, earlier runs of these settings); returns what it wrote."""
    # Semantic PNGs carry only colours: the names travel beside them, for `visualize` and for people.
    written = [io.write_json(Path(out) / CATEGORIES, {"categories": space.coco_categories()})]
    if "yolo" in wanted.exports:
        with io.atomic_path(Path(out) / EXPORT / "yolo" / "data.yaml") as tmp:
            tmp.write_text(exports.yolo_data_yaml(space), encoding="utf-8")
        written.append(Path(out) / EXPORT / "yolo" / "data.yaml")
    if mode not in AGGREGATES and not wanted.measure:
        return written
    parts = finished_parts(out, mode, jobs, settings)
    if wanted.measure:
        written += write_object_table(out, [row for part in parts for row in part["rows"]])
    if mode == Mode.INSTANCE:
        data: object = [result for part in parts for result in part["coco"]]
    elif mode == Mode.PANOPTIC:
        # A stack's part holds one annotation per plane.
        entries = [part["coco"] if isinstance(part["coco"], list) else [part["coco"]] for part in parts]
        data = {"annotations": [annotation for entry in entries for annotation in entry],
                "categories": space.coco_categories()}
    else:
        return written
    return [*written, io.write_json(Path(out) / AGGREGATES[Mode(mode)], data)]


def write_object_table(out: Path, rows: list[dict]) -> list[Path]:
    """objects.csv, and objects.parquet when pyarrow is installed."""
    written = [regions.write_csv(Path(out) / f"{OBJECTS}.csv", rows)]
    if regions.parquet_available():
        written.append(regions.write_parquet(Path(out) / f"{OBJECTS}.parquet", rows))
    return written


# ---------------------------------------------------------------- one configuration per folder


def _setting_label(key: str) -> str:
    names = {"model": "model", "weights": "weights", "precision": "precision", "exports": "--export"}
    return names.get(key, "--" + key.replace("_", "-"))


def _setting_value(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "none"
    return {True: "on", False: "off", None: "none"}.get(value, str(value)) if isinstance(value, (bool, type(None))) \
        else str(value)


def settings_difference(held: dict, settings: dict) -> str | None:
    """The first setting whose value differs, as "--mode panoptic; this run has --mode instance" (None: the same)."""
    for key in [*settings, *(k for k in held if k not in settings)]:
        if held.get(key, "unset") != settings.get(key, "unset"):
            label = _setting_label(key)
            there, here = (_setting_value(v.get(key)) if key in v else "unset" for v in (held, settings))
            return f"{label} {there}; this run has {label} {here}"
    return None


def _held_settings(out: Path) -> dict | None:
    """The settings of the results `out` holds: {} for none (an empty folder, or one a run is just claiming), None
    for results that recorded none (an earlier segcli)."""
    recorded = out / PARTS / RUN
    if recorded.is_file():
        try:
            return io.read_json(recorded)["settings"]
        except (SegcliError, KeyError, TypeError):
            return None
    part = next((p for p in (out / PARTS).rglob("*.json") if p != recorded and not p.name.startswith(io.TEMP_PREFIX)),
                None)
    if part is None:
        return {}
    try:
        return io.read_json(part).get("settings")
    except (SegcliError, AttributeError):
        return None


def _entries(out: Path) -> list[Path]:
    """What `out` holds, but the temporary files of runs writing there now."""
    return sorted(p for p in out.iterdir() if not p.name.startswith(io.TEMP_PREFIX)) if out.is_dir() else []


def clear_results(out: Path) -> None:
    """Remove everything predict writes in `out` (`OWNED`); other files stay."""
    for name in OWNED:
        path = Path(out) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def claim_out_dir(out: Path, settings: dict, *, resume: bool = False, overwrite: bool = False,
                  shard: bool = False) -> Path:
    """Make `out` the folder of a run with `settings`, before any work: refuse (one line) a folder that holds
    results of other settings, results of these settings unless the run resumes (--skip-existing) or is one of
    several shards, or files segcli did not write unless asked to write beside them; --overwrite clears segcli's
    results first. Records the settings in `.parts/run.json`."""
    out = Path(out)
    again = "choose another --out, or add --overwrite to replace them"
    if out.is_dir() and (out / PARTS).is_dir():
        held = _held_settings(out)
        if overwrite:
            clear_results(out)
        elif held is None:
            raise UsageError(f"--out {out} holds results of an earlier segcli that did not record their settings: "
                             f"{again}")
        elif held and (difference := settings_difference(held, settings)):
            raise UsageError(f"--out {out} holds results made with {difference}: {again}")
        elif held and not (resume or shard):
            raise UsageError(f"--out {out} holds results of these settings already: add --skip-existing to keep them "
                             "and predict the rest, or --overwrite to start over")
    elif entries := _entries(out):
        ours = next((p for p in entries if p.name in OWNED), None)
        if ours is not None:
            raise UsageError(f"--out {out}: {ours} is in the way and segcli did not write it (no {PARTS}/); "
                             "choose another --out")
        if not (resume or overwrite):
            raise UsageError(f"--out {out} is not empty and holds no segcli predict results: choose a new or empty "
                             "folder, or add --overwrite to write beside its files")
    io.prepare_out_dir(out)
    _record_settings(out, settings, replace=overwrite)
    return out


def _record_settings(out: Path, settings: dict, replace: bool) -> None:
    """Write `.parts/run.json`; a run started at the same moment with other settings is refused (the first wins)."""
    path = out / PARTS / RUN
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"settings": settings}
    if replace or not path.exists():
        staged = io.write_json(path.with_name(f"{io.TEMP_PREFIX}{os.getpid()}-{RUN}.tmp"), record, indent=2)
        try:
            if replace:
                os.replace(staged, path)
            else:  # another run may have recorded its settings first: they are compared below
                with contextlib.suppress(FileExistsError):
                    os.link(staged, path)
        finally:
            staged.unlink(missing_ok=True)
    held = _held_settings(out)
    if held is None or settings_difference(held, settings):
        raise UsageError(f"--out {out}: another run with other settings started writing there at the same time "
                         f"({settings_difference(held or {}, settings)}); choose another --out")


def modes_present(out: Path) -> list[Mode]:
    """The modes whose label folders the output folder holds, richest first (panoptic, instance, semantic)."""
    return [mode for mode in reversed(Mode) if (Path(out) / mode).is_dir()]


def find_label_png(out: Path, mode: str, stems: list[str]) -> Path | None:
    """The mode's PNG of the first of `stems` that has one."""
    return next((png for stem in stems if (png := label_png(out, mode, stem)).is_file()), None)


def read_categories(out: Path) -> list[dict]:
    """categories.json (written by predict for every mode, in class-index order); [] when absent."""
    path = Path(out) / CATEGORIES
    return json_with(path, "categories")["categories"] if path.is_file() else []


def read_panoptic(out: Path) -> tuple[dict[str, dict], list[dict]]:
    """panoptic.json: its annotations by image id, and its categories."""
    data = json_with(Path(out) / AGGREGATES[Mode.PANOPTIC], "annotations")
    return {image_key(a): a for a in data["annotations"]}, data.get("categories", [])


def read_instance_results(out: Path) -> dict[str, list[dict]]:
    """instances.json's results by image id ({} when absent)."""
    path = Path(out) / AGGREGATES[Mode.INSTANCE]
    if not path.is_file():
        return {}
    results = io.read_json(path)
    if not isinstance(results, list):
        raise DataError(f"{path}: expected a COCO results list")
    by_image: dict[str, list[dict]] = {}
    for result in results:
        by_image.setdefault(str(result["image_id"]), []).append(result)
    return by_image


def json_with(path: Path, key: str) -> dict:
    """A COCO json object that has `key`."""
    data = io.read_json(path)
    if not isinstance(data, dict) or key not in data:
        raise DataError(f"{path}: expected a COCO panoptic json with `{key}`")
    return data


def image_key(annotation: dict) -> str:
    """predict writes the stem as image_id; other writers name the PNG in file_name."""
    return str(annotation.get("image_id", Path(annotation.get("file_name", "")).stem))
