"""Bad inputs through the real CLI, on files made here: each one gives SPEC's exit code and one line naming it,
and the good inputs of the same run are still written, whole.

BAD_FILES are inputs that must fail (exit 1, one line each); ODD_FILES are unusual but valid images that must
be predicted. The other tests cover paths, folders and output locations.
"""

from __future__ import annotations

import os
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from segcli import io
from segcli.cli import app

runner = CliRunner()
RNG = np.random.default_rng(0)


def _png_bytes(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def _declared_png(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but whose data is a few bytes (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")


def _photo() -> np.ndarray:
    return RNG.integers(0, 255, (20, 28, 3), dtype=np.uint8)


BAD_FILES = {
    "zero.png": lambda: b"",
    "truncated.jpg": lambda: cv2.imencode(".jpg", _photo())[1].tobytes()[:300],
    "truncated.png": lambda: _png_bytes(_photo())[:-40],
    "text.png": lambda: b"this is not an image, only text named .png\n",
    "huge.png": lambda: _declared_png(100_000, 100_000),
    "beyond_opencv.png": lambda: _declared_png(40_000, 30_000),  # above OpenCV's own limit too
}


def _write_odd(folder: Path) -> list[str]:
    io.write_image(folder / "one_pixel.png", np.array([[[200, 10, 10]]], np.uint8))
    Image.fromarray(RNG.integers(0, 255, (16, 16, 2), dtype=np.uint8), mode="LA").save(folder / "grey_alpha.png")
    cv2.imencode(".png", RNG.integers(0, 255, (16, 16, 4), dtype=np.uint8))[1].tofile(str(folder / "rgba.png"))
    cv2.imencode(".png", RNG.integers(0, 65535, (16, 16, 3), dtype=np.uint16))[1].tofile(str(folder / "deep16.png"))
    cv2.imencode(".png", RNG.integers(0, 65535, (16, 16), dtype=np.uint16))[1].tofile(str(folder / "grey16.png"))
    return ["one_pixel", "grey_alpha", "rgba", "deep16", "grey16"]


def _failure_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def _predict(*args: str):
    return runner.invoke(app, ["predict", *args, "--device", "cpu", "--quiet"])


def test_a_batch_with_broken_files_writes_the_good_ones_and_names_each_bad_one(tiny_checkpoint, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, make in BAD_FILES.items():
        (folder / name).write_bytes(make())
    odd = _write_odd(folder)
    io.write_image(folder / "good.png", _photo())
    out = tmp_path / "out"
    result = _predict(str(folder), "--weights", str(tiny_checkpoint), "--out", str(out))
    assert result.exit_code == 1, result.output  # SPEC: some inputs failed, the rest were written
    assert "Traceback" not in result.output
    lines = _failure_lines(result.stderr)
    assert len(lines) == len(BAD_FILES), lines  # one line per bad file, nothing else
    for name in BAD_FILES:
        assert sum(str(folder / name) in line for line in lines) == 1, name
    for stem in [*odd, "good"]:
        written = io.read_label_png(out / "semantic" / f"{stem}.png")
        source = Image.open(folder / f"{stem}.png").size
        assert written.shape == (source[1], source[0]), stem
        assert (out / "overlays" / f"{stem}.jpg").is_file()
    assert not list(out.rglob("*.tmp*"))
    assert sorted(p.stem for p in (out / "semantic").iterdir()) == sorted([*odd, "good"])


def test_max_pixels_refuses_large_images_and_raises_the_limit(tiny_checkpoint, tmp_path):
    image = tmp_path / "in" / "photo.png"
    io.write_image(image, _photo())  # 28 x 20 = 560 px
    small = _predict(str(image), "--weights", str(tiny_checkpoint), "--out", str(tmp_path / "a"), "--max-pixels", "500")
    assert small.exit_code == 1
    (line,) = _failure_lines(small.stderr)
    assert str(image) in line and "--max-pixels" in line
    enough = _predict(str(image), "--weights", str(tiny_checkpoint), "--out", str(tmp_path / "b"),
                      "--max-pixels", "560")
    assert enough.exit_code == 0 and (tmp_path / "b" / "semantic" / "photo.png").is_file()


def test_non_ascii_and_space_paths(tiny_checkpoint, tmp_path):
    folder = tmp_path / "dössier mit Leerzeichen" / "写真"
    io.write_image(folder / "été 1 ü.png", _photo())
    io.write_image(folder / "plain.png", _photo())
    out = tmp_path / "sortie é"
    result = _predict(str(folder), "--weights", str(tiny_checkpoint), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert io.read_label_png(out / "semantic" / "été 1 ü.png").shape == (20, 28)
    assert (out / "overlays" / "été 1 ü.jpg").is_file()


def test_a_symlink_loop_under_recursive_terminates(tiny_checkpoint, tmp_path):
    folder = tmp_path / "in"
    io.write_image(folder / "sub" / "deep.png", _photo())
    io.write_image(folder / "top.png", _photo())
    os.symlink(folder, folder / "sub" / "loop")  # sub/loop -> in: an endless tree when followed naively
    os.symlink(folder / "self.png", folder / "self.png")  # a link to itself
    result = _predict(str(folder), "--recursive", "--weights", str(tiny_checkpoint), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out" / "semantic").iterdir()) == ["deep.png", "top.png"]


@pytest.mark.parametrize("command", [
    ["predict", "{img}", "--weights", "{dir}", "--out", "{tmp}/o"],
    ["visualize", "{img}", "--mask", "{dir}", "--out", "{tmp}/o"],
    ["eval", "--mode", "instance", "--gt", "{dir}", "--pred", "{dir}", "--json", "-"],
    ["eval", "--mode", "semantic", "--gt", "{dir}", "--pred", "{dir}", "--classes", "{dir}", "--json", "-"],
    ["export", "--weights", "{dir}", "--format", "onnx"],
])
def test_a_folder_where_a_file_was_expected(command, tmp_path):
    folder = tmp_path / "a_folder"
    io.write_class_png(folder / "x.png", np.zeros((8, 8), np.uint8), [(0, 0, 0)])
    image = tmp_path / "img.png"
    io.write_image(image, _photo())
    args = [a.replace("{img}", str(image)).replace("{dir}", str(folder)).replace("{tmp}", str(tmp_path))
            for a in command]
    result = runner.invoke(app, [*args, "--quiet"])
    assert result.exit_code == 2, result.output
    (line,) = _failure_lines(result.stderr)
    assert str(folder) in line and "Traceback" not in result.output


@pytest.mark.parametrize("where", ["under_a_file", "proc", "read_only"])
def test_an_unwritable_out_is_refused_before_any_work(tiny_checkpoint, tmp_path, where):
    image = tmp_path / "img.png"
    io.write_image(image, _photo())
    if where == "read_only":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        (tmp_path / "ro").mkdir(mode=0o500)
        out = tmp_path / "ro" / "out"
    elif where == "proc":
        out = Path("/proc/segcli-cannot-write-here")
    else:
        (tmp_path / "file.txt").write_text("x")
        out = tmp_path / "file.txt" / "out"
    result = _predict(str(image), "--weights", str(tiny_checkpoint), "--out", str(out))
    assert result.exit_code == 2, result.output
    (line,) = _failure_lines(result.stderr)
    assert f"--out {out}" in line


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))  # a "disk" that takes no file above 40 kB


def test_a_full_disk_names_the_file_and_leaves_nothing_partial(tiny_checkpoint, tmp_path):
    folder = tmp_path / "in"
    io.write_image(folder / "small.png", _photo())
    io.write_image(folder / "big.png", RNG.integers(0, 255, (400, 400, 3), dtype=np.uint8))  # its overlay is > 40 kB
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "segcli", "predict", str(folder), "--weights", str(tiny_checkpoint),
                             "--out", str(out), "--device", "cpu", "--quiet"], capture_output=True, text=True, env=env,
                            preexec_fn=_limit_file_size, timeout=300)
    assert result.returncode == 1, result.stderr
    (line,) = _failure_lines(result.stderr)
    assert str(out / "overlays" / "big.jpg") in line and str(folder / "big.png") in line
    assert not list(out.rglob("*.tmp*"))  # no temporary file stays
    assert not (out / "semantic" / "big.png").exists() and not (out / "overlays" / "big.jpg").exists()
    assert io.read_label_png(out / "semantic" / "small.png").shape == (20, 28)  # the good input is written
    assert (out / "overlays" / "small.jpg").is_file()


def _write_formats(folder: Path) -> dict[str, tuple[int, int]]:
    """Files from elsewhere, in the formats and modes other programs write: name -> (height, width) expected."""
    photo = Image.fromarray(RNG.integers(0, 255, (20, 28, 3), dtype=np.uint8))
    folder.mkdir(parents=True, exist_ok=True)
    photo.save(folder / "a_bmp.bmp")
    photo.save(folder / "a_webp.webp")
    photo.save(folder / "a_tiff.tif")
    photo.save(folder / "still.gif")  # skipped in folders before, though read when named alone
    photo.save(folder / "frames.gif", save_all=True, append_images=[photo.rotate(90)])  # the first frame is used
    photo.convert("CMYK").save(folder / "cmyk.jpg")
    photo.convert("P").save(folder / "palette.png")
    photo.convert("1").save(folder / "one_bit.png")
    Image.fromarray(RNG.integers(0, 65535, (20, 28), dtype=np.uint16)).save(folder / "grey16.png")
    Image.fromarray(RNG.random((20, 28)).astype(np.float32)).save(folder / "float.tif")  # OpenCV 5 refused it in colour
    Image.fromarray(np.full((20, 28), np.nan, np.float32)).save(folder / "all_nan.tif")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    photo.save(folder / "exif_rotated.jpg", exif=exif)
    sizes = {path.stem: (20, 28) for path in folder.iterdir()}
    sizes["exif_rotated"] = (28, 20)  # predicted as displayed, as OpenCV and every viewer show it
    return sizes


def test_images_in_the_formats_and_modes_other_programs_write_are_predicted(tiny_checkpoint, tmp_path):
    sizes = _write_formats(tmp_path / "in")
    out = tmp_path / "out"
    result = _predict(str(tmp_path / "in"), "--weights", str(tiny_checkpoint), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert {p.stem: io.read_label_png(p).shape for p in (out / "semantic").iterdir()} == sizes
