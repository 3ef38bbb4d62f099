"""A COCO results list checked against its ground truth, then scored with `coco_mask_ap`.

Results are matched to ground-truth images by image id or file stem; a result naming an unknown
image or category, or a mask of the wrong size, raises a DataError that names it.
"""

from __future__ import annotations

from segcli.errors import DataError
from segcli.metrics.details import ScoreDetails
from segcli.metrics.instance import coco_mask_ap
from segcli.metrics.matching import ImageIndex


def score_instance(gt: dict, results: list[dict], source: str = "predictions",
                   details: ScoreDetails | None = None) -> dict:
    """COCO mask AP of a results list against a COCO instances dict, results matched by image id or file stem."""
    images = {img["id"]: img for img in gt["images"]}
    index = ImageIndex((img["id"], img.get("file_name", "")) for img in gt["images"])
    categories = {c["id"] for c in gt["categories"]}
    mapped = [_checked_result(number, r, index, images, categories, source) for number, r in enumerate(results)]
    return coco_mask_ap(_completed_gt(gt), mapped, details=details)


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
