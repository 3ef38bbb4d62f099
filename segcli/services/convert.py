"""`segcli data convert`: a dataset in any format segcli reads, written in another (its reader reads it back).

Each target's writer lives beside its reader (segcli/data/<format>.py `write`). A target that cannot
hold what the source has is refused before anything is written (YOLO and idmap hold objects on one
background: no other stuff class; idmap holds one thing class); what a target loses object by object
(crowd flags, void pixels, overlaps) is written as well as it can be and reported as warnings.
Images are copied byte for byte; the source's own splits (split lists, split folders, a json per split)
become the target's. The service never prints: `callback("image", done=, total=)` per image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from segcli import io
from segcli.data import coco, coco_panoptic, folder, idmap, yolo
from segcli.data.dataset import Entry, SegDataset
from segcli.data.load import detect_format, load_dataset, stored_splits
from segcli.errors import UsageError

WRITERS = {"coco": coco.write, "coco-panoptic": coco_panoptic.write, "yolo": yolo.write, "idmap": idmap.write,
           "folder": folder.write}
CHECKS = {"yolo": yolo.check_can_hold, "idmap": idmap.check_can_hold}  # the others hold every class


@dataclass
class ConvertSummary:
    out: Path
    source_format: str
    images: int = 0
    splits: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what the target could not hold


def convert_dataset(*, source: Path, to: str, out: Path, data_format: str = "auto", images: Path | None = None,
                    masks: Path | None = None, classes: Path | None = None, binary: bool = False,
                    val: Path | None = None, callback: Callable[..., None] | None = None) -> ConvertSummary:
    """Read every image of `source` (each of its splits) and write them as a `to` dataset into `out`."""
    notify = callback if callback is not None else (lambda *a, **k: None)
    if to not in WRITERS:
        raise UsageError(f"--to {to}: choose one of {', '.join(WRITERS)}")
    if not Path(source).exists():
        raise UsageError(f"{source}: no such dataset folder or json")
    fmt = detect_format(Path(source)) if data_format == "auto" else data_format
    splits = stored_splits(source, fmt, val=val)
    options = {"images": images, "masks": masks, "classes": classes, "binary": binary, "val": val}
    parts = [(split, load_dataset(source, fmt, split, **options)) for split in splits]
    if not splits or fmt not in ("coco", "coco-panoptic"):  # a COCO "all" is its train json, a split already
        parts.append((None, load_dataset(source, fmt, "all", **options)))
    space = parts[0][1].label_space
    if to in CHECKS:
        CHECKS[to](space, f"{source} ({fmt})")
    _check_out(Path(out))
    entries = _entries(parts)
    done = iter(range(1, len(entries) + 1))
    for entry in entries:
        entry.loaded = lambda: notify("image", done=next(done), total=len(entries))
    losses = WRITERS[to](Path(out), space, entries)
    return ConvertSummary(Path(out), fmt, len(entries), splits, losses.messages())


def _check_out(out: Path) -> None:
    """A new or empty folder: writing into another dataset would mix the two."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        problem = "not a folder" if not out.is_dir() else "not empty"
        raise UsageError(f"--out {out}: {problem}; name a new or empty folder")
    io.prepare_out_dir(out)


def _entries(parts: list[tuple[str | None, SegDataset]]) -> list[Entry]:
    """Each image once (the first split that lists it), named by its stem, made unique when two images share one."""
    entries, seen, names = [], set(), set()
    for split, dataset in parts:
        for index, record in enumerate(dataset.records):
            key = str(Path(record.image).resolve())
            if key in seen:
                continue
            seen.add(key)
            name = record.name
            if name in names:
                name = f"{name}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
            names.add(name)
            entries.append(Entry(name, Path(record.image), split, dataset, index))
    return entries
