from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

from segcli import io
from segcli.cli import app
from segcli.data.synth import generate, render_sample, synth_label_space
from segcli.errors import UsageError


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    return generate("shapes", tmp_path_factory.mktemp("synth") / "shapes", n=12, size=64, seed=3)


def test_same_seed_same_data_other_seed_differs():
    a = render_sample("shapes", 64, np.random.default_rng(1))
    b = render_sample("shapes", 64, np.random.default_rng(1))
    c = render_sample("shapes", 64, np.random.default_rng(2))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.panoptic, b.panoptic)
    assert not np.array_equal(a.image, c.image)


def test_layout_and_splits(shapes_dir):
    train = (shapes_dir / "splits" / "train.txt").read_text().split()
    val = (shapes_dir / "splits" / "val.txt").read_text().split()
    assert len(train) == 9 and len(val) == 3 and not set(train) & set(val)
    from segcli.data.classes import parse_classes_txt

    assert parse_classes_txt(shapes_dir / "classes.txt").to_dict() == synth_label_space("shapes").to_dict() | {
        "category_ids": list(range(1, 7))}
    for stem in train + val:
        for folder in ("images", "masks", "instances"):
            assert (shapes_dir / folder / f"{stem}.png").exists()


def test_three_ground_truths_agree_pixel_for_pixel(shapes_dir):
    space = synth_label_space("shapes")
    for split in ("train", "val"):
        coco = io.read_json(shapes_dir / "annotations" / f"instances_{split}.json")
        panoptic = io.read_json(shapes_dir / "annotations" / f"panoptic_{split}.json")
        by_image = {img["id"]: img for img in coco["images"]}
        for entry in panoptic["annotations"]:
            stem = entry["file_name"][:-4]
            semantic = io.read_label_png(shapes_dir / "masks" / f"{stem}.png")
            ids = io.read_label_png(shapes_dir / "instances" / f"{stem}.png")
            pan = io.read_panoptic_png(shapes_dir / "annotations" / f"panoptic_{split}" / f"{stem}.png")
            # Panoptic classes equal the semantic map everywhere; no void pixels in synthetic data.
            class_of_segment = {s["id"]: space.index_of_category(s["category_id"]) for s in entry["segments_info"]}
            assert set(np.unique(pan)) == set(class_of_segment)
            assert np.array_equal(np.vectorize(class_of_segment.get)(pan), semantic)
            for s in entry["segments_info"]:
                assert s["area"] == int((pan == s["id"]).sum())
            # Every COCO instance is one instance-PNG id and one thing segment, with the same pixels.
            anns = [a for a in coco["annotations"] if a["image_id"] == entry["image_id"]]
            assert len(anns) == ids.max() == sum(space.isthing[c] for c in class_of_segment.values())
            assert by_image[entry["image_id"]]["file_name"] == entry["file_name"]
            for number, ann in enumerate(anns, start=1):
                mask = mask_utils.decode(ann["segmentation"]).astype(bool)
                assert np.array_equal(mask, ids == number)
                assert (semantic[mask] == space.index_of_category(ann["category_id"])).all()
                segment_ids = np.unique(pan[mask])
                assert len(segment_ids) == 1 and (pan == segment_ids[0]).sum() == mask.sum()


def test_objects_touch_and_overlap_somewhere():
    rng = np.random.default_rng(0)
    touching = occluded = 0
    for _ in range(20):
        sample = render_sample("shapes", 96, rng)
        for i, a in enumerate(sample.instances):
            grown = np.zeros_like(a.mask)
            grown[1:] |= a.mask[:-1]
            grown[:-1] |= a.mask[1:]
            grown[:, 1:] |= a.mask[:, :-1]
            grown[:, :-1] |= a.mask[:, 1:]
            touching += sum(bool((grown & b.mask).any()) for b in sample.instances[i + 1 :])
        occluded += sum(inst.area < inst.mask.size for inst in sample.instances)
    assert touching > 5 and occluded > 0


def test_context_classes_share_texture_but_not_shape():
    rng = np.random.default_rng(0)
    pixels = {1: [], 2: []}
    areas = {1: [], 2: []}
    for _ in range(30):
        sample = render_sample("context", 128, rng)
        for inst in sample.instances:
            pixels[inst.label].append(sample.image[inst.mask].astype(float))
            areas[inst.label].append(inst.area)
    cow, goat = np.concatenate(pixels[1]), np.concatenate(pixels[2])
    # Local statistics agree within a few grey levels...
    assert np.abs(cow.mean(0) - goat.mean(0)).max() < 12 and np.abs(cow.std(0) - goat.std(0)).max() < 12
    # ...while the objects differ in size, and are much larger than a 32 x 32 window.
    assert np.median(areas[1]) > 1.3 * np.median(areas[2]) and np.median(areas[2]) > 2 * 32 * 32


def test_bad_arguments_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="--kind"):
        generate("clouds", tmp_path / "x")
    with pytest.raises(UsageError, match="--size"):
        generate("shapes", tmp_path / "x", size=8)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("precious")
    with pytest.raises(UsageError, match="--force"):
        generate("shapes", tmp_path / "busy", n=2)


def test_cli_writes_dataset(tmp_path):
    result = CliRunner().invoke(app, ["data", "synth", "--kind", "context", "--out", str(tmp_path / "ctx"),
                                      "--n", "3", "--size", "48"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "ctx" / "images").glob("*.png"))) == 3
    assert "wrote 3 context images" in result.output
