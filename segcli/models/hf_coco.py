"""COCO panoptic's 133 categories (80 things, 53 stuff) by name: their json category ids and thing flags.

Hugging Face checkpoints trained on COCO number their classes 0..C-1 (`config.id2label`) and do
not carry the ids COCO's json files use. Those ids come from the label names: things from the 80
COCO detection categories (torchvision's list, whose index is the COCO id, the same table as
pycocotools' instances json), stuff from panopticapi's `panoptic_coco_categories.json` (ids 92-200).
"""

from __future__ import annotations

from functools import cache

# panopticapi panoptic_coco_categories.json: the 53 stuff categories (isthing 0), by id.
COCO_STUFF = (
    (92, "banner"), (93, "blanket"), (95, "bridge"), (100, "cardboard"), (107, "counter"), (109, "curtain"),
    (112, "door-stuff"), (118, "floor-wood"), (119, "flower"), (122, "fruit"), (125, "gravel"), (128, "house"),
    (130, "light"), (133, "mirror-stuff"), (138, "net"), (141, "pillow"), (144, "platform"), (145, "playingfield"),
    (147, "railroad"), (148, "river"), (149, "road"), (151, "roof"), (154, "sand"), (155, "sea"), (156, "shelf"),
    (159, "snow"), (161, "stairs"), (166, "tent"), (168, "towel"), (171, "wall-brick"), (175, "wall-stone"),
    (176, "wall-tile"), (177, "wall-wood"), (178, "water-other"), (180, "window-blind"), (181, "window-other"),
    (184, "tree-merged"), (185, "fence-merged"), (186, "ceiling-merged"), (187, "sky-other-merged"),
    (188, "cabinet-merged"), (189, "table-merged"), (190, "floor-other-merged"), (191, "pavement-merged"),
    (192, "mountain-merged"), (193, "grass-merged"), (194, "dirt-merged"), (195, "paper-merged"),
    (196, "food-other-merged"), (197, "building-other-merged"), (198, "rock-merged"), (199, "wall-other-merged"),
    (200, "rug-merged"),
)


def _key(name: str) -> str:
    return name.strip().lower().replace("_", " ")


@cache
def coco_panoptic_ids() -> dict[str, tuple[int, bool]]:
    """Label name -> (COCO category id, isthing) for the 133 categories of COCO panoptic."""
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    # 91 names, index = COCO id; "__background__" and "N/A" fill the ids COCO skips.
    things = MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    table = {_key(name): (cid, True) for cid, name in enumerate(things) if name not in ("__background__", "N/A")}
    table.update({_key(name): (cid, False) for cid, name in COCO_STUFF})
    return table


def coco_ids_for(names: list[str]) -> tuple[list[int], list[bool]] | None:
    """(category ids, thing flags) when every name is a COCO panoptic category, else None."""
    table = coco_panoptic_ids()
    if not names or not all(_key(n) in table for n in names):
        return None
    found = [table[_key(n)] for n in names]
    return [cid for cid, _ in found], [thing for _, thing in found]
