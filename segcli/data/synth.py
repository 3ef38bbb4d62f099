"""`segcli data synth`: synthetic datasets with all three ground truths, deterministic for a seed.

Two kinds:
- `shapes`: 2-3 textured "stuff" regions (sky, ground, water) and 1-8 "thing" objects of three
  classes (circle, square, triangle) of varied size and colour, overlapping and touching.
- `context`: two thing classes ("cow", "goat") with *identical* fur texture that differ only in
  global shape and size, larger than a 32 px window: a method blind to context must fail inside
  them (the course's "cow or goat fur" problem), while telling fur from grass stays easy.

Each sample is rendered once in memory (`render_sample`) and written as a `folder` semantic
dataset, an `idmap` instance dataset, COCO instances json and COCO panoptic json + PNGs, so the
ground truths agree pixel for pixel by construction.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from segcli import io
from segcli.errors import UsageError
from segcli.structures import Instance, LabelSpace, Sample, mask_to_rle, paste_segments

KINDS = ("shapes", "context")
MIN_VISIBLE_PIXELS = 16  # occluded objects smaller than this are dropped: nobody could label them

_LABEL_SPACES = {
    "shapes": LabelSpace(
        names=["sky", "ground", "water", "circle", "square", "triangle"],
        isthing=[False, False, False, True, True, True],
        colors=[(135, 190, 235), (140, 100, 60), (30, 70, 160), (230, 50, 50), (250, 200, 30), (60, 200, 90)],
    ),
    "context": LabelSpace(
        names=["grass", "cow", "goat"],
        isthing=[False, True, True],
        colors=[(60, 150, 60), (200, 60, 60), (60, 90, 220)],
    ),
}


def synth_label_space(kind: str) -> LabelSpace:
    """The classes of a synthetic kind: stuff first, then things."""
    _check_kind(kind)
    return LabelSpace.from_dict(_LABEL_SPACES[kind].to_dict())


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise UsageError(f"--kind {kind!r}: choose one of {', '.join(KINDS)}")


# ---------------------------------------------------------------- textures


def _smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Noise in [0, 1] with features about `scale` px across (upsampled random grid)."""
    cells = max(2, int(size / max(scale, 1.0)) + 2)
    grid = rng.random((cells, cells)).astype(np.float32)
    noise = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(noise, 0.0, 1.0)


def _texture(rng: np.random.Generator, size: int, base: np.ndarray, spread: float, scale: float) -> np.ndarray:
    """A colour texture: base colour modulated by smooth noise and fine grain."""
    coarse = _smooth_noise(rng, size, scale)[..., None] - 0.5
    grain = rng.normal(0.0, 0.04, (size, size, 1)).astype(np.float32)
    image = base[None, None, :] * (1.0 + spread * coarse + grain)
    return np.clip(image, 0, 255)


def _fur(rng: np.random.Generator, size: int) -> np.ndarray:
    """Patchy fur: the same generator (and colour distribution) for every context-kind animal."""
    patches = _smooth_noise(rng, size, 6.0) > 0.5
    dark = np.array([110, 70, 40], np.float32) * rng.uniform(0.85, 1.15)
    light = np.array([225, 215, 200], np.float32) * rng.uniform(0.9, 1.05)
    image = np.where(patches[..., None], dark, light)
    grain = rng.normal(0.0, 10.0, (size, size, 1)).astype(np.float32)
    return np.clip(image + grain, 0, 255)


# ---------------------------------------------------------------- shapes kind


def _stuff_layout(rng: np.random.Generator, size: int) -> np.ndarray:
    """Class map of the stuff: sky above a wavy horizon; ground, and water in about half the images."""
    x = np.arange(size, dtype=np.float32)
    horizon = size * rng.uniform(0.3, 0.55) + size * 0.06 * np.sin(x / size * rng.uniform(2, 6) + rng.uniform(0, 6))
    rows = np.arange(size, dtype=np.float32)[:, None]
    layout = np.where(rows < horizon[None, :], 0, 1).astype(np.uint8)
    if rng.random() < 0.6:
        y = rows[:, 0]
        shore = size * rng.uniform(0.35, 0.65) + size * 0.08 * np.sin(y / size * rng.uniform(2, 5) + rng.uniform(0, 6))
        columns = np.arange(size)[None, :]
        water = (columns > shore[:, None]) if rng.random() < 0.5 else (columns < shore[:, None])
        layout[(layout == 1) & water] = 2
    return layout


def _polygon_mask(size: int, points: np.ndarray) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1, lineType=cv2.LINE_8)
    return mask.astype(bool)


def _shape_mask(kind: int, size: int, center: tuple[float, float], radius: float, angle: float) -> np.ndarray:
    """kind 0 circle, 1 square, 2 triangle, centred with a circumradius."""
    if kind == 0:
        mask = np.zeros((size, size), np.uint8)
        cv2.circle(mask, (round(center[0]), round(center[1])), max(2, round(radius)), 1, -1)
        return mask.astype(bool)
    corners = 4 if kind == 1 else 3
    angles = angle + np.arange(corners) * 2 * math.pi / corners
    points = np.stack([center[0] + radius * np.cos(angles), center[1] + radius * np.sin(angles)], axis=1)
    return _polygon_mask(size, points)


def _place_objects(rng: np.random.Generator, size: int, count: int, radius_range: tuple[float, float]):
    """Centres and radii; about a third of objects are placed touching the previous one."""
    placed = []
    for _ in range(count):
        radius = rng.uniform(*radius_range)
        if placed and rng.random() < 0.35:
            (px, py), pr = placed[-1]
            direction = rng.uniform(0, 2 * math.pi)
            distance = pr + radius * 0.9
            center = (px + distance * math.cos(direction), py + distance * math.sin(direction))
        else:
            center = (rng.uniform(radius * 0.5, size - radius * 0.5), rng.uniform(radius * 0.5, size - radius * 0.5))
        placed.append((center, radius))
    return placed


def _paste(image: np.ndarray, masks: list[np.ndarray], labels: list[int], new_mask: np.ndarray, label: int,
           texture: np.ndarray) -> None:
    """Paint an object over the image; it occludes earlier objects, whose masks lose those pixels."""
    image[new_mask] = texture[new_mask]
    for mask in masks:
        mask &= ~new_mask
    masks.append(new_mask.copy())
    labels.append(label)


def _render_shapes(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[int]]:
    layout = _stuff_layout(rng, size)
    stuff_colors = [np.array(c, np.float32) for c in ((135, 190, 235), (140, 100, 60), (40, 80, 170))]
    image = np.zeros((size, size, 3), np.float32)
    for label, color in enumerate(stuff_colors):
        texture = _texture(rng, size, color * rng.uniform(0.85, 1.15), spread=0.35, scale=size / 6)
        image[layout == label] = texture[layout == label]
    masks: list[np.ndarray] = []
    labels: list[int] = []
    count = int(rng.integers(1, 9))
    for center, radius in _place_objects(rng, size, count, (size / 14, size / 5)):
        shape = int(rng.integers(0, 3))
        mask = _shape_mask(shape, size, center, radius, rng.uniform(0, 2 * math.pi))
        color = rng.uniform(40, 255, 3).astype(np.float32)
        _paste(image, masks, labels, mask, 3 + shape, _texture(rng, size, color, spread=0.25, scale=size / 10))
    return image, layout, masks, labels


# ---------------------------------------------------------------- context kind


def _animal_mask(kind: int, size: int, center: tuple[float, float], scale: float, angle: float) -> np.ndarray:
    """kind 0 "cow": a large ellipse; kind 1 "goat": a smaller, boxy rectangle. Both wider than 32 px at 128 px."""
    if kind == 0:
        mask = np.zeros((size, size), np.uint8)
        axes = (round(scale * 0.42), round(scale * 0.3))
        cv2.ellipse(mask, (round(center[0]), round(center[1])), axes, math.degrees(angle), 0, 360, 1, -1)
        return mask.astype(bool)
    half_w, half_h = scale * 0.36, scale * 0.26
    corners = np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return _polygon_mask(size, corners @ rotation.T + np.array(center))


def _render_context(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[int]]:
    layout = np.zeros((size, size), np.uint8)
    image = _texture(rng, size, np.array([70, 150, 60], np.float32) * rng.uniform(0.9, 1.1), spread=0.5, scale=3.0)
    masks: list[np.ndarray] = []
    labels: list[int] = []
    count = int(rng.integers(1, 3))
    for i in range(count):
        animal = int(rng.integers(0, 2))
        scale = size * (rng.uniform(0.75, 0.95) if animal == 0 else rng.uniform(0.6, 0.75))
        margin = scale * 0.25
        center = (rng.uniform(margin, size - margin), rng.uniform(margin, size - margin))
        if i and masks:
            # A second animal goes to the other half, so the two rarely hide each other entirely.
            center = (size - center[0], size - center[1])
        mask = _animal_mask(animal, size, center, scale, rng.uniform(0, math.pi))
        _paste(image, masks, labels, mask, 1 + animal, _fur(rng, size))
    return image, layout, masks, labels


# ---------------------------------------------------------------- samples and files


def render_sample(kind: str, size: int, rng: np.random.Generator, name: str = "sample") -> Sample:
    """One synthetic image with its semantic map, instances and panoptic map (all consistent)."""
    _check_kind(kind)
    render = _render_shapes if kind == "shapes" else _render_context
    image, layout, masks, labels = render(rng, size)
    label_space = _LABEL_SPACES[kind]
    semantic = layout.copy()
    instances = []
    for mask, label in zip(masks, labels):
        if mask.sum() < MIN_VISIBLE_PIXELS:
            continue
        semantic[mask] = label
        instances.append(Instance(mask=mask, label=label))
    # Dropped slivers keep the class of what lies under them... which is the stuff layout, except
    # where another object covers them; re-derive semantic pixels of dropped masks from the layout.
    covered = np.zeros_like(layout, dtype=bool)
    for inst in instances:
        covered |= inst.mask
    semantic[~covered] = layout[~covered]
    panoptic, segments = paste_segments(semantic, instances, label_space.isthing)
    return Sample(
        image=np.clip(image, 0, 255).astype(np.uint8), name=name, semantic=semantic,
        instances=instances, panoptic=panoptic, segments=segments,
    )


def generate(kind: str, out: Path, n: int = 64, size: int = 128, seed: int = 0, val_fraction: float = 0.25,
             force: bool = False) -> Path:
    """Write a synthetic dataset to `out` (see the module docstring for the layout); returns `out`."""
    _check_arguments(kind, Path(out), n, size, val_fraction, force)
    out = Path(out)
    rng = np.random.default_rng(seed)
    label_space = _LABEL_SPACES[kind]
    n_val = max(1, round(n * val_fraction)) if n > 1 else 0
    splits = {"train": [], "val": []}
    coco = {split: _coco_skeleton(label_space) for split in splits}
    panoptic = {split: _coco_skeleton(label_space) for split in splits}
    for index in range(n):
        stem = f"{kind}_{index:04d}"
        split = "val" if index >= n - n_val else "train"
        sample = render_sample(kind, size, rng, name=stem)
        _write_sample(out, sample, split, label_space)
        _add_coco(coco[split], panoptic[split], sample, index + 1, label_space)
        splits[split].append(stem)
    for split, stems in splits.items():
        (out / "splits").mkdir(parents=True, exist_ok=True)
        with io.atomic_path(out / "splits" / f"{split}.txt") as tmp:
            tmp.write_text("".join(f"{s}\n" for s in stems))
        io.write_json(out / "annotations" / f"instances_{split}.json", coco[split])
        io.write_json(out / "annotations" / f"panoptic_{split}.json", panoptic[split])
    class_lines = [f"{name} {'thing' if thing else 'stuff'} color={','.join(map(str, color))}\n"
                   for name, thing, color in zip(label_space.names, label_space.isthing, label_space.colors)]
    with io.atomic_path(out / "classes.txt") as tmp:
        tmp.write_text("".join(class_lines))
    io.write_json(out / "dataset.json", {"generator": "segcli data synth", "kind": kind, "n": n, "size": size,
                                         "seed": seed, "label_space": label_space.to_dict()}, indent=2)
    return out


def _check_arguments(kind: str, out: Path, n: int, size: int, val_fraction: float, force: bool) -> None:
    _check_kind(kind)
    if n < 1:
        raise UsageError(f"--n {n}: generate at least one image")
    if size < 32:
        raise UsageError(f"--size {size}: use at least 32 px")
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"--val-fraction {val_fraction}: choose a fraction in [0, 1)")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: this is a file; name a folder (it is created if missing)")
    if out.exists() and any(out.iterdir()) and not (out / "dataset.json").exists() and not force:
        raise UsageError(f"--out {out}: folder exists and is not a segcli synthetic dataset; "
                         "choose another or pass --force")


def _write_sample(out: Path, sample: Sample, split: str, label_space: LabelSpace) -> None:
    stem = sample.name
    io.write_image(out / "images" / f"{stem}.png", sample.image)
    io.write_class_png(out / "masks" / f"{stem}.png", sample.semantic, label_space.colors)
    ids = np.zeros(sample.semantic.shape, np.uint16)
    for number, inst in enumerate(sample.instances, start=1):
        ids[inst.mask] = number
    io.write_instance_png(out / "instances" / f"{stem}.png", ids)
    io.write_panoptic_png(out / "annotations" / f"panoptic_{split}" / f"{stem}.png", sample.panoptic)


def _coco_skeleton(label_space: LabelSpace) -> dict:
    return {"info": {"description": "segcli synthetic data"}, "images": [], "annotations": [],
            "categories": label_space.coco_categories()}


def _add_coco(coco: dict, panoptic: dict, sample: Sample, image_id: int, label_space: LabelSpace) -> None:
    height, width = sample.semantic.shape
    image = {"id": image_id, "file_name": f"{sample.name}.png", "height": height, "width": width}
    coco["images"].append(image)
    panoptic["images"].append(dict(image))
    for inst in sample.instances:
        rle = mask_to_rle(inst.mask)
        coco["annotations"].append({
            "id": len(coco["annotations"]) + 1, "image_id": image_id,
            "category_id": label_space.category_ids[inst.label],
            "segmentation": rle, "area": inst.area, "bbox": list(inst.bbox), "iscrowd": 0,
        })
    panoptic["annotations"].append({
        "image_id": image_id, "file_name": f"{sample.name}.png",
        "segments_info": [
            {"id": s.id, "category_id": label_space.category_ids[s.label], "area": s.area, "bbox": list(s.bbox),
             "iscrowd": 0}
            for s in sample.segments
        ],
    })
