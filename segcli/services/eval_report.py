"""`eval --report DIR`: what an evaluation found, as files and one page (report.html) that opens offline.

    report.html                     everything below on one page
    per_class.csv                   one row per class: the mode's scores, counts, and what an empty row means
    per_image.csv                   each image's score by the mode's primary metric, worst first
    confusion.csv / .png            counts (semantic, panoptic: pixels; instance: objects matched at IoU 0.5)
    confusion_normalized.csv / .png each ground-truth row as shares
    pr_curves.csv / .png            instance: precision against recall per class, from COCOeval's precision array
    worst/NN_<image>.png            the N worst images as `visualize --side-by-side --gt` draws them
    report.json                     the headline metrics and the list of files (a rerun replaces exactly these)

With many classes (over MAX_MATRIX_CLASSES) the pictures show the classes of the largest confusions and the page
lists the TOP_CONFUSIONS largest cells; the CSVs hold every class.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segcli import draw, io, plots
from segcli.html_page import Page, ReportFolder, figure, fmt, gallery, heading, paragraph, row, table
from segcli.metrics import PRIMARY_METRIC, ScoreDetails
from segcli.services.visualize import compare_picture
from segcli.structures import LabelMap, LabelSpace

MAX_MATRIX_CLASSES = 30  # a matrix larger than this is unreadable as a picture
TOP_CONFUSIONS = 20
WORST_SIDE = 384  # longest side of each panel of a worst-image picture
DEFAULT_WORST = 8
HEADLINE = {"semantic": ("miou", "pixel_accuracy", "mean_dice", "boundary_f1"),
            "instance": ("ap", "ap50", "ap75", "ar100"), "panoptic": ("pq", "sq", "rq")}
NAMES = {"miou": "mIoU", "pixel_accuracy": "pixel accuracy", "mean_dice": "mean Dice", "boundary_f1": "boundary F1",
         "ap": "mask AP", "ap50": "AP50", "ap75": "AP75", "ar100": "AR100", "pq": "PQ", "sq": "SQ", "rq": "RQ"}
HEADERS = {"iou": "IoU", "dice": "Dice", "boundary_f1": "boundary F1", "ap": "AP", "ap50": "AP50", "ap75": "AP75",
           "ap_small": "AP small", "ap_medium": "AP medium", "ap_large": "AP large", "pq": "PQ", "sq": "SQ", "rq": "RQ",
           "tp": "TP", "fp": "FP", "fn": "FN"}
MIN_WORST_SIDE = 256  # ...and smaller images are enlarged (whole times, nearest neighbour) to at least this

# name -> (image or None when it cannot be found, prediction, ground truth): how a scored image is drawn
Pictures = Callable[[str], tuple[np.ndarray | None, LabelMap, LabelMap]]


@dataclass
class Evaluation:
    """One evaluation as a report shows it."""

    mode: str
    result: dict  # eval's metrics
    details: ScoreDetails
    space: LabelSpace  # names and colours of the classes
    pictures: Pictures
    source: str  # what was scored, in words (the page's subtitle)


def write_eval_report(folder: ReportFolder, evaluation: Evaluation, worst: int = DEFAULT_WORST) -> Path:
    """The report of one evaluation into a folder already checked (ReportFolder); returns report.html."""
    folder.start()
    page = Page(title=f"segcli eval ({evaluation.mode})", subtitle=evaluation.source)
    add_evaluation(page, folder, evaluation, worst)
    path = page.write(folder.file("report.html"))
    folder.finish({"mode": evaluation.mode, "metrics": headline(evaluation), "images": evaluation.result.get("images")})
    return path


def headline(evaluation: Evaluation) -> dict:
    return {key: evaluation.result.get(key) for key in HEADLINE[evaluation.mode]}


def add_evaluation(page: Page, folder: ReportFolder, evaluation: Evaluation, worst: int) -> None:
    """The evaluation's sections (and files) added to a page: headline numbers, per class, confusion,
    precision-recall (instances), worst images."""
    result = evaluation.result
    page.cards += [(NAMES[k], fmt(result.get(k), 3)) for k in HEADLINE[evaluation.mode]]
    page.cards.append(("images", fmt(result.get("images", len(evaluation.details.per_image)))))
    _per_class_section(page, folder, evaluation)
    _confusion_section(page, folder, evaluation)
    if evaluation.mode == "instance" and evaluation.details.coco is not None:
        _pr_section(page, folder, evaluation)
    _worst_section(page, folder, evaluation, worst)


# ---------------------------------------------------------------- per class


def per_class_rows(evaluation: Evaluation) -> list[dict]:
    """The per-class table of any mode with its counts, and a note where a row has nothing to score."""
    mode, rows, details = evaluation.mode, evaluation.result.get("per_class", []), evaluation.details
    if mode == "semantic":
        confusion = details.confusion
        classes = confusion.shape[0] if confusion is not None else len(rows)
        truth = confusion.sum(1) if confusion is not None else np.zeros(classes, np.int64)
        predicted = confusion[:, :classes].sum(0) if confusion is not None else np.zeros(classes, np.int64)
        names = evaluation.space.names
        return [{"class": names[i] if i < len(names) else r["name"], "iou": r["iou"], "dice": r["dice"],
                 "boundary_f1": r.get("boundary_f1"), "gt pixels": int(truth[i]), "predicted pixels": int(predicted[i]),
                 "note": _presence_note(int(truth[i]), int(predicted[i]), "pixels")} for i, r in enumerate(rows)]
    if mode == "instance":
        truth, detected = _object_counts(details.coco)
        return [{"class": r["name"], "ap": r["ap"], "ap50": r["ap50"], "ap75": r["ap75"], "ap_small": r["ap_small"],
                 "ap_medium": r["ap_medium"], "ap_large": r["ap_large"], "gt objects": truth.get(r["id"], 0),
                 "detections": detected.get(r["id"], 0),
                 "note": _presence_note(truth.get(r["id"], 0), detected.get(r["id"], 0), "objects")} for r in rows]
    return [{"class": r["name"], "kind": "thing" if r.get("isthing") else "stuff", "pq": r["pq"], "sq": r["sq"],
             "rq": r["rq"], "tp": r["tp"], "fp": r["fp"], "fn": r["fn"],
             "note": _presence_note(r["tp"] + r["fn"], r["tp"] + r["fp"], "segments")} for r in rows]


def _presence_note(truth: int, predicted: int, what: str) -> str:
    if truth == 0 and predicted == 0:
        return "absent from ground truth and prediction: not scored"
    if truth == 0:
        return f"never in the ground truth: its {predicted:,} predicted {what} are all wrong"
    if predicted == 0:
        return "never predicted"
    return ""


def _object_counts(evaluator) -> tuple[dict[int, int], dict[int, int]]:
    """Ground-truth objects (crowds left out) and detections per category id."""
    if evaluator is None:
        return {}, {}
    truth: dict[int, int] = {}
    for ann in evaluator.cocoGt.dataset["annotations"]:
        if not ann.get("iscrowd"):
            truth[ann["category_id"]] = truth.get(ann["category_id"], 0) + 1
    detected: dict[int, int] = {}
    for ann in evaluator.cocoDt.dataset.get("annotations", []):
        detected[ann["category_id"]] = detected.get(ann["category_id"], 0) + 1
    return truth, detected


def _per_class_section(page: Page, folder: ReportFolder, evaluation: Evaluation) -> None:
    rows = per_class_rows(evaluation)
    blocks = page.section("per-class", "Per class")
    if not rows:
        blocks.append(paragraph("No classes to show.", note=True))
        return
    write_csv(folder.file("per_class.csv"), rows)
    key = {"semantic": "iou", "instance": "ap", "panoptic": "pq"}[evaluation.mode]
    ordered = sorted(rows, key=lambda r: (r[key] is None, -(r[key] or 0.0)))
    blocks.append(paragraph(f"{len(rows)} classes, best {HEADERS[key]} first; classes with nothing to score last "
                            f"(their note says why). As CSV: per_class.csv", note=True))
    blocks.append(table(ordered, text_columns=("class", "kind", "note"), muted=[r[key] is None for r in ordered],
                        scroll=len(rows) > 25, headers=HEADERS))


# ---------------------------------------------------------------- confusion


def _confusion_labels(evaluation: Evaluation) -> tuple[list[str], list[str]]:
    """Row and column names of the evaluation's confusion matrix."""
    confusion = evaluation.details.confusion
    if evaluation.mode == "instance":
        names = _category_names(evaluation.details.coco)
        return names + ["background (false detection)"], names + ["background (missed)"]
    names = list(evaluation.space.names[: confusion.shape[0]])
    names += [f"class {i}" for i in range(len(names), confusion.shape[0])]
    return names, names + ["void" if evaluation.mode == "panoptic" else "no class"]


def _category_names(evaluator) -> list[str]:
    cats = evaluator.cocoGt.cats
    return [str(cats[c].get("name", c)) for c in evaluator.params.catIds]


def _confusion_section(page: Page, folder: ReportFolder, evaluation: Evaluation) -> None:
    confusion = evaluation.details.confusion
    blocks = page.section("confusion", "Confusion matrix")
    if confusion is None or not confusion.any():
        blocks.append(paragraph("Nothing was counted: the ground truth and the predictions are empty.", note=True))
        return
    rows, columns = _confusion_labels(evaluation)
    what = "objects (matched at mask IoU 0.5 whatever their class)" if evaluation.mode == "instance" else "pixels"
    totals = confusion.sum(1, keepdims=True)
    shares = np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)
    write_matrix_csv(folder.file("confusion.csv"), confusion, rows, columns)
    write_matrix_csv(folder.file("confusion_normalized.csv"), shares, rows, columns, empty=totals[:, 0] == 0)
    keep_rows, keep_columns = _shown_classes(confusion, evaluation.mode)
    shown = confusion[np.ix_(keep_rows, keep_columns)]
    names = ([rows[i] for i in keep_rows], [columns[j] for j in keep_columns])
    whole = len(keep_rows) == len(rows) or (evaluation.mode == "instance" and len(keep_rows) <= MAX_MATRIX_CLASSES + 1)
    scope = "" if whole else f" ({len(keep_rows)} classes of the largest confusions; every class is in the CSV)"
    pictures = []
    for name, normalized, caption in (("confusion.png", False, f"{what}: rows ground truth, columns prediction"),
                                      ("confusion_normalized.png", True, "each ground-truth row as shares of it")):
        title = "shares of each ground-truth row" if normalized else f"counts of {what.split(' (')[0]}"
        plots.confusion_matrix(folder.file(name), shown, *names, title=title, normalized=normalized,
                               row_totals=totals[keep_rows, 0])
        pictures.append(figure(name, caption + scope))
    blocks.append(row(pictures))
    empty = [rows[i] for i in range(len(rows) - (evaluation.mode == "instance")) if totals[i, 0] == 0]
    if empty:
        blocks.append(paragraph(f"Never in the ground truth (their rows are blank, not 0/0): {', '.join(empty[:30])}"
                                + (f" and {len(empty) - 30} more" if len(empty) > 30 else ""), note=True))
    blocks.append(heading("Largest confusions"))
    blocks.append(table(top_confusions(confusion, rows, columns, TOP_CONFUSIONS if len(rows) > 10 else 10),
                        text_columns=("ground truth", "predicted as")))
    blocks.append(paragraph("As CSV: confusion.csv (counts), confusion_normalized.csv (row shares).",
                            note=True))


def _shown_classes(confusion: np.ndarray, mode: str) -> tuple[list[int], list[int]]:
    """Every row and column of a small matrix (instances: classes with objects or detections, and background);
    else the classes of the largest off-diagonal cells. The last column (no class, background) when it holds any."""
    classes = confusion.shape[0] - (mode == "instance")
    extra = [confusion.shape[1] - 1] if confusion.shape[1] > classes and confusion[:, -1].any() else []
    candidates = list(range(classes))
    if mode == "instance":
        candidates = [k for k in candidates if confusion[k].any() or confusion[:, k].any()]
        extra_row = [classes] if confusion[classes].any() else []
    else:
        extra_row = []
    if len(candidates) <= MAX_MATRIX_CLASSES:
        return candidates + extra_row, candidates + extra
    chosen: list[int] = []
    for cell in top_confusions(confusion, None, None, limit=confusion.size):
        for index in (cell["_row"], cell["_column"]):
            if index < classes and index not in chosen:
                chosen.append(index)
        if len(chosen) >= MAX_MATRIX_CLASSES:
            break
    chosen = sorted(chosen[:MAX_MATRIX_CLASSES])
    return chosen + extra_row, chosen + extra


def top_confusions(confusion: np.ndarray, rows: list[str] | None, columns: list[str] | None,
                   limit: int = TOP_CONFUSIONS) -> list[dict]:
    """The largest off-diagonal cells: ground truth, what it was predicted as, the count, and its share of the row."""
    off = confusion.astype(np.float64).copy()
    diagonal = min(off.shape)
    off[np.arange(diagonal), np.arange(diagonal)] = 0
    if confusion.shape[0] == confusion.shape[1]:  # instance: background predicted as background is not a cell
        off[-1, -1] = 0
    totals = confusion.sum(1)
    found = []
    for flat in np.argsort(-off, axis=None, kind="stable")[:limit]:
        i, j = np.unravel_index(flat, off.shape)
        if off[i, j] <= 0:
            break
        found.append({"ground truth": rows[i] if rows else i, "predicted as": columns[j] if columns else j,
                      "count": int(confusion[i, j]), "share of the row": float(confusion[i, j] / totals[i]),
                      "_row": int(i), "_column": int(j)})
    if rows is not None:
        for cell in found:
            del cell["_row"], cell["_column"]
    return found


# ---------------------------------------------------------------- precision-recall


def pr_curves(evaluator) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]]]:
    """Recall thresholds and, per class with ground truth (best AP first) after the mean over classes, the
    precision at IoU 0.50, 0.75 and averaged over 0.50:0.95 (all areas, 100 detections); NaN where undefined."""
    precision = np.asarray(evaluator.eval["precision"], np.float64)[:, :, :, 0, -1]  # (T, R, K)
    precision = np.where(precision < 0, np.nan, precision)
    thresholds = np.asarray(evaluator.params.iouThrs)
    at = {"IoU 0.50": np.isclose(thresholds, 0.5), "IoU 0.75": np.isclose(thresholds, 0.75)}
    names = _category_names(evaluator)

    def curves(k: slice | int) -> dict[str, np.ndarray]:
        block = precision[:, :, k]
        with warnings.catch_warnings():  # a class or threshold with no defined precision averages to NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            found = {label: np.nanmean(block[mask].reshape(-1, block.shape[1], *block.shape[2:]), axis=0)
                     for label, mask in at.items()}
            found["IoU 0.50:0.95"] = np.nanmean(block, axis=0)
            if block.ndim == 3:  # the mean over classes
                found = {label: np.nanmean(values, axis=-1) for label, values in found.items()}
        return found

    result = {"mean over classes": curves(slice(None))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ap = np.nanmean(precision, axis=(0, 1))
    for k in sorted(range(len(names)), key=lambda k: -np.nan_to_num(ap[k], nan=-1)):
        if not np.isnan(ap[k]):
            result[names[k]] = curves(k)
    return np.asarray(evaluator.params.recThrs), result


def _pr_section(page: Page, folder: ReportFolder, evaluation: Evaluation) -> None:
    blocks = page.section("precision-recall", "Precision-recall")
    recall, curves = pr_curves(evaluation.details.coco)
    if len(curves) == 1 or np.all(np.isnan(curves["mean over classes"]["IoU 0.50"])):
        blocks.append(paragraph("No class has ground-truth objects: there is no curve to draw.", note=True))
        return
    rows = [{"class": name, "iou": label, "recall": round(float(r), 2), "precision": None if np.isnan(p) else float(p)}
            for name, by_iou in curves.items() for label, values in by_iou.items() for r, p in zip(recall, values)]
    write_csv(folder.file("pr_curves.csv"), rows)
    plots.precision_recall(folder.file("pr_curves.png"), recall, curves,
                           "mask precision against recall (COCOeval, all areas, 100 detections)")
    shown = min(len(curves) - 1, plots.MAX_PR_PANELS)
    blocks.append(figure("pr_curves.png", f"the mean over classes, then {shown} classes by AP"
                         + (f" (all {len(curves) - 1} in pr_curves.csv)" if shown < len(curves) - 1 else "")))


# ---------------------------------------------------------------- worst images


def worst_images(details: ScoreDetails, count: int) -> list[tuple[str, float]]:
    """The `count` images with the lowest score (images with nothing to score left out), worst first."""
    scored = [(name, score) for name, score in zip(details.images, details.per_image) if score is not None]
    return sorted(scored, key=lambda pair: pair[1])[:count]


def _worst_section(page: Page, folder: ReportFolder, evaluation: Evaluation, count: int) -> None:
    details, metric = evaluation.details, PRIMARY_METRIC[evaluation.mode]
    label = NAMES[metric]
    blocks = page.section("worst", "Worst images")
    ranked = sorted(zip(details.images, details.per_image), key=lambda p: (p[1] is None, p[1] or 0.0))
    write_csv(folder.file("per_image.csv"), [{"image": n, metric: s} for n, s in ranked])
    chosen = worst_images(details, count)
    if not chosen:
        blocks.append(paragraph("No image had anything to score.", note=True))
        return
    blocks.append(paragraph(f"By each image's own {label}; image, prediction, ground truth and errors (green correct, "
                            f"red wrong or extra, blue missed). Every image's score: per_image.csv", note=True))
    missing, figures = 0, []
    for number, (name, score) in enumerate(chosen, start=1):
        file = f"worst/{number:02d}_{_safe(name)}.png"
        missing += not draw_pair(folder.file(file), evaluation, name)
        figures.append(figure(file, f"{number}. {name}: {label} {score:.3f}"))
    blocks.append(gallery(figures))
    if missing:
        blocks.insert(1, paragraph(f"{missing} image(s) were not found beside the labels: drawn on grey "
                                   "(give the images' folder with --images).", note=True))


def draw_pair(path: Path, evaluation: Evaluation, name: str) -> bool:
    """One image as `visualize --side-by-side --gt` draws it, into `path`; False if the image itself was not found
    (its labels are then drawn on grey)."""
    image, pred, gt = evaluation.pictures(name)
    found = image is not None
    if not found:
        image = np.full((*gt.values.shape[:2], 3), 128, np.uint8)
    picture, _ = compare_picture(*_smaller(image, pred, gt), evaluation.space)
    io.write_image(path, picture)
    return found


def _smaller(image: np.ndarray, pred: LabelMap, gt: LabelMap) -> tuple[np.ndarray, LabelMap, LabelMap]:
    """The image and both label maps at most WORST_SIDE on their longer side, small ones enlarged to at least
    MIN_WORST_SIDE (labels by nearest neighbour)."""
    import cv2

    small = draw.thumbnail(image, WORST_SIDE)
    times = -(-MIN_WORST_SIDE // max(small.shape[:2]))
    if times > 1:
        small = cv2.resize(small, (small.shape[1] * times, small.shape[0] * times), interpolation=cv2.INTER_NEAREST)
    if small.shape == image.shape:
        return image, pred, gt
    size = (small.shape[1], small.shape[0])

    def resized(labels: LabelMap) -> LabelMap:
        values = labels.values
        wide = values.astype(np.int32) if values.dtype not in (np.uint8, np.uint16, np.int32) else values
        return LabelMap(labels.kind, cv2.resize(wide, size, interpolation=cv2.INTER_NEAREST).astype(values.dtype),
                        labels.classes, labels.scores, labels.space)

    return small, resized(pred), resized(gt)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]


# ---------------------------------------------------------------- CSV


def write_csv(path: Path, rows: list[dict]) -> Path:
    with io.atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return path


def write_matrix_csv(path: Path, matrix: np.ndarray, rows: list[str], columns: list[str],
                     empty: np.ndarray | None = None) -> Path:
    """A matrix with its row and column names; rows flagged `empty` are left blank (no 0/0)."""
    with io.atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["ground truth \\ predicted", *columns[: matrix.shape[1]]])
        for i, values in enumerate(matrix):
            if empty is not None and i < len(empty) and empty[i]:
                writer.writerow([rows[i], *([""] * matrix.shape[1])])
            else:
                writer.writerow([rows[i], *(f"{v:.6f}" if isinstance(v, float | np.floating) else int(v)
                                            for v in values)])
    return path
