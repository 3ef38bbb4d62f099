"""`segcli eval`: score prediction files, or predict a dataset and score it, with segcli.metrics.

Every function returns the metric keys of segcli.metrics (fractions in [0, 1]) plus `per_class` rows;
the CLI renders them. Mismatched inputs (a prediction without ground truth, a missing file, differing
sizes, unknown ids) raise a DataError that names the file and the id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:  # segcli.data imports every dataset reader: it loads only when a split is scored
    from segcli.data.dataset import SegDataset

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


@dataclass
class EvalConfig:
    """`segcli eval`'s options. None means "not given": each way of scoring (files, or --data) and each mode reads
    some of them, and `evaluate` refuses any other one given rather than drop it."""

    mode: str  # semantic | instance | panoptic
    # Scoring files on disk (--gt/--pred)
    gt: Path | None = None  # ground truth: a folder of class-index PNGs, or a COCO (panoptic) json
    pred: Path | None = None  # predictions, in the same form as gt (predict's output)
    gt_dir: Path | None = None  # panoptic ground-truth PNGs (None: the json's path without .json)
    pred_dir: Path | None = None  # panoptic prediction PNGs (None: the json's path without .json)
    workers: int | None = None  # semantic/panoptic files: worker processes (None: by image count)
    images: Path | None = None  # with report: the images' folder (None: images/ beside the ground truth)
    # Predicting a dataset, then scoring it (--data)
    data: Path | None = None  # a dataset to predict with model or weights, then score (instead of gt/pred)
    model: str | None = None  # zoo or bundled model name, or library weights (tv_*)
    weights: Path | None = None  # a segcli checkpoint (or with a tv_* model a torchvision state dict)
    data_format: str | None = None  # the dataset's format (None: auto)
    split: str | None = None  # the split scored (None: val)
    device: str = "auto"  # where the model runs (scoring files ignores it)
    thresholds: dict | None = None  # post-processing options of the model (center_threshold=...; None: the card's)
    tta: bool | None = None  # test-time augmentation, as predict's (None: off)
    pixel_size: float | None = None  # the images' µm per pixel: resampled to the model's scale, as predict's
    object_size: float | None = None  # the images' typical object diameter, px: resampled as predict's
    # Semantic scores (num_classes and classes also check a model's classes)
    num_classes: int | None = None  # number of classes (None: from classes, the model, or the data)
    ignore_index: int | None = None  # ground-truth label left out of the scores (None: 255)
    classes: Path | None = None  # classes.txt: one class name per line, in index order
    boundary_px: float | None = None  # boundary F1 tolerance in px (None: 2% of the image diagonal)
    # The report folder (eval_report.py)
    report: Path | None = None  # also write the report folder here
    worst: int | None = None  # with report: how many of the worst images to draw (None: DEFAULT_WORST)


# Which options each way of scoring reads; any other option given is refused, never silently dropped. `mode` and
# `data` choose the way, `device` has a default, `thresholds` are checked by name (check_thresholds).
_ALWAYS_READ = {"mode", "data", "device", "thresholds"}
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


def evaluate(config: EvalConfig, *, callback: Callable[..., None] | None = None) -> dict:
    """`segcli eval`: score files on disk (`gt`/`pred`) or a model on a dataset (`data`), and with `report` also
    write the report folder. `callback("warning", message=...)` hears when a model's objects look off its scale."""
    _check_options(config)
    folder = _report_folder(config.report, config.worst, config.images)  # refused before any work
    details = ScoreDetails() if folder is not None else None
    if config.data is not None:
        if config.model is None and config.weights is None:
            raise UsageError("--data needs --model NAME or --weights FILE to predict with")
        scored = predict_and_score(config, callback=callback, details=details)
        if folder is not None:
            source = f"{config.model or config.weights} on {config.data} (split {config.split or 'val'})"
            _write_report(folder, config.mode, scored.result, details, scored.space, scored.pictures(), source,
                          config.worst)
        return scored.result
    return _evaluate_files(config, folder, details)


def _check_options(config: EvalConfig) -> None:
    """Refuse the thresholds a model does not know and the options the route and mode do not read."""
    given = {f.name for f in fields(config) if f.name not in _ALWAYS_READ and getattr(config, f.name) is not None}
    if config.thresholds:
        from segcli.inference import check_thresholds

        check_thresholds(config.thresholds)  # before the model and the data load: one line, nothing read
    route = "data" if config.data is not None else "files"
    unused = sorted(given - _OPTIONS[(route, config.mode)])
    if unused:
        flags = ", ".join(_FLAGS.get(k, "--" + k.replace("_", "-")) for k in unused)
        how = "with --data (predict, then score)" if route == "data" else "when scoring files (--gt/--pred)"
        pronoun = "them" if len(unused) > 1 else "it"
        raise UsageError(f"{flags}: not used by eval --mode {config.mode} {how}; leave {pronoun} out")


def _evaluate_files(config: EvalConfig, folder: ReportFolder | None, details: ScoreDetails | None) -> dict:
    """Score the prediction files `config.pred` against `config.gt` (and write the report)."""
    gt, pred, mode = config.gt, config.pred, config.mode
    if gt is None or pred is None:
        raise UsageError("give --gt and --pred (files to score), "
                         "or --data with --model/--weights (predict, then score)")
    if mode == "semantic":
        ignore_index = IGNORE_INDEX if config.ignore_index is None else config.ignore_index
        result = evaluate_semantic(gt, pred, config.num_classes, ignore_index, config.classes, config.boundary_px,
                                   config.workers, details)
    elif mode == "instance":
        result = evaluate_instance(gt, pred, details)
    else:
        result = evaluate_panoptic(gt, pred, config.gt_dir, config.pred_dir, config.workers, details)
    if folder is not None:
        from segcli.services import eval_sources

        space, pictures = eval_sources.file_pictures(mode, gt, pred, config.gt_dir, config.pred_dir, config.classes,
                                                     config.images, details)
        _write_report(folder, mode, result, details, space, pictures, f"{pred} against {gt}", config.worst)
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
    config = EvalConfig(mode=mode, data=data, model=model, weights=weights, data_format=data_format, split=split,
                        device=device, boundary_px=boundary_px, num_classes=num_classes, ignore_index=ignore_index,
                        classes=classes, thresholds=thresholds, tta=tta, pixel_size=pixel_size,
                        object_size=object_size)
    return predict_and_score(config, callback=callback).result


def predict_and_score(config: EvalConfig, *, callback: Callable[..., None] | None = None,
                      details: ScoreDetails | None = None) -> Scored:
    """evaluate_model's work on `config.data` (the options of eval's --data route), keeping the samples and
    predictions (and filling `details`) for a report."""
    from segcli.checkpoint import card_label_space
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

    mode, tta = config.mode, bool(config.tta)
    if config.classes is not None and not Path(config.classes).is_file():
        raise DataError(f"--classes {config.classes}: no such file (one class name per line, in index order)")
    net, card = resolve_model(mode=mode, model=config.model, weights=config.weights,
                              device=resolve_device(config.device or "auto"))
    predicted = card_label_space(card).num_classes
    if config.num_classes is not None and config.num_classes != predicted:
        raise UsageError(f"--num-classes {config.num_classes}: the model predicts {predicted} classes; leave it out "
                         "or use a model trained for that many")
    rescale = input_rescale(card, config.pixel_size, config.object_size)
    dataset, samples = _dataset_samples(config, card)
    if tta:
        check_tta(net, card)
    # Only what the mode's metrics read is built.
    inference = InferenceOptions(tile=DEFAULT_TILE, mode=Mode(mode), tta=tta, rescale=rescale)
    predictions = predict_arrays(net, card, [s.image for s in samples], options=inference,
                                 **(config.thresholds or {}))
    note = None
    if mode != Mode.SEMANTIC and config.pixel_size is None and config.object_size is None:
        isthing = dataset.label_space.isthing
        note = scale_mismatch(card, [d for p in predictions for d in object_diameters(p, isthing)])
    if note and callback is not None:
        callback("warning", message=note)
    result = score_predictions(list(zip(samples, predictions)), mode, dataset.label_space, config.boundary_px,
                               details)
    return Scored(result | {"images": len(samples)}, samples, predictions, dataset.label_space, mode)


def _dataset_samples(config: EvalConfig, card: dict) -> tuple[SegDataset, list]:
    """The dataset's split `config.split` read for the model, and its samples, `config.ignore_index` made 255."""
    from segcli.data.load import load_for_model

    split = config.split or "val"
    dataset = load_for_model(config.data, card, format=config.data_format or "auto", split=split,
                             classes=config.classes)
    if len(dataset) == 0:
        raise DataError(f"--data {config.data}: split {split!r} has no images to score; choose another with --split")
    samples = [dataset[i] for i in range(len(dataset))]
    ignore_index = config.ignore_index
    if ignore_index is not None and ignore_index != IGNORE_INDEX:
        for sample in samples:
            sample.semantic = np.where(sample.semantic == ignore_index, IGNORE_INDEX, sample.semantic).astype(np.uint8)
    return dataset, samples
