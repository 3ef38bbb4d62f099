"""`segcli eval`: score prediction files, or predict a dataset and score it, with segcli.metrics.

Every function returns the metric keys of segcli.metrics (fractions in [0, 1]) plus `per_class` rows;
the CLI renders them. Mismatched inputs (a prediction without ground truth, a missing file, differing
sizes, unknown ids) raise a DataError that names the file and the id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segcli import io
from segcli.errors import DataError, UsageError
from segcli.html_page import ReportFolder
from segcli.metrics import (
    BoundaryF1,
    ConfusionMatrix,
    ScoreDetails,
    boundary_f1_per_class,
    label_counts,
    map_images,
    pq_compute,
    score_instance,
    score_predictions,
    semantic_result,
)
from segcli.metrics.scoring import image_miou
from segcli.structures import IGNORE_INDEX, LabelSpace, Mode

# ---------------------------------------------------------------- semantic


def _pngs_by_stem(folder: Path, what: str) -> dict[str, Path]:
    if not Path(folder).is_dir():
        raise DataError(f"{what} {folder}: not a folder of class-index PNGs")
    files = {p.stem: p for p in sorted(Path(folder).glob("*.png"))}
    if not files:
        raise DataError(f"{what} {folder}: no .png files")
    return files


def _read_classes(path: Path | None) -> list[str] | None:
    """Class names from a classes.txt (the datasets' format: one class per line, in index order)."""
    from segcli.data.classes import parse_classes_txt

    if path is None:
        return None
    if not Path(path).is_file():
        raise DataError(f"--classes {path}: no such file (one class name per line, in index order)")
    return parse_classes_txt(Path(path)).names


MAX_INFERRED_CLASSES = 1024  # without --num-classes, a larger label means an instance or colour mask, not classes


def _semantic_job(job: tuple) -> tuple[np.ndarray, dict[int, float]]:
    """One image pair: its label counts and its per-class boundary F1 (run in a worker process)."""
    gt_path, pred_path, num_classes, ignore_index, boundary_px = job
    gt, pred = io.read_label_png(gt_path), io.read_label_png(pred_path)
    for array, path in ((gt, gt_path), (pred, pred_path)):
        if array.ndim != 2:
            raise DataError(f"{path}: a colour image, not a class-index PNG; write class indices (predict does)")
    if gt.shape != pred.shape:
        raise DataError(f"{pred_path}: prediction is {pred.shape[1]}x{pred.shape[0]} px, "
                        f"ground truth {gt_path} is {gt.shape[1]}x{gt.shape[0]}")
    limit = num_classes or MAX_INFERRED_CLASSES
    for array, path in ((gt, gt_path), (pred, pred_path)):
        largest = int(array[array != ignore_index].max(initial=0))
        if largest >= limit and (array is gt or num_classes is None):
            hint = f"only {num_classes} classes (0..{num_classes - 1}); pass the right --num-classes or --classes" \
                if num_classes else f"over {limit - 1}: an instance or colour mask? Pass --num-classes if it is not"
            raise DataError(f"{path}: class {largest} but {hint}")
    if num_classes:
        pred = np.where((pred > num_classes) & (pred != ignore_index), num_classes, pred)  # all equally wrong
    return label_counts(gt, pred, ignore_index), boundary_f1_per_class(gt, pred, num_classes, boundary_px, ignore_index)


def _add_padded(total: np.ndarray, counts: np.ndarray) -> np.ndarray:
    shape = np.maximum(total.shape, counts.shape)
    grown = np.zeros(shape, np.int64)
    grown[: total.shape[0], : total.shape[1]] += total
    grown[: counts.shape[0], : counts.shape[1]] += counts
    return grown


def _inferred_classes(counts: np.ndarray, ignore_index: int) -> int:
    """One more than the largest class in the ground truth or the prediction (a predicted ignore_index is no class)."""
    columns = np.flatnonzero(counts.any(0))
    columns = columns[columns != ignore_index]
    rows = np.flatnonzero(counts.any(1))
    return 1 + int(max(rows.max(initial=-1), columns.max(initial=-1)))


def evaluate_semantic(gt: Path, pred: Path, num_classes: int | None = None, ignore_index: int = IGNORE_INDEX,
                      classes: Path | None = None, boundary_px: float | None = None, workers: int | None = None,
                      details: ScoreDetails | None = None) -> dict:
    """mIoU, pixel accuracy, mean Dice, boundary F1 and per-class rows over class-index PNGs matched by stem.

    The number of classes is --num-classes, else the length of --classes, else one more than the
    largest label in either folder. Images are read and scored in parallel workers.
    """
    gt_files, pred_files = _pngs_by_stem(gt, "--gt"), _pngs_by_stem(pred, "--pred")
    extra = sorted(set(pred_files) - set(gt_files))
    if extra:
        raise DataError(f"{pred_files[extra[0]]}: a prediction with no ground truth in {gt} ({len(extra)} in all)")
    missing = sorted(set(gt_files) - set(pred_files))
    if missing:
        raise DataError(f"--pred {pred}: no prediction for ground truth {gt_files[missing[0]]} ({len(missing)} in all)")
    names = _read_classes(classes)
    known = num_classes or (len(names) if names else None)
    jobs = [(gt_files[s], pred_files[s], known, ignore_index, boundary_px) for s in sorted(gt_files)]
    counts, boundary_scores, per_image = np.zeros((0, 0), np.int64), [], []
    for image_counts, scores in map_images(_semantic_job, jobs, workers):
        counts = _add_padded(counts, image_counts)
        boundary_scores.append(scores)
        if details is not None:
            per_image.append(image_counts)
    num_classes = known or _inferred_classes(counts, ignore_index)
    if names is not None and len(names) != num_classes:
        raise DataError(f"--classes {classes}: {len(names)} names for {num_classes} classes")
    matrix, boundary = ConfusionMatrix(num_classes, ignore_index), BoundaryF1(num_classes)
    try:
        matrix.add_counts(counts)
    except ValueError as error:
        raise DataError(f"--gt {gt}: {error}; pass the right --num-classes or --classes") from None
    for scores in boundary_scores:
        boundary.add(scores)
    if details is not None:
        details.images, details.confusion = sorted(gt_files), matrix.matrix
        details.per_image = [image_miou(_image_matrix(c, num_classes, ignore_index)) for c in per_image]
    return semantic_result(matrix, boundary, names) | {"images": len(jobs)}


def _image_matrix(counts: np.ndarray, num_classes: int, ignore_index: int) -> ConfusionMatrix:
    matrix = ConfusionMatrix(num_classes, ignore_index)
    matrix.add_counts(counts)
    return matrix


# ---------------------------------------------------------------- instance


def evaluate_instance(gt: Path, pred: Path, details: ScoreDetails | None = None) -> dict:
    """COCO mask AP of a results json against a COCO instances json (image ids or file stems)."""
    gt_data, results = io.read_json(gt), io.read_json(pred)
    if not isinstance(gt_data, dict) or not {"images", "annotations", "categories"} <= set(gt_data):
        raise DataError(f"--gt {gt}: not a COCO instances json (needs images, annotations and categories)")
    if not isinstance(results, list):
        raise DataError(f"--pred {pred}: expected a COCO results list "
                        "([{image_id, category_id, segmentation, score}, ...])")
    for number, ann in enumerate(gt_data["annotations"]):
        missing = {"image_id", "category_id", "segmentation"} - set(ann) if isinstance(ann, dict) else {"(a dict)"}
        if missing:
            panoptic = isinstance(ann, dict) and "segments_info" in ann
            hint = "a COCO panoptic json: score it with --mode panoptic" if panoptic else "not a COCO instances json"
            raise DataError(f"--gt {gt}: annotation {number} has no {', '.join(sorted(missing))}: {hint}")
    return score_instance(gt_data, results, source=str(pred), details=details) | {"images": len(gt_data["images"])}


# ---------------------------------------------------------------- panoptic


def evaluate_panoptic(gt: Path, pred: Path, gt_dir: Path | None = None, pred_dir: Path | None = None,
                      workers: int | None = None, details: ScoreDetails | None = None) -> dict:
    """PQ, SQ, RQ (all, things, stuff, per class) as panopticapi's pq_compute, images in parallel workers."""
    return pq_compute(gt, pred, gt_dir, pred_dir, workers, details)


# Which options each way of scoring reads; any other option given is refused, never silently dropped.
_REPORT = {"report", "worst"}
_OPTIONS = {
    ("data", Mode.SEMANTIC): {"model", "weights", "data_format", "split", "num_classes", "ignore_index", "classes",
                              "boundary_px", "tta", "pixel_size", "object_size"} | _REPORT,
    ("data", Mode.INSTANCE): {"model", "weights", "data_format", "split", "num_classes", "classes", "tta", "pixel_size",
                              "object_size"} | _REPORT,
    ("data", Mode.PANOPTIC): {"model", "weights", "data_format", "split", "num_classes", "classes", "tta", "pixel_size",
                              "object_size"} | _REPORT,
    ("files", Mode.SEMANTIC): {"gt", "pred", "num_classes", "ignore_index", "classes", "boundary_px", "workers",
                               "images"} | _REPORT,
    ("files", Mode.INSTANCE): {"gt", "pred", "images"} | _REPORT,
    ("files", Mode.PANOPTIC): {"gt", "pred", "gt_dir", "pred_dir", "workers", "images"} | _REPORT,
}
_FLAGS = {"data_format": "--format", "boundary_px": "--boundary-px", "pixel_size": "--pixel-size",
          "object_size": "--object-size"}


def evaluate(*, mode: str, gt: Path | None = None, pred: Path | None = None, gt_dir: Path | None = None,
             pred_dir: Path | None = None, data: Path | None = None, model: str | None = None,
             weights: Path | None = None, data_format: str | None = None, split: str | None = None,
             num_classes: int | None = None, ignore_index: int | None = None, classes: Path | None = None,
             boundary_px: float | None = None, workers: int | None = None, device: str | None = None,
             thresholds: dict | None = None, tta: bool | None = None, pixel_size: float | None = None,
             object_size: float | None = None, callback: Callable[..., None] | None = None,
             report: Path | None = None, worst: int | None = None, images: Path | None = None) -> dict:
    """`segcli eval`: score files on disk (--gt/--pred) or a model on a dataset (--data); None means not given.
    `thresholds`: post-processing options of the model, `tta`: test-time augmentation as predict's (--data only).
    `report`: also write the report folder (eval_report.py) with the `worst` images, found in `images` (files)."""
    given = {k: v for k, v in locals().items()
             if v is not None and k not in ("mode", "data", "device", "thresholds", "callback")}
    if thresholds:
        from segcli.inference import check_thresholds

        check_thresholds(thresholds)  # before the model and the data load: one line, nothing read
    route = "data" if data is not None else "files"
    unused = sorted(set(given) - _OPTIONS[(route, mode)])
    if unused:
        flags = ", ".join(_FLAGS.get(k, "--" + k.replace("_", "-")) for k in unused)
        how = "with --data (predict, then score)" if route == "data" else "when scoring files (--gt/--pred)"
        pronoun = "them" if len(unused) > 1 else "it"
        raise UsageError(f"{flags}: not used by eval --mode {mode} {how}; leave {pronoun} out")
    folder = _report_folder(report, worst, images)  # refused before any work
    details = ScoreDetails() if folder is not None else None
    if route == "data":
        if model is None and weights is None:
            raise UsageError("--data needs --model NAME or --weights FILE to predict with")
        scored = predict_and_score(data, mode, model=model, weights=weights, data_format=data_format or "auto",
                                   split=split or "val", device=device or "auto", boundary_px=boundary_px,
                                   num_classes=num_classes, ignore_index=ignore_index, classes=classes,
                                   thresholds=thresholds, tta=bool(tta), pixel_size=pixel_size,
                                   object_size=object_size, callback=callback, details=details)
        if folder is not None:
            source = f"{model or weights} on {data} (split {split or 'val'})"
            _write_report(folder, mode, scored.result, details, scored.space, scored.pictures(), source, worst)
        return scored.result
    if gt is None or pred is None:
        raise UsageError("give --gt and --pred (files to score), "
                         "or --data with --model/--weights (predict, then score)")
    if mode == "semantic":
        result = evaluate_semantic(gt, pred, num_classes, IGNORE_INDEX if ignore_index is None else ignore_index,
                                   classes, boundary_px, workers, details)
    elif mode == "instance":
        result = evaluate_instance(gt, pred, details)
    else:
        result = evaluate_panoptic(gt, pred, gt_dir, pred_dir, workers, details)
    if folder is not None:
        from segcli.services import eval_sources

        space, pictures = eval_sources.file_pictures(mode, gt, pred, gt_dir, pred_dir, classes, images, details)
        _write_report(folder, mode, result, details, space, pictures, f"{pred} against {gt}", worst)
    return result


def _report_folder(report: Path | None, worst: int | None, images: Path | None) -> ReportFolder | None:
    for option, value in (("--worst", worst), ("--images", images)):
        if value is not None and report is None:
            raise UsageError(f"{option} chooses what the report shows: it goes with --report DIR")
    if worst is not None and worst < 0:
        raise UsageError(f"--worst {worst}: give how many of the worst images to draw (0 or more)")
    return ReportFolder(report, "--report") if report is not None else None


def _write_report(folder, mode: str, result: dict, details: ScoreDetails, space, pictures, source: str,
                  worst: int | None) -> None:
    from segcli.services.eval_report import DEFAULT_WORST, Evaluation, write_eval_report

    evaluation = Evaluation(mode=mode, result=result, details=details, space=space, pictures=pictures, source=source)
    write_eval_report(folder, evaluation, DEFAULT_WORST if worst is None else worst)


@dataclass
class Scored:
    """A model's predictions on a dataset split, scored: what `eval --data` and `segcli report` show."""

    result: dict
    samples: list
    predictions: list
    space: LabelSpace
    mode: str

    def pictures(self):
        """name -> (image, prediction, ground truth) label maps, for the report's pictures."""
        from segcli.outputs import prediction_labels, sample_labels

        by_name = {s.name: (s, p) for s, p in zip(self.samples, self.predictions)}

        def picture(name: str):
            sample, prediction = by_name[name]
            return (sample.image, prediction_labels(prediction, self.mode, sample.image.shape[:2]),
                    sample_labels(sample, self.mode))

        return picture


def evaluate_model(data: Path, mode: str, model: str | None = None, weights: Path | None = None,
                   data_format: str = "auto", split: str = "val", device: str = "auto",
                   boundary_px: float | None = None, num_classes: int | None = None,
                   ignore_index: int | None = None, classes: Path | None = None, thresholds: dict | None = None,
                   tta: bool = False, pixel_size: float | None = None, object_size: float | None = None,
                   callback: Callable[..., None] | None = None) -> dict:
    """Predict a dataset split with a model and score it (ultralytics' `val`).

    `classes` is the dataset's classes.txt (as in training), `num_classes` a check of the model's class count,
    `ignore_index` a ground-truth label to leave out of the semantic scores (255 always is); `pixel_size` /
    `object_size` resample the images to the model's scale (predict's options); `callback("warning", message=...)`
    hears when the objects found look much smaller or larger than the model's."""
    return predict_and_score(data, mode, model=model, weights=weights, data_format=data_format, split=split,
                             device=device, boundary_px=boundary_px, num_classes=num_classes, ignore_index=ignore_index,
                             classes=classes, thresholds=thresholds, tta=tta, pixel_size=pixel_size,
                             object_size=object_size, callback=callback).result


def predict_and_score(data: Path, mode: str, model: str | None = None, weights: Path | None = None,
                      data_format: str = "auto", split: str = "val", device: str = "auto",
                      boundary_px: float | None = None, num_classes: int | None = None, ignore_index: int | None = None,
                      classes: Path | None = None, thresholds: dict | None = None, tta: bool = False,
                      pixel_size: float | None = None, object_size: float | None = None,
                      callback: Callable[..., None] | None = None, details: ScoreDetails | None = None) -> Scored:
    """evaluate_model's work, keeping the samples and predictions (and filling `details`) for a report."""
    from segcli.checkpoint import card_label_space
    from segcli.data.load import load_for_model
    from segcli.device import resolve_device
    from segcli.inference import (
        DEFAULT_TILE,
        InferenceOptions,
        check_tta,
        input_rescale,
        object_diameters,
        predict_arrays,
        scale_mismatch,
    )
    from segcli.services.resolve import resolve_model

    if classes is not None and not Path(classes).is_file():
        raise DataError(f"--classes {classes}: no such file (one class name per line, in index order)")
    net, card = resolve_model(mode=mode, model=model, weights=weights, device=resolve_device(device))
    predicted = card_label_space(card).num_classes
    if num_classes is not None and num_classes != predicted:
        raise UsageError(f"--num-classes {num_classes}: the model predicts {predicted} classes; leave it out or use "
                         "a model trained for that many")
    rescale = input_rescale(card, pixel_size, object_size)
    dataset = load_for_model(data, card, format=data_format, split=split, classes=classes)
    if len(dataset) == 0:
        raise DataError(f"--data {data}: split {split!r} has no images to score; choose another with --split")
    samples = [dataset[i] for i in range(len(dataset))]
    if ignore_index is not None and ignore_index != IGNORE_INDEX:
        for sample in samples:
            sample.semantic = np.where(sample.semantic == ignore_index, IGNORE_INDEX, sample.semantic).astype(np.uint8)
    if tta:
        check_tta(net, card)
    # Only what the mode's metrics read is built.
    inference = InferenceOptions(tile=DEFAULT_TILE, mode=Mode(mode), tta=tta, rescale=rescale)
    predictions = predict_arrays(net, card, [s.image for s in samples], options=inference, **(thresholds or {}))
    note = None
    if mode != Mode.SEMANTIC and pixel_size is None and object_size is None:
        isthing = dataset.label_space.isthing
        note = scale_mismatch(card, [d for p in predictions for d in object_diameters(p, isthing)])
    if note and callback is not None:
        callback("warning", message=note)
    result = score_predictions(list(zip(samples, predictions)), mode, dataset.label_space, boundary_px, details)
    return Scored(result | {"images": len(samples)}, samples, predictions, dataset.label_space, mode)
