"""All drawing: numpy in, numpy out (RGB uint8), OpenCV for text and shapes.

Class colours come from the LabelSpace palette; instances get colours that differ between
touching neighbours (greedy graph colouring over a fixed set of distinct hues); panoptic segments
take their class's hue in an instance-specific shade.
"""

from __future__ import annotations

import colorsys
import functools

import cv2
import numpy as np

from segcli.structures import IGNORE_INDEX, LabelMap, LabelSpace

VOID_COLOR = (255, 255, 255)
ERROR_COLORS = {"tp": (40, 170, 60), "fp": (230, 60, 40), "fn": (40, 110, 230)}  # green, red, blue
ERROR_NAMES = {"tp": "correct (TP)", "fp": "wrong or extra (FP)", "fn": "missed (FN)"}
FONT = cv2.FONT_HERSHEY_SIMPLEX
MAX_LEGEND_INSTANCES = 20  # more rows than this make a legend taller than most images


def _distinct_hues(n: int) -> np.ndarray:
    """n saturated colours spread by the golden ratio, so consecutive ones differ strongly."""
    colors = []
    for i in range(n):
        h = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.85, 0.95 if i % 2 == 0 else 0.75)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return np.array(colors, np.uint8)


INSTANCE_PALETTE = _distinct_hues(12)


def colorize(labels: np.ndarray, colors: list[tuple[int, int, int]]) -> np.ndarray:
    """Class-index map -> RGB; 255 (ignore/void) is white, unknown indices black."""
    table = np.zeros((256, 3), np.uint8)
    table[: len(colors)] = np.array(colors[:256], np.uint8).reshape(-1, 3)
    table[IGNORE_INDEX] = VOID_COLOR
    if labels.dtype != np.uint8:
        labels = np.clip(labels, 0, 255).astype(np.uint8)
    # OpenCV's colour map with a user table: 0.12 ms for 512x512, without the GIL (cv2.LUT over the map merged into
    # three channels 0.36 ms; NumPy's fancy indexing about 10x slower, and it holds the GIL). OpenCV's order is BGR.
    return cv2.cvtColor(cv2.applyColorMap(labels, table[:, None, ::-1].copy()), cv2.COLOR_BGR2RGB)


def blend(image: np.ndarray, colored: np.ndarray, alpha: float, where: np.ndarray | None = None) -> np.ndarray:
    """alpha * colours + (1 - alpha) * image, only where `where` is True (everywhere by default)."""
    # uint8 arithmetic in OpenCV: float copies of a 10000 px photo would cost 1.2 GB each.
    mix = cv2.addWeighted(np.ascontiguousarray(image), 1 - alpha,
                          np.ascontiguousarray(colored, dtype=np.uint8), alpha, 0)
    if where is None:
        return mix
    out = image.copy()
    np.copyto(out, mix, where=where[..., None])
    return out


_EXACT_FLOAT32_COUNT = 1 << 24  # cv2.calcHist counts in float32: exact up to here


def byte_counts(labels: np.ndarray) -> np.ndarray:
    """(256,) int64: how many pixels of a uint8 map hold each value. OpenCV's histogram takes 0.1 ms for 512x512
    where np.bincount takes 0.4 (it widens every byte to int64 first); maps beyond 2**24 pixels go in blocks."""
    flat = labels.reshape(1, -1)
    counts = np.zeros(256, np.int64)
    for start in range(0, flat.shape[1], _EXACT_FLOAT32_COUNT):
        block = np.ascontiguousarray(flat[:, start : start + _EXACT_FLOAT32_COUNT])
        counts += cv2.calcHist([block], [0], None, [256], [0, 256]).reshape(256).astype(np.int64)
    return counts


def present_values(labels: np.ndarray) -> list[int]:
    """The distinct values of a label map, ascending; class maps (uint8) by counting, 5x faster than sorting."""
    if labels.dtype == np.uint8:
        return np.flatnonzero(byte_counts(labels)).tolist()
    return np.unique(labels).tolist()


def overlay_semantic(image: np.ndarray, labels: np.ndarray, colors, alpha: float = 0.5, skip: tuple[int, ...] = (),
                     contours: bool = False) -> np.ndarray:
    """The image with each pixel tinted by its class colour (classes in `skip`, e.g. background, left clear)."""
    where = ~np.isin(labels, skip) if skip else None
    out = blend(image, colorize(labels, colors), alpha, where)
    if not contours:
        return out
    present = [c for c in present_values(labels) if c not in skip and c < len(colors)]
    return draw_contours(out, labels, {c: tuple(colors[c]) for c in present})


def _neighbours(ids: np.ndarray) -> dict[int, set[int]]:
    """Instance ids that touch (4-neighbourhood), from horizontally and vertically adjacent pixel pairs."""
    pairs = np.concatenate([
        np.stack([ids[:, :-1].ravel(), ids[:, 1:].ravel()], 1),
        np.stack([ids[:-1, :].ravel(), ids[1:, :].ravel()], 1),
    ])
    pairs = pairs[(pairs[:, 0] != pairs[:, 1]) & (pairs[:, 0] > 0) & (pairs[:, 1] > 0)]
    graph: dict[int, set[int]] = {}
    for a, b in np.unique(pairs, axis=0).tolist():
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set()).add(a)
    return graph


def instance_colors(ids: np.ndarray, tracked: bool = False) -> dict[int, tuple[int, int, int]]:
    """A colour per instance id such that touching instances never share one (greedy colouring); with `tracked`,
    each id's own colour, so an object keeps it from frame to frame."""
    if tracked:
        return {n: tuple(int(v) for v in INSTANCE_PALETTE[n % len(INSTANCE_PALETTE)]) for n in present_values(ids) if n}
    graph = _neighbours(ids)
    chosen: dict[int, int] = {}
    for number in sorted(int(i) for i in np.unique(ids) if i > 0):
        taken = {chosen[n] for n in graph.get(number, ()) if n in chosen}
        # Start from the id's own slot so isolated instances still vary; more than 12 neighbours reuse one.
        candidates = [(number + k) % len(INSTANCE_PALETTE) for k in range(len(INSTANCE_PALETTE))]
        chosen[number] = next((c for c in candidates if c not in taken), candidates[0])
    return {n: tuple(int(v) for v in INSTANCE_PALETTE[s]) for n, s in chosen.items()}


def colorize_ids(ids: np.ndarray, colors: dict[int, tuple[int, int, int]]) -> np.ndarray:
    out = np.zeros((*ids.shape, 3), np.uint8)
    for number, color in colors.items():
        out[ids == number] = color
    return out


def overlay_instances(image: np.ndarray, ids: np.ndarray, alpha: float = 0.5, contours: bool = True,
                      tracked: bool = False) -> np.ndarray:
    """Each instance tinted in its own colour, with its outline."""
    colors = instance_colors(ids, tracked)
    out = blend(image, colorize_ids(ids, colors), alpha, ids > 0)
    return draw_contours(out, ids, colors) if contours else out


def panoptic_colors(segment_labels: dict[int, int], isthing: list[bool], class_colors,
                    tracked: bool = False) -> dict[int, tuple[int, int, int]]:
    """Stuff: its class colour; things: the class colour in a shade that differs per instance (with `tracked`, a
    shade that follows from the segment id alone, so an object keeps it from frame to frame)."""
    colors = {}
    counts: dict[int, int] = {}
    for segment_id, label in sorted(segment_labels.items()):
        base = np.array(class_colors[label], np.float32)
        if isthing[label]:
            k = segment_id if tracked else counts.get(label, 0)
            counts[label] = k + 1
            shade = 0.55 + 0.45 * ((k * 0.618033988749895) % 1.0)  # 0.55..1.0 of the class colour, then lightened
            base = np.clip(base * shade + (1 - shade) * 255 * (k % 2), 0, 255)
        colors[segment_id] = tuple(int(v) for v in base)
    return colors


def overlay_panoptic(image: np.ndarray, panoptic: np.ndarray, segment_labels: dict[int, int], isthing: list[bool],
                     class_colors, alpha: float = 0.5, contours: bool = True, tracked: bool = False) -> np.ndarray:
    colors = panoptic_colors(segment_labels, isthing, class_colors, tracked)
    out = blend(image, colorize_ids(panoptic, colors), alpha, panoptic > 0)
    thing_segments = {s for s, lab in segment_labels.items() if isthing[lab]}
    return draw_contours(out, panoptic, colors, only=thing_segments) if contours else out


def display_rgb(image: np.ndarray) -> np.ndarray:
    """An image of any channel count as RGB to draw on: grey repeated, two channels as red and green, the first
    three of more (a model's input of other than three channels: train --channels)."""
    image = image if image.ndim == 3 else image[:, :, None]
    channels = image.shape[2]
    if channels == 3:
        return image
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 2:
        return np.concatenate([image, np.zeros_like(image[:, :, :1])], axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def draw_labels(image: np.ndarray, labels: LabelMap, space: LabelSpace, alpha: float = 0.5, skip: tuple[int, ...] = (),
                contours: bool | None = None, legend: bool = True) -> np.ndarray:
    """The image with a label map drawn on it (overlay_labels) and, when `legend`, the legend of what it shows."""
    drawn = overlay_labels(image, labels, space, alpha, skip, contours)
    rows = legend_rows(labels, space, skip) if legend else []
    return with_legend(drawn, [name for name, _ in rows], [color for _, color in rows]) if rows else drawn


def overlay_labels(image: np.ndarray, labels: LabelMap, space: LabelSpace, alpha: float = 0.5,
                   skip: tuple[int, ...] = (), contours: bool | None = None) -> np.ndarray:
    """Semantic classes tinted in their colours (classes in `skip` left clear), instances and panoptic segments in
    theirs. contours None: outlines for instances and things, none for semantic classes."""
    outlines = contours is not False
    if labels.kind == "semantic":
        return overlay_semantic(image, labels.values, space.colors, alpha, skip, contours=bool(contours))
    if labels.kind == "instance":
        return overlay_instances(image, labels.values, alpha, contours=outlines, tracked=labels.tracked)
    return overlay_panoptic(image, labels.values, labels.classes, space.isthing, space.colors, alpha, contours=outlines,
                            tracked=labels.tracked)


def legend_rows(labels: LabelMap, space: LabelSpace, skip: tuple[int, ...] = ()) -> list[tuple[str, tuple]]:
    """Semantic and panoptic: one (name, colour) row per class present, but those in `skip` and void.
    Instances have colours of their own: one row each (number, class, score), at most MAX_LEGEND_INSTANCES."""
    if labels.kind == "instance":
        return _instance_rows(labels, space)
    if labels.kind == "semantic":
        present = present_values(labels.values)
    else:
        present = sorted({labels.classes[s] for s in present_values(labels.values) if s in labels.classes})
    return [(space.names[c], space.colors[c]) for c in present if c not in skip and c != IGNORE_INDEX]


def _instance_rows(labels: LabelMap, space: LabelSpace) -> list[tuple[str, tuple]]:
    colors = instance_colors(labels.values, labels.tracked)
    rows = []
    for number, color in list(colors.items())[:MAX_LEGEND_INSTANCES]:
        name = f"#{number}"
        if number in labels.classes:
            category = labels.classes[number]
            name += " " + (space.names[space.index_of_category(category)] if category in space.category_ids
                           else f"category {category}")
        if number in labels.scores:
            name += f" {labels.scores[number]:.2f}"
        rows.append((name, color))
    if len(colors) > MAX_LEGEND_INSTANCES:
        rows.append((f"+{len(colors) - MAX_LEGEND_INSTANCES} more", VOID_COLOR))
    return rows


def draw_contours(image: np.ndarray, ids: np.ndarray, colors: dict[int, tuple[int, int, int]], thickness: int = 1,
                  only: set[int] | None = None) -> np.ndarray:
    """Outline every region of an id map in its colour (darkened, so it shows on its own tint)."""
    out = image.copy()
    for number, color in colors.items():
        if only is not None and number not in only:
            continue
        mask = (ids == number).astype(np.uint8)
        found, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        edge = tuple(int(c * 0.6) for c in color)
        cv2.drawContours(out, found, -1, edge, thickness)
    return out


MIN_TEXT_SCALE = 0.3  # smaller Hershey text is unreadable


def fit_scale(label: str, scale: float, max_width: int | None) -> float:
    """The largest font scale up to `scale` at which the label (with its box margin) fits in max_width."""
    if max_width is None:
        return scale
    # Glyph widths round to whole pixels, so text does not shrink in proportion: step down and measure.
    while scale > MIN_TEXT_SCALE and cv2.getTextSize(label, FONT, scale, 1)[0][0] + 6 > max_width:
        scale = max(MIN_TEXT_SCALE, scale - 0.02)
    return scale


def text(image: np.ndarray, label: str, origin: tuple[int, int], scale: float = 0.45, color=(255, 255, 255),
         background=(0, 0, 0), max_width: int | None = None) -> np.ndarray:
    """Text on a filled box, readable on any image; shrunk (down to MIN_TEXT_SCALE) to fit max_width."""
    out = image.copy()
    scale = fit_scale(label, scale, max_width)
    (w, h), base = cv2.getTextSize(label, FONT, scale, 1)
    x, y = origin
    cv2.rectangle(out, (x, y), (x + w + 6, y + h + base + 6), background, -1)
    cv2.putText(out, label, (x + 3, y + h + 3), FONT, scale, color, 1, cv2.LINE_AA)
    return out


def legend(names: list[str], colors, width: int | None = None, row: int = 18) -> np.ndarray:
    """A white panel with one swatch and name per class (read-only: the same legend is drawn once, not for every
    image predict writes; its text cost 0.9 ms of the 5.6 ms an image's files took)."""
    return _legend(tuple(names), tuple(tuple(int(c) for c in color) for color in colors), width, row)


@functools.lru_cache(maxsize=64)
def _legend(names: tuple[str, ...], colors: tuple[tuple[int, ...], ...], width: int | None, row: int) -> np.ndarray:
    widths = [cv2.getTextSize(n, FONT, 0.45, 1)[0][0] for n in names]
    width = width or max(widths, default=60) + row + 16
    panel = np.full((row * len(names) + 8, width, 3), 255, np.uint8)
    for i, (name, color) in enumerate(zip(names, colors)):
        y = 4 + i * row
        cv2.rectangle(panel, (4, y + 2), (4 + row - 6, y + row - 4), color, -1)
        cv2.rectangle(panel, (4, y + 2), (4 + row - 6, y + row - 4), (0, 0, 0), 1)
        cv2.putText(panel, name, (row + 4, y + row - 6), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    panel.flags.writeable = False
    return panel


def with_legend(image: np.ndarray, names: list[str], colors) -> np.ndarray:
    """The image with a legend panel on its right (the shorter of the two padded in white to the other's height)."""
    panel = legend(names, colors)
    (h, w), (ph, pw) = image.shape[:2], panel.shape[:2]
    out = np.full((max(h, ph), w + pw, 3), 255, np.uint8)
    out[:h, :w] = image
    out[:ph, w:] = panel
    return out


TITLE_HEIGHT = 18  # the strip above side_by_side panels that holds their titles


def side_by_side(panels: list[np.ndarray], titles: list[str] | None = None, gap: int = 4) -> np.ndarray:
    """Panels in a row (scaled to the first one's height), each titled in a strip above it, not over its pixels."""
    height = panels[0].shape[0]
    resized = []
    for i, panel in enumerate(panels):
        if panel.shape[0] != height:
            scale = height / panel.shape[0]
            panel = cv2.resize(panel, (max(1, round(panel.shape[1] * scale)), height), interpolation=cv2.INTER_NEAREST)
        if titles:
            strip = text(np.full((TITLE_HEIGHT, panel.shape[1], 3), 255, np.uint8), titles[i], (0, 0),
                         color=(0, 0, 0), background=(255, 255, 255), max_width=panel.shape[1])
            panel = np.concatenate([strip, panel], axis=0)
        resized.append(panel)
        if i < len(panels) - 1:
            resized.append(np.full((panel.shape[0], gap, 3), 255, np.uint8))
    return np.concatenate(resized, axis=1)


def error_map(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, background: int | None = 0,
              ignore_index: int = IGNORE_INDEX, alpha: float = 0.6) -> np.ndarray:
    """True positives, false positives and false negatives of two class maps, in ERROR_COLORS.

    A pixel is labelled when its class is neither `background` nor `ignore_index` (void). Where
    the ground truth is void nothing is drawn. TP: both labelled with the same class; FP: predicted
    class where ground truth has background or another class (a wrong class on an object is drawn
    as FP); FN: ground-truth class where the prediction has background or void. Agreeing background
    is left plain.
    """
    valid = gt != ignore_index
    gt_labelled = valid if background is None else valid & (gt != background)
    pred_labelled = valid & (pred != ignore_index)
    if background is not None:
        pred_labelled &= pred != background
    tp = gt_labelled & pred_labelled & (gt == pred)
    fp = pred_labelled & ~tp
    fn = gt_labelled & ~pred_labelled
    colored = np.zeros_like(image)
    for name, mask in (("tp", tp), ("fn", fn), ("fp", fp)):
        colored[mask] = ERROR_COLORS[name]
    return blend(image, colored, alpha, tp | fp | fn)


def thumbnail(image: np.ndarray, side: int) -> np.ndarray:
    """The image scaled so its longer side is at most `side` (never enlarged)."""
    scale = side / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def grid(images: list[np.ndarray], cols: int, labels: list[str] | None = None, cell: int | None = None,
         gap: int = 4) -> np.ndarray:
    """A contact sheet in rows of `cols`, each image labelled.

    With `cell`, images are scaled to fit cell x cell squares; without, cells are as tall as the
    tallest image and as wide as the widest, so wide pictures do not leave square cells half empty.
    """
    if not images:
        raise ValueError("grid needs at least one image")
    cell_h = cell or max(i.shape[0] for i in images)
    cell_w = cell or max(i.shape[1] for i in images)
    rows = (len(images) + cols - 1) // cols
    sheet = np.full((rows * (cell_h + gap) + gap, cols * (cell_w + gap) + gap, 3), 255, np.uint8)
    for index, image in enumerate(images):
        scale = min(cell_h / image.shape[0], cell_w / image.shape[1])
        tile = image if scale == 1 else cv2.resize(
            image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
            interpolation=cv2.INTER_NEAREST if scale > 1 else cv2.INTER_AREA)
        if labels:
            tile = text(tile, labels[index], (1, 1), scale=0.4, max_width=tile.shape[1])
        r, c = divmod(index, cols)
        y, x = gap + r * (cell_h + gap), gap + c * (cell_w + gap)
        sheet[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    return sheet
