"""`segcli predict`: run one model over a batch of images and write the output folder (segcli.outputs).

The pipeline keeps the model busy: a thread pool decodes images ahead of it (bounded prefetch;
OpenCV decodes without holding the GIL), `predict_arrays` runs them in batches, and one writer
thread encodes each image's files while the next batch computes. After an image's files, its part
`DIR/.parts/<mode>/<stem>.json` is written (atomically, last): an image is done exactly when its
part exists. So `--skip-existing` resumes an interrupted run, and the aggregates (instances.json,
panoptic.json) are written from the parts at the end (an interrupted run's too), whatever run of the same
settings produced them: a folder holds one configuration (`outputs.claim_out_dir`), checked before any work.

Inputs as they come: a video's frames are jobs of their own (named <video>/<frame>, read in order by one
thread), a URL is downloaded first, a TIFF stack is refused unless --page picks a plane or --stack predicts
them all (one job: its labels are a multi-page TIFF). With --track, the writer thread gives each video's objects
ids that persist from frame to frame (segcli.tracking), before it writes them.

Like `train`, it never prints: `callback("start", ...)`, then `callback("image", record=..., jobs=n)` once
per input, in input order (`jobs`: how many inputs the record stands for, more than one when a video ends
early). A record is the `--json` line (docs/predicting.md). `callback("download", url=...)` precedes each download.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from segcli import io, sources
from segcli.checkpoint import card_channels, card_label_space, card_scaling, circle_diameter
from segcli.device import resolve_device
from segcli.errors import DataError, SegcliError, UsageError
from segcli.exports import parse_exports
from segcli.inference import (
    DEFAULT_TILE,
    InferenceOptions,
    check_thresholds,
    check_tta,
    input_rescale,
    postprocess_defaults,
    postprocess_options,
    predict_arrays,
    prepare_model,
    scale_mismatch,
)
from segcli.outputs import (
    Job,
    ObjectOutputs,
    claim_out_dir,
    frame_stem,
    output_paths,
    read_part,
    track_prediction,
    tracker_first_id,
    video_path,
    write_aggregates,
    write_outputs,
    write_stack_outputs,
)
from segcli.regions import check_pixel_size
from segcli.services.resolve import bundled_checkpoint, resolve_model, weights_identity
from segcli.sources import FrameReader, FramesLost, VideoSink
from segcli.structures import Mode, Prediction, parse_mode
from segcli.tracking import Tracker

PRECISIONS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
BACKENDS = ("torch", "onnxruntime")
MIN_TILE = 32  # px: the smallest tile of any model (twice the model's stride when that is larger)
# Readers' and the writer's niceness, above the forward pass's 0. predict of 48 images of 512 px against the
# forward alone, three interleaved A/Bs (2 cores): nice 10 0.86-0.90 (bfloat16) and 0.91-0.93 (float32),
# nice 19 0.91-0.92 and 0.92-0.95.
BACKGROUND_NICE = 19

Callback = Callable[..., None]


@dataclass
class PredictConfig:
    inputs: list[str]  # files, folders, quoted globs and "-" (one path per line on stdin)
    mode: str = "semantic"  # semantic | instance | panoptic
    model: str | None = None  # zoo name (torchvision models bring their own weights)
    weights: Path | None = None  # a segcli checkpoint; neither: the bundled default for the mode
    out: Path = Path("runs/predict")
    recursive: bool = False  # descend into subfolders of folder inputs
    overlay: bool = True  # also write overlays/<stem>.jpg
    alpha: float = 0.5  # overlay opacity
    skip_existing: bool = False  # images whose part exists are not predicted again
    overwrite: bool = False  # remove the results an --out folder holds first (else other settings there are refused)
    fail_fast: bool = False  # stop at the first input that fails
    shard: str | None = None  # "I/N": the I-th (0-based) of N stable shares of the inputs, for job arrays
    tile: int | None = None  # tile side in px (None: DEFAULT_TILE; 0: never tile)
    overlap: float = 0.25  # fraction of a tile shared with each neighbour
    tta: bool = False  # average with the mirrored image (all 8 symmetries for models trained with --rotate)
    batch_size: int | None = None  # same-size images (or tiles) per forward pass (None: 4 on a GPU, 1 on a CPU)
    precision: str = "float32"  # float32 | float16 | bfloat16 (autocast)
    device: str = "auto"
    backend: str = "torch"  # torch | onnxruntime (a dense checkpoint's forward pass, CPU float32)
    max_pixels: int | None = None  # refuse larger images before decoding (None: io.DEFAULT_MAX_PIXELS)
    readers: int = 2  # threads decoding images ahead of the model
    pixel_size: float | None = None  # inputs' µm per pixel: resampled to the card's pixel_size_um; measurements in µm
    object_size: float | None = None  # inputs' typical object diameter, px: resampled to the card's object_diameter
    thresholds: dict = field(default_factory=dict)  # post-processing options (center_threshold=...); None: the card's
    measure: bool = False  # objects.csv (and objects.parquet with pyarrow): one row per object, --json counts per class
    exports: list[str] = field(default_factory=list)  # any of geojson, imagej, yolo (segcli.exports), per image
    stdin: TextIO | None = None  # where "-" reads paths (None: sys.stdin)
    channels: str | None = None  # "2,0": the image channels the model gets, in order (None: the card's, else all)
    page: int | None = None  # the plane of TIFF stacks to predict (0-based); stacks are refused without it or --stack
    stack: bool = False  # predict every plane of TIFF inputs; their labels become multi-page TIFFs
    stitch: float | None = None  # with stack: instances of consecutive planes overlapping by this mask IoU share an id
    vid_stride: int = 1  # videos: predict every Nth frame
    save_video: bool = False  # videos: also write overlays/<stem>.mp4 at the source's frame rate
    track: bool = False  # instance and panoptic ids that persist across a video's frames (or a folder's images)
    max_download: str | int = sources.DEFAULT_MAX_DOWNLOAD  # URLs: refuse larger files ("500M", "2G", bytes)
    download_timeout: float = sources.DEFAULT_TIMEOUT  # URLs: seconds without an answer before one fails


@dataclass
class PredictSummary:
    out: Path
    inputs: int  # inputs of this run (this shard)
    predicted: int = 0
    skipped: int = 0
    failed: list[dict] = field(default_factory=list)  # the records of failed inputs
    stopped: bool = False  # --fail-fast ended the run early
    aggregates: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def predict(config: PredictConfig, callback: Callback | None = None) -> PredictSummary:
    """Predict every input and write the outputs of `config.mode`; failed inputs are reported, not raised."""
    notify = callback if callback is not None else (lambda *a, **k: None)
    began = time.perf_counter()
    _check_config(config)
    with tempfile.TemporaryDirectory(prefix="segcli-download-") as downloads:  # URLs' files, removed at the end
        all_jobs = plan_jobs(config, Path(downloads), notify)
        jobs = _shard(all_jobs, config.shard)
        device = resolve_device(config.device)
        dtype = check_precision(config.precision, device)
        net, card = resolve_model(config.mode, config.model, config.weights, device)
        if config.tta:
            check_tta(net, card)
        channels = model_channels(config.channels, net, card)
        rescale = input_rescale(card, config.pixel_size, config.object_size, object_outputs(config).needs_intensities)
        options = InferenceOptions(tile=_tile(config.tile, net), overlap=config.overlap, tta=config.tta, dtype=dtype,
                                   batch_size=_batch_size(config.batch_size, device), channels_last=True,
                                   mode=Mode(config.mode), rescale=rescale)
        check_tile(options.tile, net, card)
        # An option the model does not take fails before any image.
        postprocess = postprocess_defaults(net) | postprocess_options(net, card, config.thresholds, config.mode)
        runnable = _backend(config, net, device, options)
        settings = run_settings(config, card, options, postprocess, channels)
        # After every refusal (nothing is created then), before any image is read.
        claim_out_dir(config.out, settings, resume=config.skip_existing, overwrite=config.overwrite,
                      shard=config.shard is not None)
        run = _Run(config, runnable, card, device, options, notify, channels, settings)
        notify("start", inputs=len(jobs), all_inputs=len(all_jobs), model=card["model"], device=str(device),
               out=str(config.out), tile=options.tile, note=card.get("note"))
        try:
            summary = run.run(jobs)
        finally:  # interrupted too: the json files list exactly the images whose files are there
            aggregates = write_aggregates(config.out, config.mode, all_jobs, run.label_space, run.wanted, settings)
    if config.pixel_size is None and config.object_size is None:
        note = scale_mismatch(card, run.diameters)
        if note:
            notify("warning", message=note)
    summary.aggregates = aggregates
    summary.seconds = time.perf_counter() - began
    return summary


def run_settings(config: PredictConfig, card: dict, options: InferenceOptions, postprocess: dict,
                 channels: io.Channels) -> dict:
    """What makes this run's outputs what they are: recorded in the --out folder and in each image's part, so that
    results of other models, modes or options never mix with them (outputs.claim_out_dir)."""
    tiled = options.tile is not None
    return {"mode": config.mode, "model": card.get("name") or card["model"],  # a bundled model's name, else the zoo's
            "weights": weights_identity(config.model, config.weights, card), **postprocess,
            "tile": options.tile or 0, "overlap": options.overlap if tiled else None, "tta": config.tta,
            "precision": config.precision, "backend": config.backend, "pixel_size": config.pixel_size,
            "object_size": config.object_size, "channels": list(channels.pick) if channels.pick else None,
            "page": config.page, "stack": config.stack, "stitch": config.stitch, "track": config.track,
            "vid_stride": config.vid_stride, "measure": config.measure,
            "exports": sorted(object_outputs(config).exports)}


def check_tile(tile: int | None, net, card: dict) -> None:
    """Tiles must hold the model's stride a few times over: a tile under twice it is mostly padding, and its many
    passes ran 15x slower (--tile 8 on a stride-16 model)."""
    stride = net.size_multiple
    smallest = max(MIN_TILE, 2 * stride)
    if tile is not None and tile < smallest:
        raise UsageError(f"--tile {tile}: tiles under {smallest} px multiply the passes for nothing ({card['model']} "
                         f"pads its input to a multiple of {stride} px); use {smallest} or more, or 0 to never tile")


def model_channels(text: str | None, net, card: dict) -> io.Channels:
    """The channels each image gives the model: --channels, else those the model was trained on (its card's)."""
    count = net.in_channels
    picked = io.parse_channels(text) if text is not None else card_channels(card).pick
    if picked is not None and len(picked) != count and not (len(picked) == 1 and count == 3):
        raise UsageError(f"--channels {','.join(map(str, picked))}: {len(picked)} channels for {card['model']}, which "
                         f"takes {count}" + ("" if count == 3 else f" ({', '.join(_channel_names(card))})"))
    return io.Channels(picked, count)


def _channel_names(card: dict) -> list[str]:
    return list((card.get("channels") or {}).get("names") or [])


def _backend(config: PredictConfig, net, device: torch.device, options: InferenceOptions):
    """The model as the run executes it: prepared for torch (folded, fused, the layout and dtype of `options`),
    or its exported graph in an ONNX Runtime session."""
    if config.backend == "torch":
        return prepare_model(net, options)
    from segcli.services.onnx_runtime import onnxruntime_model

    weights = config.weights
    if weights is None and config.model:
        # A bundled model is a checkpoint like any other: its file is exported as --weights' would be.
        weights = bundled_checkpoint(config.model)
    return onnxruntime_model(net, weights, device, options.dtype)


def _check_config(config: PredictConfig) -> None:
    parse_mode(config.mode)
    if config.backend not in BACKENDS:
        raise UsageError(f"--backend {config.backend}: choose one of {', '.join(BACKENDS)}")
    if config.batch_size is not None and config.batch_size < 1:
        raise UsageError(f"--batch-size {config.batch_size}: use 1 or more")
    if config.tile is not None and config.tile < 0:
        raise UsageError(f"--tile {config.tile}: a tile side in pixels, or 0 to never tile")
    if not 0.0 <= config.overlap < 1.0:
        raise UsageError(f"--overlap {config.overlap}: a fraction of the tile in [0, 1)")
    if config.max_pixels is not None and config.max_pixels < 1:
        raise UsageError(f"--max-pixels {config.max_pixels}: a number of pixels, 1 or more")
    if not 0.0 <= config.alpha <= 1.0:
        raise UsageError(f"--alpha {config.alpha}: an opacity in [0, 1]")
    if config.skip_existing and config.overwrite:
        raise UsageError("--skip-existing keeps the results --out holds, --overwrite removes them: choose one")
    check_thresholds(config.thresholds)
    check_pixel_size(config.pixel_size)
    object_outputs(config)
    io.parse_channels(config.channels)
    sources.parse_size(config.max_download)
    if config.download_timeout <= 0:
        raise UsageError(f"--download-timeout {config.download_timeout}: seconds, more than 0")
    _check_sequences(config)



def object_outputs(config: PredictConfig) -> ObjectOutputs:
    """--measure, --export and --pixel-size (which also resamples: `inference.input_rescale`), checked."""
    return ObjectOutputs(config.measure, parse_exports(config.exports), config.pixel_size)


def _check_sequences(config: PredictConfig) -> None:
    """The options of videos, tracks and stacks, and how they combine."""
    if config.vid_stride < 1:
        raise UsageError(f"--vid-stride {config.vid_stride}: 1 (every frame) or more")
    if config.save_video and not config.overlay:
        raise UsageError("--save-video writes the overlays as a video; leave --no-overlay out")
    if config.save_video and config.shard is not None:
        raise UsageError("--save-video needs every frame of a video in one run; leave --shard out")
    things = "instances; use --mode instance or panoptic"
    if config.track and config.mode == Mode.SEMANTIC:
        raise UsageError(f"--track follows {things}")
    if config.track and config.shard is not None:
        raise UsageError("--track follows every frame of a video in one run; leave --shard out")
    if config.page is not None and config.page < 0:
        raise UsageError(f"--page {config.page}: a plane number, from 0")
    if config.page is not None and config.stack:
        raise UsageError("--page predicts one plane of a stack, --stack every one: choose one")
    if config.stitch is not None:
        if not config.stack:
            raise UsageError("--stitch links the planes of a stack; add --stack")
        if not 0.0 < config.stitch <= 1.0:
            raise UsageError(f"--stitch {config.stitch}: a mask IoU in (0, 1], e.g. 0.25")
        if config.mode == Mode.SEMANTIC:
            raise UsageError(f"--stitch links {things}")
    if config.track and config.stack:
        raise UsageError("--track follows a video's frames; for the planes of a stack use --stitch IOU")
    if config.stack and (config.measure or config.exports):
        raise UsageError("--measure and --export work on images; predict the planes of a stack with --page N")


def _batch_size(batch_size: int | None, device: torch.device) -> int:
    if batch_size is not None:
        return batch_size
    # On a CPU a batch is no faster (measured on 2 cores: 1024 px U-Net tiles, 77 s for 4000x4000 px in
    # batches of 4, 80 s one by one) but holds 4x the activations (3.2 GB against 1 GB): one at a time.
    return 4 if device.type != "cpu" else 1


def _tile(tile: int | None, net=None) -> int | None:
    if tile is None:
        # A model that resizes every image to its own input size (hf:) runs in bounded memory whole: tiling
        # would only multiply its passes (and blend one class-score map per class over the image).
        return None if net is not None and net.resizes_input else DEFAULT_TILE
    return tile or None  # 0: never tile


def check_precision(name: str, device: torch.device) -> torch.dtype:
    """The autocast dtype for --half/--bf16, refused with a reason where this device cannot use it."""
    if name not in PRECISIONS:
        raise UsageError(f"precision {name!r}: choose one of {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[name]
    if dtype == torch.float32:
        return dtype
    option = "--half" if dtype == torch.float16 else "--bf16"
    if dtype == torch.float16 and device.type == "cpu":
        # torch runs float16 autocast on a CPU, but without AVX-512 FP16/AMX it is slower than float32
        # (1.2x here) and less exact: no reason to choose it.
        raise UsageError("--half: float16 gains nothing on a CPU; use --bf16 (bfloat16 autocast) or a GPU")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.autocast(device.type, dtype=dtype):
                torch.ones(1, device=device).sum()  # entering autocast is what warns or fails
        except RuntimeError as error:  # e.g. a CUDA device without bfloat16
            raise UsageError(f"{option}: {device} cannot run {name} ({error}); leave it out") from None
    if any("autocast" in str(w.message).lower() for w in caught):  # torch disables unsupported autocast with a warning
        raise UsageError(f"{option}: {device} does not support {name} autocast; leave it out")
    return dtype


# ---------------------------------------------------------------- inputs


def plan_jobs(config: PredictConfig, downloads: Path | None = None, notify: Callback | None = None) -> list[Job]:
    """Every input with its output stem (a video: each kept frame; a URL: its download into `downloads`); stems are
    computed over all inputs, so every shard agrees on them. An input that cannot be read at all (a failed download,
    a video FFmpeg cannot open) is one job carrying its error."""
    items = io.expand_inputs(config.inputs, recursive=config.recursive, stdin=config.stdin, media=True)
    if not items:
        raise UsageError("no inputs: give image or video files, folders, URLs, quoted globs, or - with paths on stdin")
    jobs: list[Job] = []
    for item, stem in zip(items, io.unique_stems(items)):
        url = item if isinstance(item, str) else None
        path = Path(item) if url is None else Path(stem)
        if url is not None:
            if notify is not None:
                notify("download", url=url)
            try:
                path = sources.download(url, downloads or Path(tempfile.gettempdir()), config.download_timeout,
                                        sources.parse_size(config.max_download))
            except DataError as error:
                jobs.append(Job(path, stem, url=url, error=str(error)))
                continue
        jobs.extend(_input_jobs(path, stem, url, config))
    return jobs


def _input_jobs(path: Path, stem: str, url: str | None, config: PredictConfig) -> list[Job]:
    if not io.is_video(path):
        return [Job(path, stem, url=url, stack=config.stack and io.is_tiff(path))]
    try:
        info = sources.probe_video(path, config.max_pixels)
    except DataError as error:
        return [Job(path, stem, url=url, error=str(error).replace(str(path), url) if url else str(error))]
    return [Job(path, frame_stem(stem, index), url=url, frame=index,
                time=round(index / info.fps, 4) if info.fps else None)
            for index in range(0, info.frames, config.vid_stride)]


def parse_shard(text: str) -> tuple[int, int]:
    """"I/N" -> (I, N) with 0 <= I < N."""
    index, sep, count = text.partition("/")
    if not sep or not index.strip().isdigit() or not count.strip().isdigit():
        raise UsageError(f"--shard {text!r}: write I/N, e.g. --shard 0/4 for the first of four shares")
    return int(index), int(count)


def _shard(jobs: list[Job], shard: str | None) -> list[Job]:
    if shard is None:
        return jobs
    return io.shard(jobs, *parse_shard(shard))


# ---------------------------------------------------------------- the run


def _failure(job: Job, mode: str, message: str) -> dict:
    message = message.replace(str(job.path), job.name) if job.url else message  # a download is named by its URL
    if job.name not in message:
        message = f"{job.name}: {message}"
    return {"input": job.name, **job.position(), "ok": False, "error": message, "mode": mode, "outputs": {},
            "segments": [], "seconds": 0.0}


def _done(record: dict) -> Future:
    future: Future = Future()
    future.set_result(record)
    return future


class _Run:
    """One pass over the jobs: reading ahead, batching, writing behind, and reporting in input order."""

    def __init__(self, config: PredictConfig, net, card: dict, device: torch.device, options: InferenceOptions,
                 notify: Callback, channels: io.Channels = io.RGB, settings: dict | None = None) -> None:
        self.config, self.net, self.card = config, net, card
        self.device, self.options, self.notify = device, options, notify
        self.settings = settings  # recorded in every part
        self.label_space = card_label_space(card)
        self.wanted = object_outputs(config)
        self.diameters: list[float] = []  # of every object predicted, for the note on the objects' scale
        self.channels, self.scaling = channels, card_scaling(card)
        self.batch: list[tuple[Job, np.ndarray, Future]] = []
        self.pending: deque[tuple[Future, int]] = deque()  # a future record per input, in input order; jobs it covers
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="segcli-write",  # one thread: files in input order
                                         initializer=background_thread)
        self.summary = PredictSummary(out=Path(config.out), inputs=0)
        self.videos = _Videos(config, channels)  # frame readers, and (writer thread) sinks and trackers

    def run(self, jobs: list[Job]) -> PredictSummary:
        self.summary.inputs = len(jobs)
        self.videos.plan(jobs)
        finished = {job: part for job in jobs if self.config.skip_existing and (
            part := read_part(self.config.out, self.config.mode, job, self.config.overlay, self.wanted,
                              self.settings)) is not None}
        readers = ThreadPoolExecutor(max(1, self.config.readers), thread_name_prefix="segcli-read",
                                     initializer=background_thread)
        # A video's frames decode in order, on one thread of their own.
        frames = ThreadPoolExecutor(1, thread_name_prefix="segcli-frames", initializer=background_thread)
        try:
            for job, image in _read_ahead(jobs, set(finished), self._load, readers, frames,
                                          ahead=2 * self.options.batch_size + 2):
                if job in finished:
                    self._skipped(job, finished[job]["record"] | {"skipped": True})
                elif isinstance(image, SegcliError):
                    if not self._failed(job, image) and self.config.fail_fast:
                        self.summary.stopped = True
                        break
                elif job.stack:
                    self._predict_stack(job, image)
                else:
                    self.batch.append((job, image, Future()))
                    self.pending.append((self.batch[-1][2], 1))
                    if len(self.batch) >= self.options.batch_size:
                        self._flush()
                # Outstanding records hold their images: wait for the oldest beyond a few batches. Never fewer
                # than one batch, or it would wait for images of the batch being gathered.
                self._report(keep=4 * self.options.batch_size)
            self._flush()
            self._report(keep=0)
        finally:
            readers.shutdown(wait=True, cancel_futures=True)
            frames.shutdown(wait=True, cancel_futures=True)
            self.writer.shutdown(wait=True, cancel_futures=True)
            self.videos.close()
        return self.summary

    def _load(self, job: Job) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """A job's image (a stack's planes), read in a reader thread (a frame: in the frames thread); with
        --measure, also the stored values its objects are measured on (a second decode; a frame's are its own)."""
        config = self.config
        if job.error is not None:
            raise DataError(job.error)
        if job.frame is not None:
            image = self.videos.reader(job.path).frame(job.frame)
            return (image, image) if self.wanted.needs_intensities else image
        if job.stack:
            return io.read_planes(job.path, config.max_pixels, self.scaling, self.channels)
        image = io.read_image(job.path, config.max_pixels, self.scaling, self.channels, config.page)
        if self.wanted.needs_intensities:
            return image, io.read_intensities(job.path, config.max_pixels, config.page)
        return image

    def _skipped(self, job: Job, record: dict) -> None:
        """A job a previous run finished; a video's (or a tracked sequence's) goes through the writer, which reads
        its files back into the video being written and the tracker."""
        if not self.videos.follows(job):
            self.pending.append((_done(record), 1))
            return
        self._flush()  # earlier frames reach the writer first: it follows each video in order
        slot: Future = Future()
        self.pending.append((slot, 1))
        self.writer.submit(_fill, slot, self._resume, job, record)

    def _failed(self, job: Job, error: SegcliError) -> bool:
        """Report a job that could not be read; the frames a video lost from one on (it ends early, they lack a
        channel) are one record. Returns whether this was a later frame of a video already reported."""
        self._flush()  # earlier inputs first, so records stay in input order
        if self.videos.follows(job):
            self.writer.submit(self.videos.frame_done, job)
        if not isinstance(error, FramesLost):
            self.pending.append((_done(_failure(job, self.config.mode, str(error))), 1))
            return False
        lost = self.videos.lost(job)
        if not lost:
            return True
        frames = f"frame {job.frame}" if len(lost) == 1 else f"frames {lost[0].frame}-{lost[-1].frame}"
        record = _failure(job, self.config.mode, f"{job.name}: {frames} of {self.videos.frames(job)}: {error.reason}")
        self.pending.append((_done(record | {"frames": [lost[0].frame, lost[-1].frame]}), len(lost)))
        return False

    def _flush(self) -> None:
        """Predict the batch, and hand its images to the writer thread."""
        if not self.batch:
            return
        began = time.perf_counter()
        predictions = predict_arrays(self.net, self.card, [_rgb(image) for _, image, _ in self.batch], self.device,
                                     self.options, **self.config.thresholds)
        share = (time.perf_counter() - began) / len(self.batch)
        for (job, image, slot), prediction in zip(self.batch, predictions):
            self.writer.submit(_fill, slot, self._write, job, image, prediction, share)
        self.batch = []

    def _predict_stack(self, job: Job, planes: np.ndarray) -> None:
        """Every plane of a stack (in batches), then its files in the writer thread."""
        self._flush()
        began = time.perf_counter()
        predictions = predict_arrays(self.net, self.card, list(planes), self.device, self.options,
                                     **self.config.thresholds)
        slot: Future = Future()
        self.pending.append((slot, 1))
        self.writer.submit(_fill, slot, self._write_stack, job, planes, predictions, time.perf_counter() - began)

    def _write(self, job: Job, image: np.ndarray | tuple, prediction: Prediction, seconds: float) -> dict:
        """write_outputs; a file that cannot be written (full disk) fails this input, and its other files go too."""
        config = self.config
        try:
            intensities, image = (image[1] if isinstance(image, tuple) else None), _rgb(image)
            if config.track:
                prediction = track_prediction(prediction, config.mode, self.videos.tracker(job, self.label_space),
                                              self.label_space, image.shape[:2])
            sink = self.videos.sink(job) if config.save_video else None
            return write_outputs(config.out, config.mode, job, image, prediction, self.label_space,
                                 config.alpha if config.overlay else None, seconds, self.wanted, intensities,
                                 tracked=config.track, overlay_to=sink.add if sink is not None else None,
                                 settings=self.settings)
        except SegcliError as error:
            for path in output_paths(config.out, job.stem, config.mode, config.overlay, self.wanted.exports).values():
                path.unlink(missing_ok=True)
            return _failure(job, config.mode, str(error))
        finally:
            self.videos.frame_done(job)

    def _write_stack(self, job: Job, planes: np.ndarray, predictions: list[Prediction], seconds: float) -> dict:
        config = self.config
        stitch = None
        if config.stitch is not None:
            stitch = Tracker(config.stitch, memory=0, first_id=tracker_first_id(config.mode, self.label_space))
        try:
            return write_stack_outputs(config.out, config.mode, job, planes, predictions, self.label_space,
                                       config.alpha if config.overlay else None, seconds, stitch, self.settings)
        except SegcliError as error:
            for path in output_paths(config.out, job.stem, config.mode, config.overlay, stack=True).values():
                path.unlink(missing_ok=True)
            return _failure(job, config.mode, str(error))

    def _resume(self, job: Job, record: dict) -> dict:
        """A finished frame of a resumed run, in the writer thread: its ids into the tracker, its overlay into the
        video being written."""
        try:
            self.videos.resume(job, record, self.label_space)
        finally:
            self.videos.frame_done(job)
        return record

    def _report(self, keep: int) -> None:
        """Send the records that are ready, in input order, waiting for them while more than `keep` are outstanding."""
        while self.pending and (self.pending[0][0].done() or len(self.pending) > keep):
            slot, jobs = self.pending.popleft()
            record = slot.result()
            if self.config.mode != Mode.SEMANTIC:  # (a semantic segment is a whole class, not an object)
                # The objects' areas, counted by the writer already: no mask is summed again.
                self.diameters.extend(circle_diameter(s["area"]) for s in record["segments"] if s.get("isthing"))
            if not record["ok"]:
                self.summary.failed.append(record)
            elif record.get("skipped"):
                self.summary.skipped += 1
            else:
                self.summary.predicted += 1
            self.notify("image", record=record, jobs=jobs)


class _Videos:
    """What a run keeps per video: its frame reader (frames thread), and in the writer thread the video being
    written (--save-video) and the tracker of its objects (--track; a folder's images are one sequence too)."""

    def __init__(self, config: PredictConfig, channels: io.Channels) -> None:
        self.config, self.channels = config, channels
        self.readers: dict[Path, FrameReader] = {}
        self.sinks: dict[Path, VideoSink] = {}
        self.trackers: dict[Path, Tracker] = {}
        self.jobs: dict[Path, list[Job]] = {}  # each video's frame jobs in this run, in order
        self.reported: set[Path] = set()  # videos whose lost frames were reported

    def plan(self, jobs: list[Job]) -> None:
        for job in jobs:
            if job.frame is not None:
                self.jobs.setdefault(job.path, []).append(job)

    def follows(self, job: Job) -> bool:
        """Whether the writer must see this job even when it is not predicted (to keep a video or a track going)."""
        return self.config.track or (self.config.save_video and job.frame is not None)

    def reader(self, path: Path) -> FrameReader:
        if path not in self.readers:
            self.readers[path] = FrameReader(path, self.channels)
        return self.readers[path]

    def frames(self, job: Job) -> int:
        return sources.probe_video(job.path).frames

    def lost(self, job: Job) -> list[Job]:
        """The frames of job's video from job on, the first time its end is reported; [] after."""
        if job.path in self.reported:
            return []
        self.reported.add(job.path)
        return [j for j in self.jobs.get(job.path, []) if j.frame >= job.frame]

    def tracker(self, job: Job, space) -> Tracker:
        key = job.path if job.frame is not None else job.path.parent
        if key not in self.trackers:
            self.trackers[key] = Tracker(first_id=tracker_first_id(self.config.mode, space))
        return self.trackers[key]

    def sink(self, job: Job) -> VideoSink | None:
        """The video of job's video's overlays, at its frame rate (over the stride: it lasts as long) and size."""
        if job.frame is None:
            return None
        if job.path not in self.sinks:
            info = sources.probe_video(job.path)
            self.sinks[job.path] = VideoSink(video_path(self.config.out, job.stem.rsplit("/", 1)[0]),
                                             info.fps / self.config.vid_stride, (info.height, info.width))
        return self.sinks[job.path]

    def resume(self, job: Job, record: dict, space) -> None:
        """A finished frame read back: its ids restore the tracker, its overlay joins the video."""
        outputs = record.get("outputs", {})
        if self.config.track and self.config.mode in outputs:
            ids = _read_ids(Path(outputs[self.config.mode]), self.config.mode)
            things = {s["id"]: space.index_of_category(s["category_id"]) for s in record["segments"] if s["isthing"]}
            self.tracker(job, space).restore(ids, things)
        if self.config.save_video and job.frame is not None and "overlay" in outputs:
            self.sink(job).add(io.read_image(outputs["overlay"]))

    def frame_done(self, job: Job) -> None:
        """After a video's last frame in this run, its video is complete."""
        frames = self.jobs.get(job.path)
        if frames and frames[-1] is job and job.path in self.sinks:
            self.sinks.pop(job.path).finish()

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()
        for sink in self.sinks.values():  # a run stopped early (--fail-fast): no partial video
            sink.discard()


def _read_ids(path: Path, mode: str) -> np.ndarray:
    return io.read_panoptic_png(path) if mode == Mode.PANOPTIC else io.read_label_png(path).astype(np.int64)


def background_thread() -> None:
    """Lower the calling thread's priority (Linux: threads have their own nice value): decoding and writing then
    take the cycles the forward pass leaves, instead of preempting one of its threads, which stalls all of them
    at the next barrier (2 cores: the forward uses both)."""
    with contextlib.suppress(AttributeError, OSError):  # other systems: a process-wide value, left alone
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)


def _fill(slot: Future, function: Callable, *args) -> None:
    """Run function in the writer thread and put its result (or its exception) into the input's slot."""
    try:
        slot.set_result(function(*args))
    except BaseException as error:
        slot.set_exception(error)


def _read_ahead(jobs: list[Job], skip: set[Job], load: Callable[[Job], np.ndarray], pool: ThreadPoolExecutor,
                frames: ThreadPoolExecutor, ahead: int) -> Iterator[tuple[Job, np.ndarray | SegcliError | None]]:
    """Every job in order with its decoded image (the error if it failed; None for jobs in `skip`, which are not
    read); at most `ahead` images are decoded ahead of the consumer, video frames by `frames`, in order."""
    queue = (job for job in jobs if job not in skip)
    loading: dict[Job, Future] = {}

    def refill() -> None:
        while len(loading) < ahead and (job := next(queue, None)) is not None:
            loading[job] = (frames if job.frame is not None else pool).submit(load, job)

    for job in jobs:
        refill()
        if job in skip:
            yield job, None
            continue
        try:
            image = loading.pop(job).result()
        except SegcliError as error:
            image = error
        yield job, image


def _rgb(image: np.ndarray | tuple) -> np.ndarray:
    return image[0] if isinstance(image, tuple) else image
