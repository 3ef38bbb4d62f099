"""`segcli visualize`: draw predictions (and their errors against ground truth) on the images.

Labels come from a `segcli predict --out DIR` folder (segcli.outputs) or from one mask file. Each
input image gets one picture: the prediction overlaid (or, with ground truth, the error map), a
legend on its right, or with `side_by_side` the panels image | prediction | ground truth | errors.

Conventions:
- Class names and colours: `classes` (classes.txt) if given, else what the predictions carry
  (categories.json that predict writes, panoptic.json categories, the semantic PNG's palette), else
  "class i" and the default palette.
- Background: the first class named "background", else the first class coloured black (the VOC
  convention, and the default palette's class 0). It is left clear and left out of the legend
  and of the IoU; with no such class every class is drawn.
- Per-image IoU: the mean IoU over the classes present in the ground truth or the prediction
  (background excluded; a class predicted but absent from the ground truth counts 0), when both
  sides carry classes; foreground IoU (any object vs none) for instance maps, which have none.
The service never prints: it reports through `callback(event: str, **info)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segcli import draw, io, outputs
from segcli.data.classes import from_coco_categories, parse_classes_txt
from segcli.errors import DataError, InputError, SegcliError, UsageError
from segcli.metrics import ConfusionMatrix
from segcli.structures import IGNORE_INDEX, LabelMap, LabelSpace, default_palette, parse_mode

Callback = Callable[..., None]

GRID_THUMBNAIL = 256  # longest side of a contact-sheet cell, so a sheet of many images stays viewable


@dataclass
class VisualizeConfig:
    inputs: list[str]  # image files, folders, globs, "-" (as for predict)
    out: Path = Path("runs/visualize")
    pred: Path | None = None  # a `segcli predict --out` folder
    mask: Path | None = None  # or one label PNG for one image
    mask_kind: str | None = None  # what --mask holds (None: semantic); a panoptic PNG is drawn as classless segments
    mode: str | None = None  # which prediction of --pred to draw (default: panoptic > instance > semantic)
    gt: Path | None = None  # a label PNG, or a folder of <stem>.png
    classes: Path | None = None  # classes.txt: names, thing flags and colours in index order
    alpha: float = 0.5  # opacity of the label colours over the image
    contours: bool | None = None  # None: outlines for instances and things, none for semantic classes
    legend: bool = True
    side_by_side: bool = False
    grid: bool = False  # also write grid.png, a contact sheet of every picture
    cols: int = 4
    ext: str = "png"
    recursive: bool = False


@dataclass
class VisualizeSummary:
    mode: str
    outputs: list[Path] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (input, message)
    ious: dict[str, float | None] = field(default_factory=dict)  # stem -> per-image IoU, with --gt
    grid: Path | None = None


# ---------------------------------------------------------------- the run


def visualize(config: VisualizeConfig, callback: Callback | None = None) -> VisualizeSummary:
    """Draw every input and write `<stem>.<ext>` (and grid.png) into config.out."""
    notify = callback if callback is not None else (lambda *a, **k: None)
    _check_options(config)
    paths = io.expand_inputs(config.inputs, recursive=config.recursive)
    if not paths:
        raise UsageError("no input images: give image files, folders, quoted globs or - (paths on stdin)")
    if (config.mask is not None or _is_file(config.gt)) and len(paths) > 1:
        which = "--mask" if config.mask is not None else "--gt FILE"
        raise UsageError(f"{which} labels one image but {len(paths)} were given; pass one image (or a --gt folder)")
    source = _source(config)
    classes = parse_classes_txt(config.classes) if config.classes else None
    summary = VisualizeSummary(mode=source.mode)
    thumbnails = []
    stems = io.unique_stems(paths)
    notify("start", total=len(paths), mode=source.mode, out=str(config.out))
    for path, stem in zip(paths, stems):
        try:
            picture, iou = _picture(path, stem, source, classes, config)
            output = io.write_image(config.out / f"{stem}.{config.ext}", picture)
        except SegcliError as error:
            summary.failures.append((str(path), str(error)))
            notify("image", input=str(path), ok=False, error=str(error))
            continue
        summary.outputs.append(output)
        if config.gt is not None:
            summary.ious[stem] = iou
        if config.grid:
            thumbnails.append((stem, draw.thumbnail(picture, GRID_THUMBNAIL)))
        notify("image", input=str(path), ok=True, output=str(output), iou=iou)
    if thumbnails:
        sheet = draw.grid([t for _, t in thumbnails], cols=config.cols, labels=[s for s, _ in thumbnails])
        summary.grid = io.write_image(config.out / f"grid.{config.ext}", sheet)
    notify("done", written=len(summary.outputs), failed=len(summary.failures))
    return summary


def _check_options(config: VisualizeConfig) -> None:
    if (config.pred is None) == (config.mask is None):
        raise UsageError("give exactly one of --pred DIR (a segcli predict output folder) "
                         "or --mask FILE (one label PNG)")
    if config.mask is not None and config.mode is not None:
        raise UsageError("--mode picks a prediction of a --pred folder; with --mask use --mask-kind")
    if config.pred is not None and config.mask_kind is not None:
        raise UsageError("--mask-kind says what --mask holds; a --pred folder knows its predictions: "
                         "pick one with --mode")
    if config.mode is not None:
        parse_mode(config.mode)
    if config.mask_kind is not None:
        parse_mode(config.mask_kind, "--mask-kind")
    if not 0.0 <= config.alpha <= 1.0:
        raise UsageError(f"--alpha {config.alpha}: choose an opacity between 0 and 1")
    if config.cols < 1:
        raise UsageError(f"--cols {config.cols}: use at least one column")
    if config.ext not in ("png", "jpg"):
        raise UsageError(f"--ext {config.ext}: choose png or jpg")
    paths = (("--pred", config.pred), ("--mask", config.mask), ("--gt", config.gt), ("--classes", config.classes))
    for option, path in paths:
        if path is not None and not Path(path).exists():
            raise UsageError(f"{option} {path}: no such file or folder")
    for option, path, kind in (("--pred", config.pred, "folder"), ("--mask", config.mask, "file"),
                               ("--classes", config.classes, "file")):
        if path is not None and Path(path).is_dir() != (kind == "folder"):
            found = "a folder" if kind == "file" else "a file"
            raise UsageError(f"{option} {path}: expected a {kind}, this is {found}")


def _is_file(path: Path | None) -> bool:
    return path is not None and Path(path).is_file()


# ---------------------------------------------------------------- where labels come from


@dataclass
class _Source:
    mode: str
    pred: Path | None = None
    mask: Path | None = None
    panoptic: dict[str, dict] = field(default_factory=dict)  # image id -> panoptic.json annotation
    categories: list[dict] = field(default_factory=list)  # panoptic.json categories
    instances: dict[str, list[dict]] = field(default_factory=dict)  # image id -> instances.json results


def _source(config: VisualizeConfig) -> _Source:
    if config.mask is not None:
        return _Source(mode=config.mask_kind or "semantic", mask=Path(config.mask))
    pred = Path(config.pred)
    present = outputs.modes_present(pred)  # the richest prediction a folder holds is drawn
    if not present:
        raise UsageError(f"--pred {pred}: not a segcli predict output folder "
                         "(no semantic/, instance/ or panoptic/ inside)")
    if config.mode is not None and config.mode not in present:
        raise UsageError(f"--pred {pred} has no {config.mode}/ predictions; it has {', '.join(present)} "
                         "(choose with --mode)")
    source = _Source(mode=config.mode or present[0], pred=pred, categories=outputs.read_categories(pred))
    if source.mode == "panoptic":
        source.panoptic, source.categories = outputs.read_panoptic(pred)
    elif source.mode == "instance":
        source.instances = outputs.read_instance_results(pred)
    return source


def _prediction(source: _Source, path: Path, stem: str, classes: LabelSpace | None) -> LabelMap:
    if source.mask is not None:
        return _read_mask(source.mask, source.mode)
    candidates = [stem, path.stem]
    png = outputs.find_label_png(source.pred, source.mode, candidates)
    if png is None:
        raise InputError(f"{path}: no prediction {outputs.label_png(source.pred, source.mode, stem)}; "
                         "run segcli predict on it first")
    named = from_coco_categories(source.categories, panoptic=True) if source.categories else None
    if source.mode == "semantic":
        labels = _read_semantic(png)
        labels.space = _named(labels.space, named)
        return labels
    if source.mode == "instance":
        results = next((source.instances[s] for s in candidates if s in source.instances), [])
        labels = _read_instances(png, results)
        labels.space = named
        return labels
    annotation = next((source.panoptic[s] for s in candidates if s in source.panoptic), None)
    if annotation is None:
        raise InputError(f"{path}: {source.pred / outputs.AGGREGATES['panoptic']} has no annotation for image {stem!r}")
    return _read_panoptic(png, annotation, classes or from_coco_categories(source.categories, panoptic=True))


def _named(from_png: LabelSpace | None, named: LabelSpace | None) -> LabelSpace | None:
    """The names of categories.json with the colours the PNG was written with (they agree unless edited)."""
    if named is None or from_png is None:
        return named or from_png
    colors = [from_png.colors[i] if i < len(from_png.colors) else c for i, c in enumerate(named.colors)]
    return LabelSpace(named.names, isthing=named.isthing, colors=colors, category_ids=named.category_ids)


def _read_semantic(png: Path) -> LabelMap:
    values = _class_indices(io.read_label_png(png), png)
    palette = (io.read_palette(png) or [])[:IGNORE_INDEX]
    space = LabelSpace([f"class {i}" for i in range(len(palette))], colors=palette) if palette else None
    return LabelMap("semantic", values, space=space)


def _read_instances(png: Path, results: list[dict]) -> LabelMap:
    """predict numbers instances 1..N in descending score, so the n-th best result is id n."""
    values = _two_dimensional(io.read_label_png(png), png, "instance-id")
    ranked = sorted(results, key=lambda r: -r.get("score", 0.0))
    return LabelMap("instance", values, classes={n: int(r["category_id"]) for n, r in enumerate(ranked, 1)},
                    scores={n: float(r["score"]) for n, r in enumerate(ranked, 1) if "score" in r})


def _read_panoptic(png: Path, annotation: dict, space: LabelSpace) -> LabelMap:
    """Segment ids with their classes from segments_info (category id -> class index of `space`)."""
    values = io.read_panoptic_png(png)
    classes = {}
    for segment in annotation.get("segments_info", []):
        if segment["category_id"] not in space.category_ids:
            raise DataError(f"{png}: segment {segment['id']} has category_id {segment['category_id']}, "
                            "which no category lists")
        classes[int(segment["id"])] = space.index_of_category(segment["category_id"])
    unknown = sorted(set(np.unique(values).tolist()) - set(classes) - {0})
    if unknown:
        raise DataError(f"{png}: segment ids {unknown[:5]} have no segments_info entry in the json")
    return LabelMap("panoptic", values, classes=classes, space=space)


def _read_mask(path: Path, kind: str) -> LabelMap:
    """One --mask file. A panoptic PNG has no classes without its json: its segments are drawn as instances."""
    if kind == "panoptic":
        return LabelMap("instance", io.read_panoptic_png(path))
    if kind == "instance":
        return LabelMap("instance", _two_dimensional(io.read_label_png(path), path, "instance-id"))
    labels = _read_semantic(path)
    if set(np.unique(labels.values).tolist()) == {0, 255}:
        # A 0/255 binary mask: 255 is the object here, not void (read as class 1, as train --binary does).
        return LabelMap("semantic", np.where(labels.values == 255, 1, 0).astype(np.uint8))
    return labels


def _two_dimensional(values: np.ndarray, path: Path, what: str) -> np.ndarray:
    if values.ndim != 2:
        raise DataError(f"{path}: an RGB colour image, not a {what} PNG; "
                        "write one value per pixel (grey or palette PNG)")
    return values


def _class_indices(values: np.ndarray, path: Path) -> np.ndarray:
    values = _two_dimensional(values, path, "class-index")
    if values.max(initial=0) > IGNORE_INDEX:
        raise DataError(f"{path}: value {int(values.max())} is no class index (0..254, 255 = void); "
                        "is it an instance-id PNG? then use --mode/--mask-kind instance")
    return values.astype(np.uint8)


def _ground_truth(gt: Path, path: Path, stem: str, mode: str, space: LabelSpace) -> LabelMap:
    """--gt for one image, read as the prediction's mode reads labels; panoptic also takes a class-index PNG."""
    candidates = (gt / f"{name}.png" for name in (stem, path.stem))
    png = gt if gt.is_file() else next((c for c in candidates if c.is_file()), None)
    if png is None:
        raise InputError(f"{path}: no ground truth {gt / (stem + '.png')}")
    if mode == "semantic":
        return LabelMap("semantic", _class_indices(io.read_label_png(png), png))
    if mode == "instance":
        return LabelMap("instance", _two_dimensional(io.read_label_png(png), png, "instance-id"))
    values = io.read_label_png(png)
    if values.ndim == 2:
        return LabelMap("semantic", _class_indices(values, png))
    return _read_panoptic(png, _panoptic_gt_annotation(png, stem), space)


def _panoptic_gt_annotation(png: Path, stem: str) -> dict:
    """panopticapi's convention: the PNGs of NAME.json live in the folder NAME/ beside it."""
    json_path = png.parent.with_suffix(".json")
    if not json_path.is_file():
        raise InputError(f"{png}: a COCO panoptic PNG needs its json for classes ({json_path} not found); "
                         "or give a class-index PNG as --gt")
    data = outputs.json_with(json_path, "annotations")
    by_name = {Path(a.get("file_name", "")).stem: a for a in data["annotations"]}
    annotation = by_name.get(png.stem) or by_name.get(stem)
    if annotation is None:
        raise InputError(f"{json_path}: no annotation with file_name {png.name}")
    return annotation


# ---------------------------------------------------------------- drawing one image


def _picture(path: Path, stem: str, source: _Source, classes: LabelSpace | None,
             config: VisualizeConfig) -> tuple[np.ndarray, float | None]:
    """One image's picture (with its legend) and, with ground truth, its IoU."""
    image = io.read_image(path)
    pred = _prediction(source, path, stem, classes)
    _check_size(pred.values, image, path, "prediction")
    space = _complete(classes or pred.space)
    background = _background(space)
    overlay = draw.overlay_labels(image, pred, space, config.alpha, _skip(background), config.contours)
    rows = draw.legend_rows(pred, space, _skip(background))
    iou = None
    if config.gt is None:
        picture = draw.side_by_side([image, overlay], ["image", "prediction"]) if config.side_by_side else overlay
    else:
        gt = _ground_truth(Path(config.gt), path, stem, source.mode, space)
        _check_size(gt.values, image, path, "ground truth")
        picture, iou = _with_errors(image, overlay, pred, gt, space, background, config)
        rows = _error_rows(rows, gt, space, background, config.side_by_side)
    if config.legend and rows:
        picture = draw.with_legend(picture, [name for name, _ in rows], [color for _, color in rows])
    return picture, iou


def _error_rows(rows: list, gt: LabelMap, space: LabelSpace, background: int | None, side_by_side: bool) -> list:
    """The legend beside an error map: the classes of both maps when they are shown, then TP, FP and FN."""
    if not side_by_side:
        rows = []  # the error map alone shows no class or instance colours
    elif gt.kind != "instance":  # instance colours are per map: the ground truth's share no rows
        rows = _merge_rows(rows, draw.legend_rows(gt, space, _skip(background)))
    return rows + [(draw.ERROR_NAMES[k], draw.ERROR_COLORS[k]) for k in ("tp", "fp", "fn")]


def compare_picture(image: np.ndarray, pred: LabelMap, gt: LabelMap, space: LabelSpace | None,
                    alpha: float = 0.5) -> tuple[np.ndarray, float | None]:
    """What `visualize --side-by-side --gt` draws for one image: image | prediction | ground truth | errors, with
    the legend, and the image's IoU (eval --report's worst images)."""
    space = _complete(space)
    background = _background(space)
    config = VisualizeConfig(inputs=[], alpha=alpha, side_by_side=True)
    overlay = draw.overlay_labels(image, pred, space, alpha, _skip(background))
    picture, iou = _with_errors(image, overlay, pred, gt, space, background, config)
    rows = _error_rows(draw.legend_rows(pred, space, _skip(background)), gt, space, background, True)
    return draw.with_legend(picture, [name for name, _ in rows], [color for _, color in rows]), iou


def _with_errors(image: np.ndarray, overlay: np.ndarray, pred: LabelMap, gt: LabelMap, space: LabelSpace,
                 background: int | None, config: VisualizeConfig) -> tuple[np.ndarray, float | None]:
    """The error map with the IoU in its corner, or image | prediction | ground truth | errors."""
    gt_map, pred_map, compared = _comparable(gt, pred, background)
    compared_background = 0 if compared == "foreground" else background
    iou = _iou(gt_map, pred_map, compared_background)
    errors = draw.error_map(image, gt_map, pred_map, compared_background)
    score = ("fg IoU " if compared == "foreground" else "mIoU ") + ("-" if iou is None else f"{iou:.3f}")
    if not config.side_by_side:
        return draw.text(errors, score, (2, 2), max_width=errors.shape[1] - 4), iou
    panels = [image, overlay, draw.overlay_labels(image, gt, space, config.alpha, _skip(background), config.contours),
              errors]
    return draw.side_by_side(panels, ["image", "prediction", "ground truth", f"errors, {score}"]), iou


def _check_size(values: np.ndarray, image: np.ndarray, path: Path, what: str) -> None:
    if values.shape[:2] != image.shape[:2]:
        raise InputError(f"{path}: the {what} is {values.shape[1]}x{values.shape[0]} px, the image "
                         f"{image.shape[1]}x{image.shape[0]}; labels must match their image")


def _complete(space: LabelSpace | None) -> LabelSpace:
    """A label space naming and colouring every class index 0..254, so any value in a PNG can be drawn."""
    names = list(space.names) if space else []
    colors = list(space.colors) if space else []
    isthing = list(space.isthing) if space else []
    ids = list(space.category_ids) if space else []
    extra = range(len(names), IGNORE_INDEX)
    palette = default_palette(IGNORE_INDEX)
    # Filler classes get negative category ids: no COCO file uses them, so no category is misnamed.
    return LabelSpace(names + [f"class {i}" for i in extra], isthing + [False] * len(extra),
                      colors + [palette[i] for i in extra], ids + [-1 - i for i in extra])


def _background(space: LabelSpace) -> int | None:
    for i, name in enumerate(space.names):
        if name.strip().lower() in ("background", "_background_"):
            return i
    return next((i for i, color in enumerate(space.colors) if tuple(color) == (0, 0, 0)), None)


def _skip(background: int | None) -> tuple[int, ...]:
    """Classes left clear and out of the legend: void, and the background class when there is one."""
    return (IGNORE_INDEX,) if background is None else (background, IGNORE_INDEX)


def _merge_rows(first: list, second: list) -> list:
    names = {name for name, _ in first}
    return first + [row for row in second if row[0] not in names]


# ---------------------------------------------------------------- errors and IoU


def _comparable(gt: LabelMap, pred: LabelMap, background: int | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Two maps error_map can compare: class maps when both sides carry classes, else foreground (1) vs none (0)."""
    gt_classes, pred_classes = _class_map(gt), _class_map(pred)
    if gt_classes is not None and pred_classes is not None:
        return gt_classes, pred_classes, "classes"
    return _foreground(gt, background), _foreground(pred, background), "foreground"


def _class_map(labels: LabelMap) -> np.ndarray | None:
    if labels.kind == "semantic":
        return labels.values
    if labels.kind == "panoptic" and labels.classes:
        table = np.full(int(labels.values.max()) + 1, IGNORE_INDEX, np.uint8)  # void and unlisted ids: void
        for segment, label in labels.classes.items():
            if segment < table.size:
                table[segment] = label
        return table[labels.values]
    return None


def _foreground(labels: LabelMap, background: int | None) -> np.ndarray:
    if labels.kind != "semantic":
        return (labels.values > 0).astype(np.uint8)
    values = labels.values
    labelled = values != IGNORE_INDEX
    if background is not None:
        labelled &= values != background
    out = labelled.astype(np.uint8)
    out[values == IGNORE_INDEX] = IGNORE_INDEX  # void stays void (ignored) rather than background
    return out


def _iou(gt: np.ndarray, pred: np.ndarray, background: int | None) -> float | None:
    """Mean IoU over the classes present in either map, background excluded (None when there are none)."""
    matrix = ConfusionMatrix(IGNORE_INDEX)  # classes 0..254; a void prediction counts as wrong
    matrix.update(gt, pred)
    ious = [c["iou"] for c in matrix.compute()["per_class"] if c["iou"] is not None and c["id"] != background]
    return float(np.mean(ious)) if ious else None
