"""Videos and scenes made in the tests (no binary fixtures): OpenCV writes them, FFmpeg reads them back."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

import segcli.sources  # noqa: F401  (FFmpeg quiet before the first video of the process is written)
from segcli.data.synth import render_sample


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    """RGB frames as a video: MJPG in .avi (every frame a keyframe), mp4v in other containers."""
    height, width = frames[0].shape[:2]
    fourcc = "MJPG" if path.suffix == ".avi" else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened(), f"OpenCV's FFmpeg cannot write {fourcc} here"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def moving_disc(count: int, height: int = 48, width: int = 64) -> list[np.ndarray]:
    frames = []
    for i in range(count):
        frame = np.full((height, width, 3), 30, np.uint8)
        cv2.circle(frame, (8 + 2 * i % (width - 16), height // 2), 7, (230, 200, 40), -1)
        frames.append(frame)
    return frames


def moving_shapes(count: int, size: int = 96, step: int = 2, seed: int = 0) -> tuple[list[np.ndarray], list]:
    """A synthetic shapes scene seen through a window that moves `step` px right and down a frame; also the
    scene's objects (their masks in the scene)."""
    scene = render_sample("shapes", size + step * count, np.random.default_rng(seed))
    frames = [np.ascontiguousarray(scene.image[i * step : i * step + size, i * step : i * step + size])
              for i in range(count)]
    return frames, scene.instances
