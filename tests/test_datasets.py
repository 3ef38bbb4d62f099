"""Dataset readers on small hand-made datasets of every format: what they read, and what they refuse."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from segcli import io
from segcli.data import check_dataset, load_dataset
from segcli.data.classes import parse_classes_txt
from segcli.data.load import detect_format
from segcli.errors import DataError, UsageError
from segcli.structures import IGNORE_INDEX, mask_to_rle

H, W = 24, 32  # not square, so a swapped axis shows


def _image(seed: int = 0, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def _classmap() -> np.ndarray:
    """Background 0, a class-1 block and two separate class-2 blocks."""
    semantic = np.zeros((H, W), np.uint8)
    semantic[2:10, 2:12] = 1
    semantic[14:20, 3:9] = 2
    semantic[14:22, 20:30] = 2
    return semantic


def _segment_pixels(sample) -> dict[int, int]:
    ids, counts = np.unique(sample.panoptic, return_counts=True)
    return dict(zip(ids.tolist(), counts.tolist()))


def _assert_consistent(sample, label_space) -> None:
    """The three ground truths of a sample agree: every segment's area and class match the maps."""
    assert sample.semantic.shape == sample.image.shape[:2] == sample.panoptic.shape
    pixels = _segment_pixels(sample)
    for segment in sample.segments:
        region = sample.panoptic == segment.id
        assert pixels[segment.id] == segment.area
        assert (sample.semantic[region] == segment.label).all()
    for inst in sample.instances:
        assert label_space.isthing[inst.label]
        assert (sample.semantic[inst.mask] == inst.label).mean() > 0.5


# ---------------------------------------------------------------- folder


def _folder(root: Path, n: int = 4, classes: str | None = "background stuff\nbox thing\ndisc thing\n") -> Path:
    for i in range(n):
        io.write_image(root / "images" / f"im{i}.png", _image(i))
        io.write_class_png(root / "masks" / f"im{i}.png", _classmap(), [(0, 0, 0), (255, 0, 0), (0, 255, 0)])
    if classes is not None:
        (root / "classes.txt").write_text(classes)
    return root


def test_folder_reads_classes_instances_and_panoptic(tmp_path):
    root = _folder(tmp_path)
    assert detect_format(root) == "folder"
    ds = load_dataset(root, split="all")
    assert ds.format == "folder" and len(ds) == 4 and ds.names() == ["im0", "im1", "im2", "im3"]
    assert ds.label_space.names == ["background", "box", "disc"] and ds.label_space.isthing == [False, True, True]
    sample = ds[1]
    assert sample.name == "im1" and (sample.image == _image(1)).all()
    assert (sample.semantic == _classmap()).all()
    # Instances are the connected components of the thing classes: one box, two discs.
    assert sorted(inst.label for inst in sample.instances) == [1, 2, 2]
    assert sorted(inst.area for inst in sample.instances) == [36, 80, 80]
    # Panoptic: three things and one background stuff segment covering everything else.
    assert len(sample.segments) == 4 and 0 not in _segment_pixels(sample)
    _assert_consistent(sample, ds.label_space)
    assert check_dataset(ds, "panoptic") == []


def test_folder_without_class_list_counts_classes(tmp_path):
    ds = load_dataset(_folder(tmp_path, classes=None), split="all")
    assert ds.label_space.num_classes == 3 and ds.label_space.isthing == [False, True, True]


def test_splits_from_files_and_seeded_hold_out(tmp_path):
    root = _folder(tmp_path, n=20)
    train, val = load_dataset(root, split="train", seed=3), load_dataset(root, split="val", seed=3)
    assert len(val) == 2 and len(train) == 18 and not set(train.names()) & set(val.names())
    assert load_dataset(root, split="val", seed=3).names() == val.names()  # repeatable
    with pytest.raises(DataError, match="test"):
        load_dataset(root, split="test")
    with pytest.raises(UsageError, match="--split"):
        load_dataset(root, split="training")
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("im3\nim1\n")
    (root / "splits" / "test.txt").write_text("im0\nim99\n")
    assert load_dataset(root, split="train").names() == ["im3", "im1"]
    with pytest.raises(DataError, match="im99"):
        load_dataset(root, split="test")


def test_binary_masks_need_the_binary_option(tmp_path):
    """The ISBI layout: image/ + label/ with 0/255 masks."""
    mask = np.zeros((H, W), np.uint8)
    mask[4:20, 4:14] = 255
    io.write_image(tmp_path / "image" / "0.png", _image()[:, :, 0])
    io.write_image(tmp_path / "label" / "0.png", mask)
    ds = load_dataset(tmp_path, split="all")
    with pytest.raises(DataError, match="--binary") as error:
        check_dataset(ds, "semantic")
    assert "0.png" in str(error.value)
    binary = load_dataset(tmp_path, split="all", binary=True)
    sample = binary[0]
    assert binary.label_space.num_classes == 2
    assert (sample.semantic == (mask == 255)).all()  # 255 -> class 1, 0 -> class 0
    assert sample.image.shape == (H, W, 3)  # grey images come back as RGB
    assert check_dataset(binary, "semantic") == []


def test_colour_masks_decode_through_the_class_palette(tmp_path):
    root = _folder(tmp_path, n=1, classes="background\nred thing color=200,0,0\ngreen thing color=0,200,0\n")
    colours = np.array([(0, 0, 0), (200, 0, 0), (0, 200, 0)], np.uint8)[_classmap()]
    io.write_image(root / "masks" / "im0.png", colours)
    assert (load_dataset(root, split="all")[0].semantic == _classmap()).all()

    colours[0, 0] = (7, 7, 9)
    io.write_image(root / "masks" / "im0.png", colours)
    with pytest.raises(DataError, match=r"im0\.png.*\(7, 7, 9\)"):
        load_dataset(root, split="all")[0]

    (root / "classes.txt").unlink()
    with pytest.raises(DataError, match="palette"):
        check_dataset(load_dataset(root, split="all"), "semantic")


def test_label_problems_name_the_file(tmp_path):
    root = _folder(tmp_path, n=2)
    io.write_class_png(root / "masks" / "im1.png", np.zeros((H - 1, W), np.uint8), [(0, 0, 0)])
    with pytest.raises(DataError, match=r"im1\.png.*32x23 px, its image 32x24"):
        check_dataset(load_dataset(root, split="all"), "semantic")

    io.write_class_png(root / "masks" / "im1.png", np.full((H, W), 5, np.uint8), [(0, 0, 0)])
    with pytest.raises(DataError, match=r"im1\.png: class id 5 beyond the 3 classes"):
        check_dataset(load_dataset(root, split="all"), "semantic")

    (root / "masks" / "im1.png").unlink()
    with pytest.raises(DataError, match=r"im1\.png: no label file"):
        load_dataset(root, split="all")


def test_empty_and_missing_datasets(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match="no images"):
        load_dataset(tmp_path, format="folder", split="all")
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "absent")
    with pytest.raises(DataError, match="no known dataset layout"):
        load_dataset(tmp_path / "images")
    with pytest.raises(UsageError, match="--format"):
        load_dataset(tmp_path, format="pascal")


def test_instance_modes_need_thing_classes(tmp_path):
    ds = load_dataset(_folder(tmp_path, classes="background\nbox\ndisc\nsky stuff\n"), split="all")
    assert ds.label_space.isthing == [False, False, False, False]
    with pytest.raises(DataError, match="thing"):
        check_dataset(ds, "instance")


def test_fingerprint_is_stable_and_follows_the_files(tmp_path):
    root = _folder(tmp_path, n=3)
    first = load_dataset(root, split="all").fingerprint()
    assert load_dataset(root, split="all").fingerprint() == first
    io.write_class_png(root / "masks" / "im2.png", np.ones((H, W), np.uint8), [(0, 0, 0)])  # another size on disk
    os.utime(root / "masks" / "im2.png", (1, 1))
    assert load_dataset(root, split="all").fingerprint() != first


# ---------------------------------------------------------------- classes.txt


def test_classes_txt_forms_and_defaults(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("0 road stuff color=128,64,128\n1 traffic light thing coco_id=10\n\n2 car thing coco_id=3\n")
    space = parse_classes_txt(path)
    assert space.names == ["road", "traffic light", "car"] and space.isthing == [False, True, True]
    assert space.colors[0] == (128, 64, 128) and space.category_ids == [1, 2, 3]  # ids only when every class has one
    path.write_text("road stuff coco_id=7\ncar coco_id=26\n")
    assert parse_classes_txt(path).category_ids == [7, 26]
    path.write_text("background\ncat\ndog\n")
    space = parse_classes_txt(path)
    assert space.isthing == [False, True, True] and len(set(space.colors)) == 3
    path.write_text("0 a\n2 b\n")
    with pytest.raises(DataError, match=r"classes.txt:2: index 2 out of order"):
        parse_classes_txt(path)
    path.write_text("\n")
    with pytest.raises(DataError, match="no class names"):
        parse_classes_txt(path)


# ---------------------------------------------------------------- idmap and the DSB layout


def test_idmap_instance_pngs(tmp_path):
    ids = np.zeros((H, W), np.uint16)
    ids[2:8, 2:8], ids[10:20, 10:30], ids[0:4, 28:32] = 1, 300, 7  # uint16 ids, not contiguous
    io.write_image(tmp_path / "images" / "a.jpg", _image())
    io.write_instance_png(tmp_path / "instances" / "a.png", ids)
    assert detect_format(tmp_path) == "idmap"
    ds = load_dataset(tmp_path, split="all")
    sample = ds[0]
    assert ds.label_space.names == ["background", "object"]
    assert sorted(inst.area for inst in sample.instances) == [16, 36, 200]
    assert (sample.semantic == (ids > 0)).all()
    _assert_consistent(sample, ds.label_space)


def _dsb(root: Path, counts: list[int]) -> list[np.ndarray]:
    unions = []
    for n, count in enumerate(counts):
        item = f"{n:04x}" * 4
        io.write_image(root / "stage1_train" / item / "images" / f"{item}.png", _image(n))
        union = np.zeros((H, W), bool)
        for k in range(count):
            mask = np.zeros((H, W), np.uint8)
            mask[2 + 5 * k: 5 + 5 * k, 3:9 + k] = 255
            io.write_image(root / "stage1_train" / item / "masks" / f"m{k:02d}.png", mask)
            union |= mask > 0
        unions.append(union)
    return unions


def test_dsb_layout_one_png_per_object(tmp_path):
    unions = _dsb(tmp_path, [3, 1, 4])
    assert detect_format(tmp_path) == "idmap"
    ds = load_dataset(tmp_path, split="all")
    assert ds.label_space.names == ["background", "nucleus"] and len(ds) == 3
    for i, count in enumerate([3, 1, 4]):
        sample = ds[i]
        assert len(sample.instances) == count and (sample.semantic.astype(bool) == unions[i]).all()
        assert len(sample.segments) == count + 1
        _assert_consistent(sample, ds.label_space)
    mask = tmp_path / "stage1_train" / ds.names()[1] / "masks" / "m00.png"
    io.write_image(mask, np.zeros((H, W + 1), np.uint8))
    with pytest.raises(DataError, match="m00.png"):
        ds[1]


# ---------------------------------------------------------------- voc


def test_voc_layout(tmp_path):
    semantic = _classmap().copy()
    semantic[14:20, 3:9] = 15  # a person
    semantic[0, :] = IGNORE_INDEX  # VOC's void border
    objects = np.zeros((H, W), np.uint8)
    objects[2:10, 2:12], objects[14:20, 3:9], objects[14:22, 20:30] = 1, 2, 3
    objects[0, :] = IGNORE_INDEX
    for name in ("a", "b"):
        io.write_image(tmp_path / "JPEGImages" / f"{name}.jpg", _image())
        io.write_class_png(tmp_path / "SegmentationClass" / f"{name}.png", semantic, [(0, 0, 0)] * 21)
        io.write_class_png(tmp_path / "SegmentationObject" / f"{name}.png", objects, [(0, 0, 0)] * 4)
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Segmentation" / "train.txt").write_text("a\n")
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("b\n")
    assert detect_format(tmp_path) == "voc"
    ds = load_dataset(tmp_path, split="val")
    assert ds.names() == ["b"] and ds.label_space.num_classes == 21
    sample = ds[0]
    assert (sample.semantic == semantic).all()
    assert sorted(inst.label for inst in sample.instances) == [1, 2, 15]
    _assert_consistent(sample, ds.label_space)
    assert len(load_dataset(tmp_path, split="all")) == 2


# ---------------------------------------------------------------- coco


def _box_polygon(x0, y0, x1, y1) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _coco(root: Path, name: str = "instances_train.json", file_names=("a.png", "b.png")) -> dict:
    for i, file_name in enumerate(file_names):
        io.write_image(root / "images" / file_name, _image(i))
    disc = np.zeros((H, W), bool)
    disc[14:22, 20:30] = True
    counts, value, run = [], False, 0  # an uncompressed RLE (as COCO's crowd annotations have), built by hand
    for pixel in disc.T.ravel():  # column-major runs, starting with background
        if pixel != value:
            counts.append(run)
            value, run = pixel, 0
        run += 1
    counts.append(run)
    data = {
        "images": [{"id": i + 1, "file_name": f, "height": H, "width": W} for i, f in enumerate(file_names)],
        "categories": [{"id": 5, "name": "box", "isthing": 1}, {"id": 9, "name": "disc", "isthing": 1},
                       {"id": 20, "name": "grass", "isthing": 0}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 5, "segmentation": [_box_polygon(2, 2, 12, 10)], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 9, "segmentation": mask_to_rle(disc), "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 9, "segmentation": {"size": [H, W], "counts": counts},
             "iscrowd": 1},
            {"id": 4, "image_id": 2, "category_id": 20, "segmentation": [_box_polygon(0, 0, 32, 12)], "iscrowd": 0},
        ],
    }
    io.write_json(root / "annotations" / name, data)
    return data


def test_coco_polygons_rle_and_crowds(tmp_path):
    _coco(tmp_path)
    assert detect_format(tmp_path) == "coco"
    assert detect_format(tmp_path / "annotations" / "instances_train.json") == "coco"
    ds = load_dataset(tmp_path, split="all")
    assert ds.label_space.names == ["background", "box", "disc", "grass"]
    assert ds.label_space.isthing == [False, True, True, False] and ds.label_space.category_ids == [0, 5, 9, 20]
    a, b = ds[0], ds[1]
    assert [(inst.label, inst.iscrowd) for inst in a.instances] == [(1, False), (2, False), (2, True)]
    assert a.instances[1].area == 80 and (a.instances[2].mask == a.instances[1].mask).all()
    assert a.instances[0].mask[3:9, 3:11].all() and not a.instances[0].mask[12:, :].any()
    assert set(np.unique(a.semantic)) == {0, 1, 2}
    # Stuff annotations become semantic regions, not instances.
    assert b.instances == [] and set(np.unique(b.semantic)) == {0, 3} and (b.semantic[:10] == 3).all()
    _assert_consistent(a, ds.label_space)
    _assert_consistent(b, ds.label_space)


def test_classes_option_renames_the_classes_of_a_format_that_names_its_own(tmp_path):
    """--classes is read once for every format: here COCO's categories take its names, keeping their flags and ids."""
    _coco(tmp_path)
    names = tmp_path / "names.txt"
    names.write_text("bg\nkiste\nscheibe\nrasen\n")
    ds = load_dataset(tmp_path, split="all", classes=names)
    assert ds.label_space.names == ["bg", "kiste", "scheibe", "rasen"]
    assert ds.label_space.isthing == [False, True, True, False] and ds.label_space.category_ids == [0, 5, 9, 20]
    names.write_text("bg\nkiste\n")
    with pytest.raises(DataError, match="2 names, but this coco dataset has 4 classes"):
        load_dataset(tmp_path, split="all", classes=names)
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path, split="all", classes=tmp_path / "missing.txt")


def test_coco_splits(tmp_path):
    _coco(tmp_path, file_names=[f"{i}.png" for i in range(10)])
    train, val = load_dataset(tmp_path, split="train"), load_dataset(tmp_path, split="val")
    assert len(train) == 9 and len(val) == 1 and not set(train.names()) & set(val.names())
    _coco(tmp_path, "instances_val.json", file_names=["v.png"])
    assert load_dataset(tmp_path, split="train").names() == [str(i) for i in range(10)]
    assert load_dataset(tmp_path, split="val").names() == ["v"]
    other = tmp_path / "elsewhere.json"
    io.write_json(other, io.read_json(tmp_path / "annotations" / "instances_val.json"))
    assert load_dataset(tmp_path, split="val", val=other).names() == ["v"]


def test_coco_refuses_escaping_and_missing_files(tmp_path):
    (tmp_path / "secret.png").write_bytes(b"")
    data = _coco(tmp_path / "set")
    data["images"][1]["file_name"] = "../../secret.png"
    io.write_json(tmp_path / "set" / "annotations" / "instances_train.json", data)
    with pytest.raises(DataError, match="outside the dataset folder"):
        load_dataset(tmp_path / "set", split="all")
    data["images"][1]["file_name"] = "gone.png"
    io.write_json(tmp_path / "set" / "annotations" / "instances_train.json", data)
    with pytest.raises(DataError, match="gone.png is missing"):
        load_dataset(tmp_path / "set", split="all")
    data["images"][1]["file_name"] = "b.png"
    data["images"][1]["width"] = 99
    io.write_json(tmp_path / "set" / "annotations" / "instances_train.json", data)
    with pytest.raises(DataError, match="b.png: image is 32x24 px"):
        load_dataset(tmp_path / "set", split="all")[1]


# ---------------------------------------------------------------- coco panoptic


def _panoptic(root: Path, json_path: Path, png_dir: Path) -> np.ndarray:
    ids = np.zeros((H, W), np.int32)
    ids[:12] = 1000  # sky (stuff)
    ids[12:] = 2000  # grass (stuff)
    ids[2:10, 2:12] = 70000  # a box, id past 65535 (uses the B channel)
    ids[14:20, 3:9] = 5
    ids[22:, 30:] = 0  # void
    io.write_image(root / "images" / "p.jpg", _image())
    io.write_panoptic_png(png_dir / "p.png", ids)
    segments = [{"id": int(v), "category_id": c, "iscrowd": int(v == 5), "area": int((ids == v).sum()),
                 "bbox": [0, 0, 1, 1]}
                for v, c in ((1000, 11), (2000, 12), (70000, 3), (5, 3))]
    io.write_json(json_path, {
        "images": [{"id": 1, "file_name": "p.jpg", "height": H, "width": W}],
        "annotations": [{"image_id": 1, "file_name": "p.png", "segments_info": segments}],
        "categories": [{"id": 3, "name": "box", "isthing": 1}, {"id": 11, "name": "sky", "isthing": 0},
                       {"id": 12, "name": "grass", "isthing": 0}],
    })
    return ids


@pytest.mark.parametrize("layout", ["annotations", "flat"])
def test_coco_panoptic(tmp_path, layout):
    if layout == "annotations":  # panopticapi's convention: PNGs in the folder named like the json
        annotations = tmp_path / "annotations"
        ids = _panoptic(tmp_path, annotations / "panoptic_train.json", annotations / "panoptic_train")
    else:  # a json and a panoptic/ folder beside it, as in panopticapi's sample data
        ids = _panoptic(tmp_path, tmp_path / "examples.json", tmp_path / "panoptic")
    assert detect_format(tmp_path) == "coco-panoptic"
    ds = load_dataset(tmp_path, split="all")
    assert ds.format == "coco-panoptic" and ds.label_space.names == ["box", "sky", "grass"]
    sample = ds[0]
    assert (sample.panoptic == ids).all()
    assert {s.id: (s.label, s.area, s.iscrowd) for s in sample.segments} == {
        1000: (1, int((ids == 1000).sum()), False), 2000: (2, int((ids == 2000).sum()), False),
        70000: (0, 80, False), 5: (0, 36, True)}
    assert sample.semantic[23, 31] == IGNORE_INDEX and sample.semantic[0, 0] == 1 and sample.semantic[3, 3] == 0
    assert [inst.iscrowd for inst in sample.instances] == [False, True]


# ---------------------------------------------------------------- cityscapes


def test_cityscapes_train_ids_and_instances(tmp_path):
    labels = np.full((H, W), 7, np.uint8)  # road
    labels[:6] = 23  # sky
    labels[6:8] = 3  # out of roi: void
    labels[10:16, 2:10] = 26  # cars
    labels[10:16, 20:28] = 26
    labels[18:22, 12:18] = 24  # a crowd of persons
    instance_ids = labels.astype(np.uint16).copy()
    instance_ids[10:16, 2:10] = 26000
    instance_ids[10:16, 20:28] = 26001
    stem = "aachen_000000_000019"
    io.write_image(tmp_path / "leftImg8bit" / "train" / "aachen" / f"{stem}_leftImg8bit.png", _image())
    io.write_image(tmp_path / "gtFine" / "train" / "aachen" / f"{stem}_gtFine_labelIds.png", labels)
    io.write_instance_png(tmp_path / "gtFine" / "train" / "aachen" / f"{stem}_gtFine_instanceIds.png", instance_ids)
    assert detect_format(tmp_path) == "cityscapes"
    ds = load_dataset(tmp_path, split="train")
    sample = ds[0]
    assert ds.names() == [stem] and ds.label_space.num_classes == 19
    assert sample.semantic[0, 0] == 10 and sample.semantic[20, 0] == 0 and sample.semantic[7, 0] == IGNORE_INDEX
    assert sample.semantic[12, 4] == 13  # car
    assert sorted((inst.label, inst.iscrowd, inst.area) for inst in sample.instances) == [
        (11, True, 24), (13, False, 48), (13, False, 48)]


# ---------------------------------------------------------------- yolo


def _yolo(root: Path) -> None:
    io.write_image(root / "images" / "train" / "a.jpg", _image(0, (40, 80)))
    io.write_image(root / "images" / "train" / "empty.jpg", _image(1, (40, 80)))
    (root / "labels" / "train").mkdir(parents=True)
    # A triangle of class 0 (half of a 40x20 px box) and a square of class 1 lying inside it.
    (root / "labels" / "train" / "a.txt").write_text(
        "0 0.0 0.0 0.5 0.0 0.0 1.0\n"
        "1 0.05 0.1 0.15 0.1 0.15 0.3 0.05 0.3\n")
    (root / "data.yaml").write_text("names:\n  0: person\n  1: ball\n")


def test_yolo_polygons(tmp_path):
    _yolo(tmp_path)
    assert detect_format(tmp_path) == "yolo"
    ds = load_dataset(tmp_path, split="all")
    assert ds.label_space.names == ["background", "person", "ball"] and ds.label_space.isthing == [False, True, True]
    a, empty = ds[ds.names().index("a")], ds[ds.names().index("empty")]
    triangle, square = a.instances
    assert (triangle.label, square.label) == (1, 2)
    assert abs(triangle.area - 40 * 40 / 2) < 0.1 * 800 and abs(square.area - 8 * 8) <= 2 * 9 + 1
    # The square lies on the triangle: it stays visible in the semantic and panoptic maps.
    assert (a.semantic[square.mask] == 2).all()
    assert sorted(s.area for s in a.segments if s.label == 2) == [square.area]
    _assert_consistent(a, ds.label_space)
    # An image without a label file has no objects, but still a semantic map: all background.
    assert empty.instances == [] and (empty.semantic == 0).all() and len(empty.segments) == 1
    assert check_dataset(ds, "semantic") == []
    assert check_dataset(ds, "instance") == ["1 of 2 images have no instances"]


def test_yolo_bad_lines_name_the_file(tmp_path):
    _yolo(tmp_path)
    label = tmp_path / "labels" / "train" / "a.txt"
    label.write_text("2 0.1 0.1 0.5 0.1 0.5 0.5\n")
    with pytest.raises(DataError, match=r"a\.txt:1: class 2 beyond the 2 classes"):
        load_dataset(tmp_path, split="all")[0]
    label.write_text("0 0.1 0.1 0.5\n")
    with pytest.raises(DataError, match=r"a\.txt:1: expected"):
        load_dataset(tmp_path, split="all")[0]
    (tmp_path / "data.yaml").unlink()
    with pytest.raises(DataError, match="data.yaml"):
        load_dataset(tmp_path, split="all")


# ---------------------------------------------------------------- synthetic data: all readers agree


def test_synth_folder_is_read_with_all_three_ground_truths(tmp_path):
    from segcli.data.synth import generate

    root = generate("shapes", out=tmp_path / "synth", n=5, size=40, seed=1)
    assert detect_format(root) == "folder"
    for split in ("train", "val"):
        folder, panoptic = load_dataset(root, split=split), load_dataset(root, format="coco-panoptic", split=split)
        coco = load_dataset(root, format="coco", split=split)
        assert folder.names() == panoptic.names() == coco.names() and len(folder) > 0
        assert folder.label_space.names == panoptic.label_space.names
        assert coco.label_space.thing_indices == [4, 5, 6]  # background first, synth's stuff stays stuff
        for a, b, c in zip(folder, panoptic, coco):
            assert (a.semantic == b.semantic).all()
            assert len(a.instances) == len(b.instances) == len(c.instances) > 0
            masks = {inst.mask.tobytes() for inst in b.instances}
            assert ({inst.mask.tobytes() for inst in a.instances} == masks
                    == {inst.mask.tobytes() for inst in c.instances})
            assert sorted((s.label, s.area) for s in a.segments) == sorted((s.label, s.area) for s in b.segments)
            _assert_consistent(a, folder.label_space)
