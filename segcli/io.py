"""The one place where segcli reads and writes images, masks and JSON.

Reading goes through bytes + `cv2.imdecode` (cv2.imread returns None instead of raising and
fails on some non-ASCII paths). Every writer is atomic: it writes a temporary file in the
destination folder and renames it, so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np

from segcli.errors import DataError, UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pgm", ".ppm", ".pbm")


# ---------------------------------------------------------------- reading


def _read_bytes(path: str | Path) -> np.ndarray:
    try:
        return np.fromfile(str(path), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None


def _decode(path: str | Path, flags: int) -> np.ndarray:
    data = _read_bytes(path)
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise DataError(f"{path}: not an image OpenCV can decode (corrupt, empty or unsupported format)")
    return image


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """16-bit and float images are scaled to 0..255 by their type's range, not by their content."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """Any image OpenCV can decode -> (H, W, 3) uint8 RGB.

    Conversions: EXIF orientation applied; grey -> three equal channels; RGBA -> alpha dropped
    (not composited); palette PNG -> its colours; 16-bit -> top 8 bits.
    """
    # IMREAD_COLOR applies EXIF orientation and expands grey/palette to 3 channels, but reads 8-bit
    # only; ANYDEPTH keeps 16-bit so we can scale it ourselves rather than let OpenCV clip it.
    image = _decode(path, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    image = _to_uint8(image)
    # OpenCV decodes to BGR; segcli is RGB everywhere from here on.
    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def read_label_png(path: str | Path) -> np.ndarray:
    """A label file's raw values, no conversion: (H, W) uint8/uint16, or (H, W, 3) uint8 RGB for colour files.

    Palette PNGs are returned as their indices (the class ids), not their colours: PIL knows the
    palette mode and OpenCV does not, so palette images are read with PIL here.
    """
    data = _read_bytes(path)
    if data[:8].tobytes() == b"\x89PNG\r\n\x1a\n" and _png_color_type(data) == 3:
        return _read_palette_indices(path)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise DataError(f"{path}: not a label image OpenCV can decode")
    if image.ndim == 3:
        if image.shape[2] == 4:
            image = image[:, :, :3]
        image = np.ascontiguousarray(image[:, :, ::-1])  # BGR -> RGB
        if (image[:, :, 0] == image[:, :, 1]).all() and (image[:, :, 1] == image[:, :, 2]).all():
            image = np.ascontiguousarray(image[:, :, 0])
    return image


def _png_color_type(data: np.ndarray) -> int:
    # IHDR is always the first chunk: 8-byte signature, 4 length, 4 type, then width/height/depth/colour type.
    return int(data[25]) if data.size > 25 else -1


def _read_palette_indices(path: str | Path) -> np.ndarray:
    from PIL import Image

    with Image.open(str(path)) as img:
        return np.array(img)


def read_palette(path: str | Path) -> list[tuple[int, int, int]] | None:
    """The colour palette of a palette PNG, or None for other images."""
    from PIL import Image

    with Image.open(str(path)) as img:
        if img.mode != "P":
            return None
        flat = img.getpalette() or []
    return [tuple(flat[i : i + 3]) for i in range(0, len(flat), 3)]


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic colour -> segment id: id = R + 256 * G + 256^2 * B."""
    rgb = rgb.astype(np.int32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Segment id -> COCO panoptic colour (inverse of rgb_to_id)."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([ids % 256, (ids // 256) % 256, (ids // 65536) % 256], axis=-1).astype(np.uint8)


def read_panoptic_png(path: str | Path) -> np.ndarray:
    """A COCO panoptic PNG -> (H, W) int32 segment ids (0 = void)."""
    data = _read_bytes(path)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise DataError(f"{path}: not a PNG OpenCV can decode")
    if image.ndim != 3 or image.dtype != np.uint8:
        raise DataError(f"{path}: a COCO panoptic PNG is 8-bit RGB (id = R + 256*G + 256^2*B); this one is not")
    return rgb_to_id(np.ascontiguousarray(image[:, :, 2::-1]))  # BGR(A) -> RGB


def read_json(path: str | Path) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None


# ---------------------------------------------------------------- writing


def _read_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# Read once, at import: setting the umask to read it is not thread-safe, and predict writes from threads.
_FILE_MODE = 0o666 & ~_read_umask()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, _FILE_MODE)  # mkstemp makes owner-only files; outputs get the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _encode(path: Path, image: np.ndarray, params: list[int] | None = None) -> None:
    ok, buffer = cv2.imencode(path.suffix.lower() or ".png", image, params or [])
    if not ok:
        raise DataError(f"{path}: OpenCV could not encode an image of shape {image.shape} as {path.suffix}")
    with atomic_path(path) as tmp:
        buffer.tofile(str(tmp))


def write_image(path: str | Path, rgb: np.ndarray, quality: int = 95) -> Path:
    """Write an RGB (or grey) uint8 image; the format follows the suffix."""
    path = Path(path)
    image = rgb if rgb.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if path.suffix.lower() in (".jpg", ".jpeg") else None
    _encode(path, image, params)
    return path


def write_class_png(path: str | Path, classmap: np.ndarray, palette: Iterable[tuple[int, int, int]]) -> Path:
    """Class-index PNG (uint8, 255 = ignore) with the palette attached, so viewers show colours and readers get indices."""
    from PIL import Image

    path = Path(path)
    if classmap.max(initial=0) > 255 or classmap.min(initial=0) < 0:
        raise ValueError("class-index PNGs hold 0..255; use write_instance_png for larger ids")
    flat = [v for color in palette for v in color][: 256 * 3]
    flat += [0] * (256 * 3 - len(flat))
    flat[255 * 3 : 256 * 3] = [255, 255, 255]  # ignore/void shows as white
    img = Image.fromarray(classmap.astype(np.uint8), mode="P")
    img.putpalette(flat)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path


def write_instance_png(path: str | Path, idmap: np.ndarray) -> Path:
    """Instance-id PNG, uint16 (0 = none, 1..N objects)."""
    if idmap.max(initial=0) > 65535:
        raise ValueError("instance-id PNGs hold at most 65535 instances")
    _encode(Path(path), idmap.astype(np.uint16))
    return Path(path)


def write_panoptic_png(path: str | Path, segment_ids: np.ndarray) -> Path:
    """COCO panoptic PNG: segment id encoded as R + 256*G + 256^2*B, 0 = void."""
    rgb = id_to_rgb(segment_ids)
    _encode(Path(path), np.ascontiguousarray(rgb[:, :, ::-1]))  # OpenCV writes BGR
    return Path(path)


def write_json(path: str | Path, obj: object, indent: int | None = None) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=indent)
    return path


# ---------------------------------------------------------------- inputs


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _expand_folder(folder: Path, recursive: bool) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and _is_image(p) and not p.name.startswith("."))


def expand_inputs(inputs: Iterable[str], recursive: bool = False, stdin: TextIO | None = None) -> list[Path]:
    """Files, folders, quoted globs and "-" (one path per line on stdin) -> a list of paths, duplicates removed.

    A path that does not exist is kept, so the batch reports it as a failed input rather than
    silently skipping it; a glob or folder that matches nothing is a usage error.
    """
    paths: list[Path] = []
    for item in inputs:
        if item == "-":
            stream = stdin if stdin is not None else sys.stdin
            paths.extend(Path(line.strip()) for line in stream if line.strip())
            continue
        path = Path(item)
        if path.is_dir():
            found = _expand_folder(path, recursive)
            if not found:
                raise UsageError(f"{item}: folder has no images ({', '.join(IMAGE_EXTENSIONS[:4])}, ...); use --recursive for subfolders")
            paths.extend(found)
        elif not path.exists() and glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(item, recursive=recursive) if _is_image(Path(p)))
            if not found:
                raise UsageError(f"{item}: the pattern matches no image")
            paths.extend(found)
        else:
            paths.append(path)
    seen: set[str] = set()
    unique = []
    for path in paths:
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def unique_stems(paths: list[Path]) -> list[str]:
    """Output stems for inputs: the file stem, plus a stable suffix when two inputs share a stem.

    The suffix is a short hash of the parent folder, so it does not depend on input order.
    """
    counts: dict[str, int] = {}
    for path in paths:
        counts[path.stem] = counts.get(path.stem, 0) + 1
    stems = []
    for path in paths:
        if counts[path.stem] == 1:
            stems.append(path.stem)
        else:
            digest = hashlib.sha1(os.path.abspath(path.parent).encode()).hexdigest()[:8]
            stems.append(f"{path.stem}-{digest}")
    return stems


def shard(items: list, index: int, count: int) -> list:
    """A stable 1/count share of items (every count-th, starting at index), for job arrays."""
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard {index}/{count}: need 0 <= I < N")
    return items[index::count]
