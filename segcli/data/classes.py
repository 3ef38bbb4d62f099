"""Class lists: classes.txt, YOLO's data.yaml, COCO categories -> LabelSpace.

classes.txt holds one class per line, in index order. Each line is a name, optionally preceded by
its index (YOLO style, "0 person") and followed by `thing` or `stuff` and `key=value` words
(`coco_id=1`, `color=255,0,0`). Without flags, class 0 is stuff (background) and the others things.
"""

from __future__ import annotations

from pathlib import Path

from segcli.errors import DataError
from segcli.structures import LabelSpace, default_palette


def parse_classes_txt(path: Path) -> LabelSpace:
    names, flags, colors, ids = [], [], [], []
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        words = raw.split()
        if not words:
            continue
        if words[0].isdigit() and len(words) > 1:
            if int(words[0]) != len(names):
                raise DataError(f"{path}:{number}: index {words[0]} out of order (expected {len(names)})")
            words = words[1:]
        options = dict(w.split("=", 1) for w in words if "=" in w)
        plain = [w for w in words if "=" not in w]
        flag = plain[-1] if len(plain) > 1 and plain[-1] in ("thing", "stuff") else None
        names.append(" ".join(plain[:-1] if flag else plain))
        flags.append(None if flag is None else flag == "thing")
        colors.append(tuple(int(v) for v in options["color"].split(",")) if "color" in options else None)
        ids.append(int(options["coco_id"]) if "coco_id" in options else None)
    if not names:
        raise DataError(f"{path}: no class names")
    return _label_space(names, flags, colors, ids)


def _label_space(names, flags, colors, ids) -> LabelSpace:
    isthing = [(i > 0) if f is None else f for i, f in enumerate(flags)] if all(f is None for f in flags) else \
        [bool(f) for f in flags]
    palette = default_palette(len(names))
    return LabelSpace(
        names=names,
        isthing=isthing,
        colors=[c or palette[i] for i, c in enumerate(colors)],
        category_ids=ids if all(i is not None for i in ids) and len(set(ids)) == len(ids) else None,
    )


def parse_data_yaml(path: Path) -> list[str]:
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    names = data.get("names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if not names:
        raise DataError(f"{path}: no `names` list")
    return [str(n) for n in names]


def with_background(names: list[str], ids: list[int] | None = None) -> LabelSpace:
    """Thing classes of an instance dataset, behind a `background` stuff class at index 0 (category id 0)."""
    category_ids = [0] + (ids if ids else list(range(1, len(names) + 1)))
    palette = default_palette(len(names) + 1)
    return LabelSpace(["background", *names], [False] + [True] * len(names), palette, category_ids)


def from_coco_categories(categories: list[dict], panoptic: bool) -> LabelSpace:
    """Contiguous indices in category order; instance (non-panoptic) data gets a background class first.

    `isthing: 0` categories (COCO-Stuff, or the stuff classes `segcli data synth` lists) stay stuff.
    """
    if not panoptic:
        space = with_background([c["name"] for c in categories], [c["id"] for c in categories])
        space.isthing = [False] + [bool(c.get("isthing", 1)) for c in categories]
        return space
    palette = default_palette(len(categories))
    return LabelSpace(
        names=[c["name"] for c in categories],
        isthing=[bool(c.get("isthing", 1)) for c in categories],
        colors=[tuple(c["color"]) if c.get("color") else palette[i] for i, c in enumerate(categories)],
        category_ids=[c["id"] for c in categories],
    )


def classes_txt(space: LabelSpace) -> str:
    """A classes.txt that parse_classes_txt reads back to `space`: name, thing/stuff, colour and category id."""
    return "".join(f"{name} {'thing' if thing else 'stuff'} color={','.join(map(str, color))} coco_id={cid}\n"
                   for name, thing, color, cid in zip(space.names, space.isthing, space.colors, space.category_ids))
