"""Inputs that are not image files: videos (OpenCV's FFmpeg backend) and http(s) URLs (downloaded first).

A video's frames are read in order by one `FrameReader` (frames in between are grabbed, not converted);
`VideoSink` writes frames as a video, renamed into place when it is complete, like every output.
`download` fetches a URL into a temporary file with a timeout and a size limit. Every way these fail
is one `DataError` naming the video or the URL.
"""

from __future__ import annotations

import hashlib
import math
import mimetypes
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import cv2
import numpy as np

from segcli import io  # io also silences OpenCV's own log
from segcli._version import __version__
from segcli.errors import DataError, UsageError

# FFmpeg prints its own complaints ("moov atom not found") on stderr; segcli says what failed in one line instead.
# OpenCV reads this when it first opens a video (not at import), so any time before that is early enough.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET

FALLBACK_FPS = 25.0  # a video whose container gives no frame rate is written at FFmpeg's default
VIDEO_CODEC = "mp4v"  # MPEG-4 Part 2 in .mp4: the encoder every OpenCV FFmpeg build has (H.264 often is missing)


# ---------------------------------------------------------------- videos


@dataclass(frozen=True)
class VideoInfo:
    frames: int  # as the container counts them (a file cut short holds fewer: FrameReader says so)
    fps: float  # 0 when the container does not say
    width: int
    height: int


class FramesLost(DataError):
    """A video frame, and every later one, cannot be read: the video ends (or breaks) before a frame its container
    announced, or its frames lack a channel --channels names. One reason for the rest of the video."""

    def __init__(self, path: Path, index: int, first: int, reason: str) -> None:
        super().__init__(f"{path}: frame {index}: {reason}")
        self.first, self.reason = first, reason  # the first frame lost, and why


def _capture(path: str | Path) -> cv2.VideoCapture:
    return cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)


def probe_video(path: str | Path, max_pixels: int | None = None) -> VideoInfo:
    """A video's frame count, rate and size from its container, or a DataError saying why it cannot be read."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: a folder, not a video")
    capture = _capture(path)
    try:
        if not capture.isOpened():
            raise DataError(f"{path}: not a video FFmpeg can read (corrupt, cut short, or an unknown codec)")
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if frames <= 0:  # streams (some webm, mkv) carry no count: count them
            while capture.grab():
                frames += 1
    finally:
        capture.release()
    if frames <= 0:
        raise DataError(f"{path}: a video without frames")
    limit = io.DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    if width * height > limit:
        raise DataError(f"{path}: frames of {width} x {height} px are above the limit of {limit} pixels; "
                        f"raise it with --max-pixels {width * height}")
    return VideoInfo(frames, fps if math.isfinite(fps) and fps > 0 else 0.0, width, height)


class FrameReader:
    """A video's frames as RGB arrays (the channels `channels` picks), asked for in increasing order (one thread at
    a time); the frames between two asked for are grabbed (decoded, not converted)."""

    def __init__(self, path: str | Path, channels: io.Channels = io.RGB) -> None:
        self.path, self.channels = Path(path), channels
        self.capture: cv2.VideoCapture | None = None
        self.position = 0  # the index of the frame the capture gives next
        self.lost: tuple[int, str] | None = None  # the first frame that could not be read, and why

    def frame(self, index: int) -> np.ndarray:
        if self.lost is not None and index >= self.lost[0]:
            raise FramesLost(self.path, index, *self.lost)
        if index < self.position:
            raise ValueError(f"frame {index} asked for after frame {self.position - 1}: frames are read in order")
        if self.capture is None:
            self.capture = _capture(self.path)
        while self.position < index:
            if not self.capture.grab():
                return self._lose(self.position, index)
            self.position += 1
        ok, bgr = self.capture.read()
        if not ok:
            return self._lose(index, index)
        self.position += 1
        try:  # OpenCV decodes to BGR; segcli is RGB everywhere from here on.
            return io.fit_channels(self.path, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self.channels)
        except DataError as error:  # every frame has the same channels: the rest of the video is lost the same way
            return self._lose(index, index, str(error).removeprefix(f"{self.path}: "))

    def _lose(self, first: int, index: int, reason: str | None = None) -> np.ndarray:
        self.lost = (first, reason or f"could not be decoded: the video ends early or is corrupt from frame {first}")
        self.close()
        return self.frame(index)  # raises FramesLost

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()
            self.capture = None


class VideoSink:
    """RGB frames written as a video at `fps` (mp4v), into a temporary file renamed onto `path` by `finish`: an
    interrupted run leaves no half video, and `io.remove_stale_temporaries` removes what a killed one left."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]) -> None:
        self.path, self.fps, self.size = Path(path), fps or FALLBACK_FPS, size  # size: (height, width)
        self.tmp = io.temporary_beside(self.path)
        height, width = size
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*VIDEO_CODEC), self.fps,
                                      (width, height))
        if not self.writer.isOpened():
            self.discard()
            raise DataError(f"{self.path}: OpenCV's FFmpeg cannot write {VIDEO_CODEC} video here; "
                            "leave --save-video out")
        self.frames = 0

    def add(self, rgb: np.ndarray) -> None:
        """One frame; a larger image (an overlay with its legend) is cut to the video's size, the image's own."""
        height, width = self.size
        frame = rgb[:height, :width]
        if frame.shape[:2] != (height, width):  # a frame smaller than the first: on black, as players show it
            canvas = np.zeros((height, width, 3), np.uint8)
            canvas[: frame.shape[0], : frame.shape[1]] = frame
            frame = canvas
        self.writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def finish(self) -> Path:
        self.writer.release()
        io.commit(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        if getattr(self, "writer", None) is not None:
            self.writer.release()
        self.tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------- URLs

DEFAULT_MAX_DOWNLOAD = "1G"
DEFAULT_TIMEOUT = 30.0  # seconds without an answer (to the connection, then to each read) before a URL fails
_CHUNK = 1 << 20
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
# Answers that are never an image or a video (an error page, an API's JSON): refused before reading their body.
_NOT_MEDIA = re.compile(r"^(text/|application/(json|xml|xhtml\+xml|javascript)\b)")


def parse_size(text: str | int, option: str = "--max-download") -> int:
    """"500M", "2G", "100000" -> bytes (K, M, G, T are powers of 1024; a trailing B is allowed)."""
    if isinstance(text, int):
        size = text
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", str(text), re.IGNORECASE)
        if not match:
            raise UsageError(f"{option} {text}: a size in bytes, or with K, M or G (e.g. 500M, 2G)")
        size = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if size < 1:
        raise UsageError(f"{option} {text}: a size of 1 byte or more")
    return size


def human_size(size: float) -> str:
    """1536 -> "1.5 KB" (powers of 1024, as parse_size reads them)."""
    if size < 1024:
        return f"{int(size)} bytes"
    for unit in "KMGT":
        size /= 1024
        if size < 1024 or unit == "T":
            break
    return f"{size:.3g} {unit}B"


def download(url: str, folder: Path, timeout: float = DEFAULT_TIMEOUT, max_bytes: int | None = None) -> Path:
    """The file at `url` saved in `folder`, named by the URL's hash with its extension (else its content type's)."""
    limit = parse_size(DEFAULT_MAX_DOWNLOAD) if max_bytes is None else max_bytes
    request = urllib.request.Request(url, headers={"User-Agent": f"segcli/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            kind = answer.headers.get_content_type() if answer.headers.get("Content-Type") else ""
            if _NOT_MEDIA.match(kind):
                raise DataError(f"{url}: not an image or a video (the server sent {kind})")
            declared = answer.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise DataError(_too_large(url, f"{human_size(int(declared))}", limit))
            target = Path(folder) / f"{hashlib.sha1(url.encode()).hexdigest()[:16]}{_suffix(url, kind)}"
            _save(answer, target, url, limit)
    except urllib.error.HTTPError as error:
        raise DataError(f"{url}: HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            raise DataError(_timed_out(url, timeout)) from None
        raise DataError(f"{url}: cannot connect ({error.reason})") from None
    except TimeoutError:
        raise DataError(_timed_out(url, timeout)) from None
    except (OSError, ValueError) as error:  # a connection reset mid-body, a malformed URL
        raise DataError(f"{url}: download failed ({error})") from None
    return target


def _save(answer, target: Path, url: str, limit: int) -> None:
    received = 0
    with open(target, "wb") as file:
        while chunk := answer.read(_CHUNK):
            received += len(chunk)
            if received > limit:
                file.close()
                target.unlink(missing_ok=True)
                raise DataError(_too_large(url, f"more than {human_size(limit)}", limit))
            file.write(chunk)


def _too_large(url: str, size: str, limit: int) -> str:
    return f"{url}: {size}, above --max-download {human_size(limit)}; raise it if the file is genuine"


def _timed_out(url: str, timeout: float) -> str:
    return f"{url}: no answer within {timeout:g} s; try again, or raise --download-timeout"


def _suffix(url: str, kind: str) -> str:
    """The URL's own extension (formats are told by it: .tif through tifffile, videos), else its content type's."""
    suffix = PurePosixPath(urlsplit(url).path).suffix.lower()
    if suffix in io.IMAGE_EXTENSIONS or suffix in io.VIDEO_EXTENSIONS:
        return suffix
    return (mimetypes.guess_extension(kind) or suffix) if kind else suffix
