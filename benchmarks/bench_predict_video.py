"""`segcli predict` on a video, end to end.

Targets (issue #40):
- the frames per second of `predict` on an mp4 (decoding the video, pre- and post-processing, semantic PNGs,
  overlays, parts, and --save-video encoding the overlays as a video) at least 0.90 of the forward-only
  throughput of the same prepared model on the same frames already in memory as tensors (as for folders:
  bench_predict);
- `--track` costs at most 10% more time than the same instance prediction without it.

The forward and predict rows use bench_predict's model (the default `unet`, untrained, with a classifier scaled
up so its argmax varies like a trained model's). The tracking row needs objects that move: the bundled `shapes`
model on a synthetic shapes scene seen through a window that moves 4 px a frame.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_predict import checkpoint
from benchmarks.common import check, interleaved
from segcli import io
from segcli.data.synth import render_sample
from segcli.inference import InferenceOptions, dense_forward, prepare_model
from segcli.preprocess import image_to_tensor
from segcli.services.predict import PredictConfig, predict
from segcli.sources import FrameReader, VideoSink

SIZE = 512
FRAMES = 48
STEP = 4  # px the window moves a frame
THROUGHPUT_TARGET = 0.90
TRACK_TARGET = 1.10


def video(path: Path) -> Path:
    """FRAMES frames of SIZE px: a shapes scene through a moving window, as an mp4 (mp4v) at 25 frames/s."""
    scene = render_sample("shapes", SIZE + STEP * FRAMES, np.random.default_rng(0)).image
    sink = VideoSink(path, 25.0, (SIZE, SIZE))
    for i in range(FRAMES):
        sink.add(scene[i * STEP : i * STEP + SIZE, i * STEP : i * STEP + SIZE])
    return sink.finish()


def _throughput(folder: Path, weights: Path, clip: Path) -> dict:
    from segcli.checkpoint import load_checkpoint

    model, _ = load_checkpoint(weights)
    options = InferenceOptions(dtype=torch.float32, channels_last=True)
    prepared = prepare_model(model, options)
    reader = FrameReader(clip)
    tensors = [image_to_tensor(reader.frame(i))[None] for i in range(FRAMES)]
    reader.close()
    runs = iter(range(100))

    def forward_only() -> None:
        for x in tensors:
            prepared.postprocess(dense_forward(prepared, x, options))

    def predict_video() -> None:
        predict(PredictConfig(inputs=[str(clip)], weights=weights, out=folder / f"out{next(runs)}", save_video=True))

    seconds = interleaved({"forward": forward_only, "predict": predict_video}, rounds=5, warmup=1)
    ratio = seconds["forward"] / seconds["predict"]
    return {"forward_frames_per_s": round(FRAMES / seconds["forward"], 2),
            "predict_video_frames_per_s": round(FRAMES / seconds["predict"], 2),
            "predict_video_fraction_of_forward": round(ratio, 3),
            "check": check(f"predict a video of {SIZE} px frames with overlays and --save-video, fraction of "
                           "forward-only", f"{ratio:.2f}", f">= {THROUGHPUT_TARGET}", ratio >= THROUGHPUT_TARGET)}


def _tracking(folder: Path, clip: Path) -> dict:
    runs = iter(range(100))

    def run(track: bool):
        return lambda: predict(PredictConfig(inputs=[str(clip)], model="shapes", mode="instance", track=track,
                                             out=folder / f"track{next(runs)}"))

    seconds = interleaved({"plain": run(False), "track": run(True)}, rounds=5, warmup=1)
    ratio = seconds["track"] / seconds["plain"]
    return {"instance_video_s": round(seconds["plain"], 2), "instance_video_track_s": round(seconds["track"], 2),
            "track_time_ratio": round(ratio, 3),
            "check": check(f"predict --track on a video of {SIZE} px frames (instance), time against without",
                           f"{ratio:.2f}", f"<= {TRACK_TARGET}", ratio <= TRACK_TARGET)}


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        weights = checkpoint(folder)
        clip = video(folder / "clip.mp4")
        result: dict = {"frames": FRAMES, "size": SIZE, "video_bytes": clip.stat().st_size}
        checks = []
        for part in (_throughput(folder, weights, clip), _tracking(folder, clip)):
            checks.append(part.pop("check"))
            result.update(part)
        io.remove_stale_temporaries(folder)
    result["checks"] = checks
    return result
