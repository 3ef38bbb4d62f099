"""`segcli eval`: score predictions on disk (or in memory) with segcli.metrics.

Every function returns the SPEC.md keys plus `per_class` rows; the CLI renders them. Mismatched
inputs (a prediction without ground truth, a missing file, differing sizes, unknown ids) raise a
DataError that names the file and the id.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segcli import io
from segcli.errors import DataError
from segcli.metrics import (
    BoundaryF1,
    ConfusionMatrix,
    ImageIndex,
    PanopticQuality,
    boundary_f1_per_class,
    coco_mask_ap,
    label_counts,
    map_images,
    pq_compute,
)
from segcli.structures import IGNORE_INDEX, Prediction, Sample, coco_result, mask_to_rle

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
                      classes: Path | None = None, boundary_px: float | None = None, workers: int | None = None) -> dict:
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
    counts, boundary_scores = np.zeros((0, 0), np.int64), []
    for image_counts, scores in map_images(_semantic_job, jobs, workers):
        counts = _add_padded(counts, image_counts)
        boundary_scores.append(scores)
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
    return _semantic_result(matrix, boundary, names) | {"images": len(jobs)}


def _semantic_result(matrix: ConfusionMatrix, boundary: BoundaryF1, names: list[str] | None) -> dict:
    result = matrix.compute(names)
    for row, score in zip(result["per_class"], boundary.per_class(matrix.num_classes)):
        row["boundary_f1"] = score
    return {**result, "boundary_f1": boundary.compute()}


def score_semantic(pairs, num_classes: int, names: list[str] | None = None, ignore_index: int = IGNORE_INDEX,
                   boundary_px: float | None = None) -> dict:
    """In-memory semantic scores for (ground truth, prediction) class maps; training and compare use it too."""
    matrix = ConfusionMatrix(num_classes, ignore_index)
    boundary = BoundaryF1(num_classes, boundary_px, ignore_index)
    for number, (gt, pred) in enumerate(pairs):
        try:
            matrix.update(gt, pred)
        except ValueError as error:
            raise DataError(f"image {number}: {error}") from None
        boundary.update(gt, pred)
    return _semantic_result(matrix, boundary, names)


# ---------------------------------------------------------------- instance


def evaluate_instance(gt: Path, pred: Path) -> dict:
    """COCO mask AP of a results json against a COCO instances json (image ids or file stems)."""
    gt_data, results = io.read_json(gt), io.read_json(pred)
    if not isinstance(gt_data, dict) or not {"images", "annotations", "categories"} <= set(gt_data):
        raise DataError(f"--gt {gt}: not a COCO instances json (needs images, annotations and categories)")
    if not isinstance(results, list):
        raise DataError(f"--pred {pred}: expected a COCO results list ([{{image_id, category_id, segmentation, score}}, ...])")
    return score_instance(gt_data, results, source=str(pred)) | {"images": len(gt_data["images"])}


def score_instance(gt: dict, results: list[dict], source: str = "predictions") -> dict:
    """COCO mask AP of a results list against a COCO instances dict, results matched by image id or file stem."""
    images = {img["id"]: img for img in gt["images"]}
    index = ImageIndex((img["id"], img.get("file_name", "")) for img in gt["images"])
    categories = {c["id"] for c in gt["categories"]}
    mapped = [_checked_result(number, r, index, images, categories, source) for number, r in enumerate(results)]
    return coco_mask_ap(_completed_gt(gt), mapped)


def _checked_result(number: int, result: dict, index: ImageIndex, images: dict, categories: set, source: str) -> dict:
    what = f"{source}: result {number}"
    missing = {"image_id", "category_id", "segmentation", "score"} - set(result)
    if missing:
        raise DataError(f"{what} has no {sorted(missing)}")
    image_id = index.find(result["image_id"], result.get("file_name"))
    if image_id is None:
        raise DataError(f"{what}: image_id {result['image_id']!r} matches no ground-truth image id or file stem")
    if result["category_id"] not in categories:
        raise DataError(f"{what}: category_id {result['category_id']} is not a ground-truth category")
    image = images[image_id]
    segmentation = _rle(result["segmentation"], image, what)
    return {**result, "image_id": image_id, "segmentation": segmentation}


def _rle(segmentation, image: dict, what: str) -> dict:
    """A compressed RLE (what loadRes accepts) of a result's RLE or polygons, checked against the image size."""
    from pycocotools import mask as mask_utils

    height, width = image.get("height"), image.get("width")
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), str | bytes):
        size = list(segmentation.get("size", []))
        if len(size) != 2:
            raise DataError(f"{what}: an RLE needs 'size': [height, width]")
        if height is not None and size != [height, width]:
            raise DataError(f"{what}: mask is {size[1]}x{size[0]} px but image {image['id']!r} is {width}x{height}")
        return segmentation
    if height is None:
        raise DataError(f"{what}: polygon or uncompressed masks need the image's height and width in the ground truth")
    rles = mask_utils.frPyObjects(segmentation, height, width)
    rle = mask_utils.merge(rles) if isinstance(rles, list) else rles
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _completed_gt(gt: dict) -> dict:
    """COCOeval needs iscrowd and area on every annotation: default them (0, the mask's area) where they are missing."""
    from pycocotools import mask as mask_utils

    images = {img["id"]: img for img in gt["images"]}
    annotations = []
    for ann in gt["annotations"]:
        if "iscrowd" in ann and "area" in ann:
            annotations.append(ann)
            continue
        ann = {"iscrowd": 0, **ann}
        if "area" not in ann:
            image = images.get(ann["image_id"], {})
            rle = _rle(ann["segmentation"], image, f"ground-truth annotation {ann.get('id')!r}")
            ann["area"] = float(mask_utils.area(rle))
        annotations.append(ann)
    return {**gt, "annotations": annotations}


# ---------------------------------------------------------------- panoptic


def evaluate_panoptic(gt: Path, pred: Path, gt_dir: Path | None = None, pred_dir: Path | None = None,
                      workers: int | None = None) -> dict:
    """PQ, SQ, RQ (all, things, stuff, per class) as panopticapi's pq_compute, images in parallel workers."""
    return pq_compute(gt, pred, gt_dir, pred_dir, workers)


def score_panoptic(pairs: list[tuple[Sample, Prediction]], label_space) -> dict:
    """In-memory PQ for training validation and `eval --data`: ground-truth samples vs predictions."""
    metric = PanopticQuality(label_space)
    for sample, prediction in pairs:
        metric.update(sample.panoptic, sample.segments, prediction.panoptic, prediction.segments, image=sample.name)
    return metric.compute()


def score_instances_in_memory(pairs: list[tuple[Sample, Prediction]], label_space) -> dict:
    """COCO mask AP of in-memory predictions against in-memory ground truth."""
    images, annotations, results = [], [], []
    for image_id, (sample, prediction) in enumerate(pairs, start=1):
        h, w = sample.image.shape[:2]
        images.append({"id": image_id, "width": w, "height": h, "file_name": f"{sample.name}.png"})
        for inst in sample.instances:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": int(inst.iscrowd),
                                "category_id": label_space.category_ids[inst.label], "area": float(inst.area),
                                "bbox": list(inst.bbox), "segmentation": mask_to_rle(inst.mask)})
        results.extend(coco_result(inst, image_id, label_space) for inst in prediction.instances)
    gt = {"images": images, "annotations": annotations, "categories": label_space.coco_categories()}
    return coco_mask_ap(gt, results)


# ---------------------------------------------------------------- predictions in memory

PRIMARY_METRIC = {"semantic": "miou", "instance": "ap", "panoptic": "pq"}


def score_predictions(pairs: list[tuple[Sample, Prediction]], mode: str, label_space, boundary_px: float | None = None) -> dict:
    """The metrics of `mode` for (ground truth, prediction) pairs: training validation, compare, eval --data."""
    if mode == "semantic":
        return score_semantic([(s.semantic, p.semantic) for s, p in pairs], label_space.num_classes, label_space.names,
                              boundary_px=boundary_px)
    if mode == "panoptic":
        return score_panoptic(pairs, label_space)
    result = score_instances_in_memory(pairs, label_space)
    result["per_class"] = []
    return result


def evaluate_model(data: Path, mode: str, model: str | None = None, weights: Path | None = None, data_format: str = "auto",
                   split: str = "val", device: str = "auto", boundary_px: float | None = None, **dataset_options) -> dict:
    """Predict a dataset split with a model and score it (ultralytics' `val`)."""
    from segcli.data import load_dataset
    from segcli.device import resolve_device
    from segcli.inference import predict_arrays
    from segcli.services.resolve import resolve_model

    net, card = resolve_model(mode=mode, model=model, weights=weights, device=resolve_device(device))
    dataset = load_dataset(data, format=data_format, split=split, **(_training_data_options(card) | dataset_options))
    label_space = _checked_label_space(card, dataset)
    samples = [dataset[i] for i in range(len(dataset))]
    predictions = predict_arrays(net, card, [s.image for s in samples])
    return score_predictions(list(zip(samples, predictions)), mode, label_space, boundary_px) | {"images": len(samples)}


def _training_data_options(card: dict) -> dict:
    """How the checkpoint's training read its data: the same 0/255 reading, and the same seed, so that a
    random train/val split puts the same images in `val` (scoring training images would flatter the model)."""
    training = card.get("training") or {}
    return {key: training[key] for key in ("binary", "seed") if training.get(key) is not None}


def _checked_label_space(card: dict, dataset):
    from segcli.checkpoint import card_label_space

    model_space = card_label_space(card)
    if model_space.num_classes != dataset.label_space.num_classes:
        raise DataError(f"the model predicts {model_space.num_classes} classes, the dataset {dataset.root} has "
                        f"{dataset.label_space.num_classes}: score a dataset with the model's classes")
    return dataset.label_space
