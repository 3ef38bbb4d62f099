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
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TextIO
from urllib.parse import urlsplit

import cv2
import numpy as np

from segcli.errors import DataError, UsageError

# .gif: OpenCV 5 decodes it (the first frame), as it did when named alone; folders skipped it without a word.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pgm", ".ppm", ".pbm", ".gif")
TIFF_EXTENSIONS = (".tif", ".tiff")  # read through tifffile, with their channels and pages
# What OpenCV's FFmpeg backend reads (segcli.sources): a folder or glob lists these beside images for predict.
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


# ---------------------------------------------------------------- reading


@contextlib.contextmanager
def _reading(path: str | Path, kind: str = "file") -> Iterator[None]:
    """A file that cannot be read is a DataError naming it and why (one line, no traceback)."""
    try:
        yield
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: a folder, not a {kind}") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None


def _read_bytes(path: str | Path) -> np.ndarray:
    with _reading(path):
        return np.fromfile(str(path), dtype=np.uint8)


# Above this many pixels an image is refused before decoding (predict --max-pixels raises it): a header can
# declare any size, and decoding a 100000 x 100000 PNG would ask for 30 GB. 2^28 px is 16384 x 16384.
DEFAULT_MAX_PIXELS = 2**28

# OpenCV's own warnings (e.g. "PNG input buffer is incomplete") would add lines to segcli's one-line errors.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def _declared_pixels(path: str | Path) -> tuple[int, int] | None:
    """(width, height) from the file's header without decoding it, or None when PIL does not know the format."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # segcli applies its own limit (max_pixels) to the size read here
    try:
        with Image.open(str(path)) as img:
            return img.size
    except Exception:  # any header PIL cannot parse: OpenCV decides, and reports it
        return None


def _truncation(data: np.ndarray) -> str | None:
    """Why a PNG or JPEG stream is cut short (its end marker missing), or None. OpenCV would decode the part
    that is there (JPEG) or print libpng's complaint on stderr (PNG); neither is wanted."""
    head, tail = data[:8].tobytes(), data[-64:].tobytes()
    if head.startswith(b"\x89PNG\r\n\x1a\n") and b"IEND" not in tail:
        return "truncated PNG (no IEND chunk at its end)"
    if head.startswith(b"\xff\xd8") and b"\xff\xd9" not in data[-4096:].tobytes():
        return "truncated JPEG (no end-of-image marker)"
    return None


def _checked_bytes(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """The file's bytes, refused before decoding when its header declares too many pixels, or it is empty or cut
    short."""
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    size = _declared_pixels(path)
    if size is not None and size[0] * size[1] > limit:
        raise DataError(f"{path}: {size[0]} x {size[1]} px is above the limit of {limit} pixels; "
                        f"raise it with --max-pixels {size[0] * size[1]} if the file is genuine")
    data = _read_bytes(path)
    if not data.size:
        raise DataError(f"{path}: empty file (0 bytes)")
    truncated = _truncation(data)
    if truncated:
        raise DataError(f"{path}: {truncated}; copy the file again")
    return data


def _imdecode(path: str | Path, data: np.ndarray, flags: int, what: str = "an image") -> np.ndarray:
    try:
        image = cv2.imdecode(data, flags)
    except cv2.error as error:  # OpenCV refuses sizes above its own limit (CV_IO_MAX_IMAGE_PIXELS) by raising
        raise DataError(f"{path}: OpenCV cannot decode it ({str(error).strip().splitlines()[-1]}); for a genuine "
                        "huge image set OPENCV_IO_MAX_IMAGE_PIXELS") from None
    if image is None:
        raise DataError(f"{path}: not {what} OpenCV can decode (corrupt or unsupported format)")
    return image


def _decode(path: str | Path, flags: int, max_pixels: int | None = None) -> np.ndarray:
    return _imdecode(path, _checked_bytes(path, max_pixels), flags)


@dataclass(frozen=True)
class IntensityScaling:
    """How 16-bit and float images become the model's 0..255 input; 8-bit images are used as they are.

    Each image is stretched from its own `low` to its own `high` percentile (clipped), so a 12-bit
    microscopy image (0..4095) keeps its contrast instead of losing its low bits. The card records
    the scaling training used (`to_dict`), and predict and eval read images with the same one.
    `dark_ground` is applied to the model's input, not here: `segcli.inference.predict_arrays` and the
    training samples (`segcli.training.trainer`) invert the images on bright ground; files stay as read.
    """

    low: float = 0.1  # percentile mapped to 0
    high: float = 99.9  # percentile mapped to 255
    dark_ground: bool = False  # images on bright ground inverted (`segcli.preprocess.on_dark_ground`), any depth

    def to_dict(self) -> dict:
        return {"8-bit": "as is", "16-bit and float": "per-image percentiles", "low": self.low, "high": self.high,
                "dark_ground": self.dark_ground}

    @classmethod
    def from_dict(cls, data: dict | None) -> IntensityScaling:
        data = data or {}
        return cls(float(data.get("low", cls.low)), float(data.get("high", cls.high)),
                   bool(data.get("dark_ground", cls.dark_ground)))


DEFAULT_SCALING = IntensityScaling()
_PERCENTILE_SAMPLE = 1 << 22  # percentiles of a larger image come from an even subsample of this many values


def to_uint8(image: np.ndarray, scaling: IntensityScaling = DEFAULT_SCALING) -> np.ndarray:
    """8-bit images unchanged; any other depth stretched from its own percentiles to 0..255 (never by dropping bits)."""
    if image.dtype == np.uint8:
        return image
    values = image.reshape(-1)
    if values.size > _PERCENTILE_SAMPLE:
        values = values[:: values.size // _PERCENTILE_SAMPLE]
    values = values[np.isfinite(values)] if np.issubdtype(values.dtype, np.floating) else values
    if values.size == 0:
        return np.zeros(image.shape, np.uint8)
    low, high = np.percentile(values, [scaling.low, scaling.high]).astype(np.float64)
    if high <= low:  # a flat image: no contrast to keep
        return np.zeros(image.shape, np.uint8)
    scaled = (np.nan_to_num(image.astype(np.float32), nan=low) - low) * np.float32(255.0 / (high - low))
    return (np.clip(scaled, 0.0, 255.0) + 0.5).astype(np.uint8)


@dataclass(frozen=True)
class Channels:
    """Which of an image's channels a model gets: `pick` (--channels) chooses and orders them, `count` is how many
    the model takes. A grey image (one channel) fills a three-channel model with three equal channels, as always;
    more channels than the model takes are refused unless picked, never dropped without a word."""

    pick: tuple[int, ...] | None = None  # channel indices in the order the model gets them (None: all, in order)
    count: int | None = 3  # the model's input channels (None: as many as the image has)


RGB = Channels()


def parse_channels(text: str | None, option: str = "--channels") -> tuple[int, ...] | None:
    """"2,0" -> (2, 0): the channels to use, in order (0-based)."""
    if text is None:
        return None
    parts = [part.strip() for part in str(text).split(",")]
    if not parts or not all(part.isdigit() for part in parts):
        raise UsageError(f"{option} {text}: write channel numbers from 0, in the order the model takes them, "
                         "e.g. --channels 2,0")
    picked = tuple(int(part) for part in parts)
    if len(set(picked)) != len(picked):
        raise UsageError(f"{option} {text}: a channel is named twice")
    return picked


def fit_channels(name: str | Path, image: np.ndarray, channels: Channels) -> np.ndarray:
    """(H, W, C) -> (H, W, channels.count): the picked channels, or grey repeated into three; else a DataError."""
    image = image if image.ndim == 3 else image[:, :, None]
    have = image.shape[2]
    if channels.pick is not None:
        missing = [index for index in channels.pick if index >= have]
        if missing:
            numbers = "0" if have == 1 else f"0-{have - 1}"
            raise DataError(f"{name}: has {have} channel{'s' if have > 1 else ''} ({numbers}); --channels "
                            f"{','.join(map(str, channels.pick))} names channel {missing[0]}, which it lacks")
        image = image[:, :, list(channels.pick)] if list(channels.pick) != list(range(have)) else image
    want, have = channels.count, image.shape[2]
    if want is None or have == want:
        return image
    if have == 1 and want == 3:  # grey into an RGB model: as it always was
        return np.repeat(image, 3, axis=2)
    if have > want and channels.pick is None:
        example = ",".join(map(str, range(want)))
        raise DataError(f"{name}: {have} channels, the model takes {want}; choose {'it' if want == 1 else 'them'} "
                        f"with --channels (e.g. --channels {example})")
    raise DataError(f"{name}: {have} channel{'s' if have > 1 else ''} for a model that takes {want}")


def read_image(path: str | Path, max_pixels: int | None = None, scaling: IntensityScaling = DEFAULT_SCALING,
               channels: Channels = RGB, page: int | None = None) -> np.ndarray:
    """Any image OpenCV can decode, or a TIFF -> (H, W, channels.count) uint8 (RGB order for colour images).

    Conversions: EXIF orientation applied; grey -> three equal channels (for a three-channel model); RGBA -> alpha
    dropped (not composited); palette PNG -> its colours; 16-bit and float -> stretched by `scaling` (each channel
    on its own when they are separate signals, as a TIFF's fluorescence channels). TIFFs keep every channel
    (tifffile); one with several pages (a z or time stack) is refused unless `page` chooses one (`read_planes` reads
    them all); an image of one page is read whatever `page` says.
    """
    if is_tiff(path):
        stack = read_tiff(path, max_pixels)
        return _scaled_plane(path, stack, _plane_index(path, stack, page), scaling, channels)
    if channels.count == 3 and channels.pick is None:
        # IMREAD_COLOR applies EXIF orientation and expands grey/palette to 3 channels, but reads 8-bit
        # only; ANYDEPTH keeps 16-bit so we can scale it ourselves rather than let OpenCV clip it.
        data = _checked_bytes(path, max_pixels)
        try:
            image = _imdecode(path, data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
        except DataError:  # OpenCV 5 cannot expand a one-channel float TIFF to colour: read it as stored
            image = _as_bgr(_imdecode(path, data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR))
        image = to_uint8(image, scaling)
        # OpenCV decodes to BGR; segcli is RGB everywhere from here on.
        return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    # Other channel counts: the channels as stored (grey stays one channel), colour in RGB order, alpha dropped.
    image = _imdecode(path, _checked_bytes(path, max_pixels), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if image.ndim == 3:
        image = image[:, :, 2::-1]  # BGR(A) -> RGB
    return np.ascontiguousarray(fit_channels(path, to_uint8(image, scaling), channels))


def read_planes(path: str | Path, max_pixels: int | None = None, scaling: IntensityScaling = DEFAULT_SCALING,
                channels: Channels = RGB) -> np.ndarray:
    """Every plane of a TIFF stack (any image: one plane) -> (P, H, W, channels.count) uint8, each plane scaled
    on its own, as the model saw its training images."""
    if not is_tiff(path):
        return read_image(path, max_pixels, scaling, channels)[None]
    stack = read_tiff(path, max_pixels)
    return np.stack([_scaled_plane(path, stack, i, scaling, channels) for i in range(stack.planes)])


@dataclass
class TiffStack:
    """A TIFF's first image series as (planes, H, W, channels) in its stored type, with what its metadata says."""

    data: np.ndarray  # (P, H, W, C)
    axes: str  # tifffile's axes of the series, e.g. "YXS", "CYX", "ZCYX", "QYX" (pages without metadata)
    colour: bool  # the channels are one colour image (RGB): scaled together, not each on its own
    names: list[str]  # a name per channel (OME-TIFF metadata, "red", "green", "blue", or "channel N")

    @property
    def planes(self) -> int:
        return self.data.shape[0]


CHANNEL_AXES = "CS"  # tifffile's axes for channels (C) and samples of a pixel (S: RGB); Y and X are the plane
_PHOTOMETRIC_READ = (1, 2)  # MINISBLACK, RGB: read with tifffile; other encodings (palette, CMYK) go to OpenCV
logging.getLogger("tifffile").setLevel(logging.CRITICAL)  # its warnings would add lines to segcli's one-line errors


def is_tiff(path: str | Path) -> bool:
    return Path(path).suffix.lower() in TIFF_EXTENSIONS


def read_tiff(path: str | Path, max_pixels: int | None = None) -> TiffStack:
    """A TIFF's planes and channels through tifffile (OME-TIFF and ImageJ hyperstacks by their axes)."""
    import tifffile

    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    with _reading(path):
        if not os.path.getsize(path):
            raise DataError(f"{path}: empty file (0 bytes)")
    try:
        with _reading(path), tifffile.TiffFile(str(path)) as tif:
            series = tif.series[0] if tif.series else None
            if series is None or not series.shape or 0 in series.shape or "Y" not in series.axes:
                raise DataError(f"{path}: a TIFF with no pages (no image in it)")
            page = series.keyframe
            if page.photometric not in _PHOTOMETRIC_READ:
                return _opencv_tiff(path, max_pixels)
            height, width = series.shape[series.axes.index("Y")], series.shape[series.axes.index("X")]
            if height * width > limit:
                raise DataError(f"{path}: {width} x {height} px is above the limit of {limit} pixels; "
                                f"raise it with --max-pixels {width * height} if the file is genuine")
            data, axes = series.asarray(), series.axes
            names = _ome_channel_names(tif)
            alpha = sum(1 for sample in getattr(page, "extrasamples", ()) if int(sample) in (1, 2))
    except tifffile.TiffFileError as error:
        raise DataError(f"{path}: not a TIFF tifffile can read ({error})") from None
    except (ValueError, EOFError) as error:  # a file cut short: "failed to read N bytes"; codecs that fail
        raise DataError(f"{path}: truncated or corrupt TIFF ({str(error).splitlines()[0]})") from None
    return _as_stack(data, axes, page.photometric == 2, alpha, names)


def _as_stack(data: np.ndarray, axes: str, rgb: bool, alpha: int, names: list[str] | None) -> TiffStack:
    """tifffile's array in its axes -> (planes, Y, X, channels): every other axis (Z, T, Q pages) becomes planes."""
    planes = [i for i, a in enumerate(axes) if a not in CHANNEL_AXES + "YX"]
    channel = [i for i, a in enumerate(axes) if a in CHANNEL_AXES]
    order = planes + [axes.index("Y"), axes.index("X")] + channel
    data = np.transpose(data, order)
    count = int(np.prod(data.shape[: len(planes)]))
    data = data.reshape(count, data.shape[len(planes)], data.shape[len(planes) + 1], -1)
    if alpha and rgb:  # RGBA: alpha dropped, as for every other format
        data = data[..., : data.shape[-1] - alpha]
    if names is None or len(names) != data.shape[-1]:
        count = data.shape[-1]
        names = ["red", "green", "blue"] if rgb and count == 3 else [f"channel {i}" for i in range(count)]
    return TiffStack(data, axes, rgb, names)


def _ome_channel_names(tif) -> list[str] | None:
    """The channel names an OME-TIFF's metadata gives (Image/Pixels/Channel/@Name), or None."""
    if not tif.is_ome:
        return None
    found = re.findall(r"<Channel\b[^>]*\bName=\"([^\"]*)\"", tif.ome_metadata or "")
    return found or None


def _opencv_tiff(path: str | Path, max_pixels: int | None) -> TiffStack:
    """A TIFF in an encoding tifffile leaves as stored (palette, CMYK, YCbCr): OpenCV's colours, one plane."""
    image = _decode(path, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH, max_pixels)
    return TiffStack(np.ascontiguousarray(image[None, :, :, ::-1]), "YXS", True, ["red", "green", "blue"])


def _plane_index(path: str | Path, stack: TiffStack, page: int | None) -> int:
    if stack.planes == 1:
        return 0
    if page is None:
        raise DataError(f"{path}: a stack of {stack.planes} pages (z or time); predict one with --page N "
                        f"(0-{stack.planes - 1}) or every one with --stack")
    if not 0 <= page < stack.planes:
        raise DataError(f"{path}: has {stack.planes} pages (0-{stack.planes - 1}); --page {page} is not one of them")
    return page


def _scaled_plane(path: str | Path, stack: TiffStack, index: int, scaling: IntensityScaling,
                  channels: Channels) -> np.ndarray:
    """One plane with the channels the model takes, as uint8: a colour image scaled as a whole, separate channels
    (fluorescence) each from its own percentiles, after picking (a dim channel keeps its contrast)."""
    plane = stack.data[index]
    picked = fit_channels(path, plane, Channels(channels.pick, None))
    if stack.colour or picked.dtype == np.uint8:
        scaled = to_uint8(picked, scaling)
    else:
        scaled = np.stack([to_uint8(picked[:, :, c], scaling) for c in range(picked.shape[2])], axis=2)
    return np.ascontiguousarray(fit_channels(path, scaled, Channels(None, channels.count)))


def channel_names(path: str | Path, channels: Channels = RGB) -> list[str]:
    """The names of the channels a model reading `path` with `channels` gets (for the card)."""
    if not is_tiff(path):
        names = ["red", "green", "blue"]
    else:
        names = read_tiff(path).names
    picked = channels.pick if channels.pick is not None else range(len(names))
    return [names[i] if i < len(names) else f"channel {i}" for i in picked]


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """A decoded image of any channel count as three channels (grey repeated, alpha or extra channels dropped)."""
    if image.ndim == 3 and image.shape[2] >= 3:
        return np.ascontiguousarray(image[:, :, :3])
    grey = image if image.ndim == 2 else image[:, :, 0]
    return np.repeat(grey[:, :, None], 3, axis=2)


def read_intensities(path: str | Path, max_pixels: int | None = None, page: int | None = None) -> np.ndarray:
    """An image's stored values for measuring, turned as `read_image` turns it (EXIF orientation): (H, W) for
    grey, (H, W, 3) RGB for colour, (H, W, C) for a TIFF's C channels (of its `page`); alpha dropped; 16-bit and
    float values kept as they are."""
    if is_tiff(path):
        stack = read_tiff(path, max_pixels)
        plane = stack.data[_plane_index(path, stack, page)]
        return plane[:, :, 0] if plane.shape[2] == 1 else plane
    # Not IMREAD_UNCHANGED: that flag alone skips the EXIF orientation, and the labels follow read_image's.
    image = _imdecode(path, _checked_bytes(path, max_pixels), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if image.ndim == 3 and image.shape[2] >= 3:
        return np.ascontiguousarray(image[:, :, 2::-1])  # BGR -> RGB, alpha (a fourth channel) dropped
    return image if image.ndim == 2 else np.ascontiguousarray(image[:, :, 0])  # grey (+ alpha)


def read_raw_intensities(path: str | Path) -> np.ndarray:
    """An image's stored values, before any scaling (for a dataset's fingerprint: bit depth and range)."""
    if is_tiff(path):
        return read_tiff(path).data
    return _decode(path, cv2.IMREAD_UNCHANGED)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An image resized to (height, width): area-averaged when it shrinks (no aliasing), bilinear when it grows."""
    h, w = size
    shrink = h * w < image.shape[0] * image.shape[1]
    resized = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return resized[:, :, None] if image.ndim == 3 and resized.ndim == 2 else resized  # OpenCV drops a single channel


def read_label_png(path: str | Path) -> np.ndarray:
    """A label file's raw values, no conversion: (H, W) uint8/uint16, or (H, W, 3) uint8 RGB for colour files.

    Palette PNGs are returned as their indices (the class ids), not their colours: PIL knows the
    palette mode and OpenCV does not, so palette images are read with PIL here.
    """
    data = _checked_bytes(path)
    if data[:8].tobytes() == b"\x89PNG\r\n\x1a\n" and _png_color_type(data) == 3:
        return _read_palette_indices(path)
    image = _imdecode(path, data, cv2.IMREAD_UNCHANGED, "a label image")
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
    image = _imdecode(path, _checked_bytes(path), cv2.IMREAD_UNCHANGED, "a PNG")
    if image.ndim != 3 or image.dtype != np.uint8:
        raise DataError(f"{path}: a COCO panoptic PNG is 8-bit RGB (id = R + 256*G + 256^2*B); this one is not")
    return rgb_to_id(np.ascontiguousarray(image[:, :, 2::-1]))  # BGR(A) -> RGB


def read_json(path: str | Path) -> object:
    try:
        with _reading(path, "JSON file"), open(path, encoding="utf-8") as f:
            return json.load(f)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file, so not JSON") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None


# ---------------------------------------------------------------- writing


def _read_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# Read once, at import: setting the umask to read it is not thread-safe, and predict writes from threads.
_FILE_MODE = 0o666 & ~_read_umask()


# Temporary files are named .segcli-<pid>-<stem>.<random>.tmp<suffix>: the pid tells a file another running
# process is writing (leave it) from one a killed process left behind (remove_stale_temporaries deletes it).
TEMP_PREFIX = ".segcli-"
_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"(\d+)-.*\.tmp[^/]*$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files under folder whose writing process no longer runs (a kill -9 mid-write)."""
    removed = []
    for path in Path(folder).rglob(f"{TEMP_PREFIX}*"):
        match = _TEMP_NAME.match(path.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    tmp = temporary_beside(path)
    try:
        yield tmp
    except OSError as error:  # a full disk, a file size limit, a folder that went away: nothing partial stays
        raise DataError(f"{path}: cannot write ({error.strerror or error}); nothing was written") from None
    else:
        commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def temporary_beside(path: Path) -> Path:
    """An empty temporary file beside `path` (same suffix, so writers pick the format), named for
    `remove_stale_temporaries`: a writer that keeps a file open across calls (a video) uses it with `commit`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-{path.stem}.", suffix=f".tmp{path.suffix}",
                                   dir=path.parent)
    except OSError as error:
        raise DataError(f"{path}: cannot write ({error.strerror or error})") from None
    os.close(fd)
    return Path(tmp)


def commit(tmp: Path, path: Path) -> None:
    """Rename a finished temporary file onto `path` (a failure removes it: nothing partial stays)."""
    try:
        # After the writer: mkstemp makes owner-only files, and some writers (safetensors) replace the file
        # with a new owner-only one; every output gets the umask's permissions.
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except OSError as error:  # a full disk, a file size limit, a folder that went away
        tmp.unlink(missing_ok=True)
        raise DataError(f"{path}: cannot write ({error.strerror or error}); nothing was written") from None


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def prepare_out_dir(path: str | Path, option: str = "--out") -> Path:
    """Create an output folder before any work: a file in its place, or a folder that cannot be created or
    written, is a usage error then, not a failure after hours of work."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path}: this is a file; name a folder (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe, name = tempfile.mkstemp(prefix=".segcli-write-test.", dir=path)
        os.close(probe)
        os.unlink(name)
    except OSError as error:
        raise UsageError(f"{option} {path}: cannot write there ({error.strerror or error}); "
                         "choose another folder") from None
    remove_stale_temporaries(path)  # what a run killed mid-write left behind
    return path


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
    """Class-index PNG (uint8, 255 = ignore) with the palette attached, so viewers show colours and readers get
    indices."""
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
        # zlib level 1 (OpenCV's default for the other PNGs): 4x faster than Pillow's 6, the file ~1.5x larger;
        # predict writes one per image beside the forward pass, on the same cores.
        img.save(tmp, format="PNG", compress_level=1)
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


def write_tiff_stack(path: str | Path, planes: np.ndarray) -> Path:
    """Planes as one multi-page TIFF (zlib): (P, H, W) labels or (P, H, W, 3) RGB. 8- and 16-bit stacks carry ImageJ's
    hyperstack metadata (Fiji and napari open them as a z stack); 32-bit ids are a plain multi-page TIFF."""
    import tifffile

    path = Path(path)
    rgb = planes.ndim == 4
    imagej = planes.dtype in (np.uint8, np.uint16)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, planes, imagej=imagej, photometric="rgb" if rgb else "minisblack", compression="zlib",
                         metadata={"axes": "ZYXS" if rgb else "ZYX"} if imagej else None)
    return path


# ---------------------------------------------------------------- inputs


def is_url(text: str | Path) -> bool:
    """An http(s) address (predict downloads it), not a path."""
    return isinstance(text, str) and text.lower().startswith(("http://", "https://"))


def is_video(path: str | Path) -> bool:
    return PurePosixPath(urlsplit(str(path)).path if is_url(path) else str(path)).suffix.lower() in VIDEO_EXTENSIONS


def _is_image(path: Path, videos: bool = False) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS or (videos and path.suffix.lower() in VIDEO_EXTENSIONS)


def _expand_folder(folder: Path, recursive: bool, videos: bool = False) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern)
                  if p.is_file() and _is_image(p, videos) and not p.name.startswith("."))


def expand_inputs(inputs: Iterable[str], recursive: bool = False, stdin: TextIO | None = None,
                  media: bool = False) -> list[Path | str]:
    """Files, folders, quoted globs and "-" (one path per line on stdin) -> a list of paths, duplicates removed.

    With `media` (predict), folders and globs list video files too, and http(s) URLs stay strings (a Path would
    fold their "//"). A path that does not exist is kept, so the batch reports it as a failed input rather than
    silently skipping it; a glob or folder that matches nothing is a usage error.
    """
    items: list[Path | str] = []
    for item in inputs:
        if item == "-":
            stream = stdin if stdin is not None else sys.stdin
            items.extend(_named(line.strip(), media) for line in stream if line.strip())
            continue
        path = Path(item)
        if media and is_url(item):
            items.append(item)
        elif path.is_dir():
            found = _expand_folder(path, recursive, media)
            if not found:
                raise UsageError(f"{item}: folder has no images ({', '.join(IMAGE_EXTENSIONS[:4])}, ...); "
                                 "use --recursive for subfolders")
            items.extend(found)
        elif not path.exists() and glob.has_magic(item):
            # `**` spans any depth, as bash's globstar and Python's glob(recursive=True) have it, with or without -r.
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if _is_image(Path(p), media))
            if not found:
                raise UsageError(f"{item}: the pattern matches no image")
            items.extend(found)
        else:
            items.append(path)
    seen: set[str] = set()
    unique = []
    for item in items:
        key = item if isinstance(item, str) else os.path.abspath(item)
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


def _named(text: str, media: bool) -> Path | str:
    return text if media and is_url(text) else Path(text)


def _stem_and_parent(item: Path | str) -> tuple[str, str]:
    """An input's file stem and what tells two equal stems apart (its folder, or its URL without the file name)."""
    if isinstance(item, str) and is_url(item):
        parts = urlsplit(item)
        path = PurePosixPath(parts.path)
        stem = path.stem or parts.hostname or "download"
        return stem, f"{parts.scheme}://{parts.netloc}{path.parent}?{parts.query}"
    return Path(item).stem, os.path.abspath(Path(item).parent)


def unique_stems(paths: Sequence[Path | str]) -> list[str]:
    """Output stems for inputs: the file stem, plus a stable suffix when two inputs share a stem.

    The suffix is a short hash of the parent folder (of a URL: its address without the file name), so it does not
    depend on input order.
    """
    named = [_stem_and_parent(path) for path in paths]
    counts: dict[str, int] = {}
    for stem, _ in named:
        counts[stem] = counts.get(stem, 0) + 1
    stems = []
    for stem, parent in named:
        if counts[stem] == 1:
            stems.append(stem)
        else:
            stems.append(f"{stem}-{hashlib.sha1(parent.encode()).hexdigest()[:8]}")
    return stems


def shard(items: list, index: int, count: int) -> list:
    """A stable 1/count share of items (every count-th, starting at index), for job arrays."""
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard {index}/{count}: need 0 <= I < N")
    return items[index::count]
