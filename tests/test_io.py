from __future__ import annotations

import io as pyio
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from segcli import io
from segcli.errors import DataError, UsageError


def _rgb(rng, h=12, w=17):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", ["plain.png", "with space.png", "ünïcødé 图像.png", "photo.jpg"])
def test_round_trip_through_odd_paths(tmp_path, rng, name):
    # A smooth image, so that JPEG's loss stays small and colour order errors would show.
    ramp = np.linspace(0, 255, 17, dtype=np.uint8)
    image = np.stack(np.broadcast_arrays(ramp[None, :], ramp[::-1, None][:12], np.uint8(60)), axis=-1).astype(np.uint8)
    io.write_image(tmp_path / name, image)
    back = io.read_image(tmp_path / name)
    assert back.shape == image.shape and back.dtype == np.uint8
    if name.endswith(".png"):
        assert np.array_equal(back, image)
    else:
        assert np.abs(back.astype(int) - image).mean() < 8


def test_reads_rgb_not_bgr(tmp_path):
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).save(tmp_path / "red.png")
    assert io.read_image(tmp_path / "red.png")[0, 0].tolist() == [255, 0, 0]


def test_grey_rgba_palette_and_16bit_become_rgb_uint8(tmp_path, rng):
    grey = rng.integers(0, 256, (5, 6), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    out = io.read_image(tmp_path / "grey.png")
    assert out.shape == (5, 6, 3) and np.array_equal(out[..., 1], grey)

    rgba = np.dstack([_rgb(rng, 5, 6), np.full((5, 6), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(io.read_image(tmp_path / "rgba.png"), rgba[..., :3])

    pal = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    pal.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    pal.save(tmp_path / "pal.png")
    assert io.read_image(tmp_path / "pal.png").tolist() == [[[10, 20, 30], [40, 50, 60]]]

    deep = np.tile(np.array([[0, 65535, 256 * 100]], np.uint16), (10, 100))
    cv2.imencode(".png", deep)[1].tofile(str(tmp_path / "deep.png"))
    assert io.read_image(tmp_path / "deep.png")[0, :3, 0].tolist() == [0, 255, 100]  # stretched by its own percentiles


def test_exif_orientation_is_applied(tmp_path, rng):
    image = Image.fromarray(_rgb(rng, 10, 20))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buffer = pyio.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    (tmp_path / "rot.jpg").write_bytes(buffer.getvalue())
    assert io.read_image(tmp_path / "rot.jpg").shape == (20, 10, 3)


def test_unreadable_files_raise_data_error_naming_the_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="broken.png"):
        io.read_image(tmp_path / "broken.png")
    with pytest.raises(DataError, match="missing.png"):
        io.read_image(tmp_path / "missing.png")


def test_class_png_keeps_indices_and_palette(tmp_path):
    classes = np.array([[0, 1], [2, 255]], np.uint8)
    io.write_class_png(tmp_path / "c.png", classes, [(1, 2, 3), (4, 5, 6), (7, 8, 9)])
    assert np.array_equal(io.read_label_png(tmp_path / "c.png"), classes)
    palette = io.read_palette(tmp_path / "c.png")
    assert palette[:3] == [(1, 2, 3), (4, 5, 6), (7, 8, 9)] and palette[255] == (255, 255, 255)


def test_instance_png_is_uint16(tmp_path):
    ids = np.array([[0, 1000], [2, 65535]])
    io.write_instance_png(tmp_path / "i.png", ids)
    back = io.read_label_png(tmp_path / "i.png")
    assert back.dtype == np.uint16 and np.array_equal(back, ids)


def test_panoptic_png_round_trip_and_id_encoding(tmp_path):
    ids = np.array([[0, 1, 255], [256, 65536 + 3, 2**24 - 1]], np.int32)
    io.write_panoptic_png(tmp_path / "p.png", ids)
    assert np.array_equal(io.read_panoptic_png(tmp_path / "p.png"), ids)
    rgb = io.id_to_rgb(np.array([256 * 2 + 5]))
    assert rgb.tolist() == [[5, 2, 0]] and io.rgb_to_id(rgb).tolist() == [517]


def test_atomic_write_leaves_nothing_when_interrupted(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists() and os.listdir(tmp_path) == []
    io.write_json(target, {"a": 1})
    assert io.read_json(target) == {"a": 1} and os.listdir(tmp_path) == ["out.json"]


def test_expand_inputs_files_folders_globs_and_stdin(tmp_path, rng):
    (tmp_path / "sub").mkdir()
    for name in ["a.png", "b.jpg", "sub/c.png"]:
        io.write_image(tmp_path / name, _rgb(rng))
    (tmp_path / "notes.txt").write_text("x")

    assert [p.name for p in io.expand_inputs([str(tmp_path)])] == ["a.png", "b.jpg"]
    assert [p.name for p in io.expand_inputs([str(tmp_path)], recursive=True)] == ["a.png", "b.jpg", "c.png"]
    assert [p.name for p in io.expand_inputs([str(tmp_path / "*.png")])] == ["a.png"]
    stdin = pyio.StringIO(f"{tmp_path / 'b.jpg'}\n\n{tmp_path / 'sub' / 'c.png'}\n")
    assert [p.name for p in io.expand_inputs(["-", str(tmp_path / "b.jpg")], stdin=stdin)] == ["b.jpg", "c.png"]
    # A missing file is kept so the batch can report it; an empty glob is a usage error.
    assert io.expand_inputs([str(tmp_path / "gone.png")]) == [tmp_path / "gone.png"]
    with pytest.raises(UsageError):
        io.expand_inputs([str(tmp_path / "*.tif")])


def test_unique_stems_are_stable_and_collision_free(tmp_path):
    paths = [tmp_path / "x" / "img.png", tmp_path / "y" / "img.png", tmp_path / "z" / "other.png"]
    stems = io.unique_stems(paths)
    assert len(set(stems)) == 3 and stems[2] == "other"
    assert io.unique_stems(list(reversed(paths))) == list(reversed(stems))


def test_shard_partitions_inputs():
    items = list(range(10))
    parts = [io.shard(items, i, 3) for i in range(3)]
    assert sorted(sum(parts, [])) == items
    with pytest.raises(UsageError):
        io.shard(items, 3, 3)


def test_all_void_panoptic_png_reads_as_zeros(tmp_path):
    io.write_panoptic_png(tmp_path / "void.png", np.zeros((3, 4), np.int32))
    assert np.array_equal(io.read_panoptic_png(tmp_path / "void.png"), np.zeros((3, 4)))
