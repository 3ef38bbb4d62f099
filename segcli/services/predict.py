"""`segcli predict`: run one model over a batch of images and write the output folder (segcli.outputs).

The pipeline keeps the model busy: a thread pool decodes images ahead of it (bounded prefetch;
OpenCV decodes without holding the GIL), `predict_arrays` runs them in batches, and one writer
thread encodes each image's files while the next batch computes. After an image's files, its part
`DIR/.parts/<mode>/<stem>.json` is written (atomically, last): an image is done exactly when its
part exists. So `--skip-existing` resumes an interrupted run, and the aggregates (instances.json,
panoptic.json) are written from the parts at the end, whatever run produced them.

Like `train`, it never prints: `callback("start", ...)`, then `callback("image", record=...)` once
per input, in input order. A record is the `--json` line (docs/predicting.md).
"""

from __future__ import annotations

import contextlib
import os
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

from segcli import io
from segcli.checkpoint import card_label_space, card_scaling, circle_diameter
from segcli.device import resolve_device
from segcli.errors import SegcliError, UsageError
from segcli.exports import parse_exports
from segcli.inference import (
    DEFAULT_TILE,
    InferenceOptions,
    check_tta,
    input_rescale,
    postprocess_options,
    predict_arrays,
    prepare_model,
    scale_mismatch,
)
from segcli.outputs import Job, ObjectOutputs, output_paths, read_part, write_aggregates, write_outputs
from segcli.regions import check_pixel_size
from segcli.services.resolve import resolve_model
from segcli.structures import Mode, Prediction, parse_mode

PRECISIONS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
BACKENDS = ("torch", "onnxruntime")
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
    pixel_size: float | None = None  # the inputs' µm per pixel: resampled to the card's pixel_size_um; measurements in µm
    object_size: float | None = None  # a typical object's diameter in the inputs, px: resampled to the card's object_diameter
    thresholds: dict = field(default_factory=dict)  # post-processing options (center_threshold=...); None keeps the card's
    measure: bool = False  # objects.csv (and objects.parquet with pyarrow): one row per object, --json counts per class
    exports: list[str] = field(default_factory=list)  # any of geojson, imagej, yolo (segcli.exports), per image
    stdin: TextIO | None = None  # where "-" reads paths (None: sys.stdin)


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
    all_jobs = plan_jobs(config.inputs, config.recursive, config.stdin)
    jobs = _shard(all_jobs, config.shard)
    device = resolve_device(config.device)
    dtype = check_precision(config.precision, device)
    net, card = resolve_model(config.mode, config.model, config.weights, device)
    if config.tta:
        check_tta(net, card)
    options = InferenceOptions(tile=_tile(config.tile, net), overlap=config.overlap, tta=config.tta, dtype=dtype,
                               batch_size=_batch_size(config.batch_size, device), channels_last=True,
                               mode=Mode(config.mode), rescale=input_rescale(card, config.pixel_size, config.object_size,
                                                                             object_outputs(config).needs_intensities))
    postprocess_options(net, card, config.thresholds)  # an option the model does not take fails before any image
    runnable = _backend(config, net, device, options)
    io.prepare_out_dir(config.out)  # after every refusal (nothing is created then), before any image is read
    run = _Run(config, runnable, card, device, options, notify)
    notify("start", inputs=len(jobs), all_inputs=len(all_jobs), model=card["model"], device=str(device),
           out=str(config.out), tile=options.tile, note=card.get("note"))
    summary = run.run(jobs)
    if config.pixel_size is None and config.object_size is None:
        note = scale_mismatch(card, run.diameters)
        if note:
            notify("warning", message=note)
    summary.aggregates = write_aggregates(config.out, config.mode, all_jobs, run.label_space, run.wanted)
    summary.seconds = time.perf_counter() - began
    return summary


def _backend(config: PredictConfig, net, device: torch.device, options: InferenceOptions):
    """The model as the run executes it: prepared for torch (folded, fused, the layout and dtype of `options`),
    or its exported graph in an ONNX Runtime session."""
    if config.backend == "torch":
        return prepare_model(net, options)
    from segcli.onnx_runtime import onnxruntime_model

    return onnxruntime_model(net, config.weights, device, options.dtype)


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
    check_pixel_size(config.pixel_size)
    object_outputs(config)


def object_outputs(config: PredictConfig) -> ObjectOutputs:
    """--measure, --export and --pixel-size (which also resamples: `inference.input_rescale`), checked."""
    return ObjectOutputs(config.measure, parse_exports(config.exports), config.pixel_size)


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
        return None if getattr(net, "resizes_input", False) else DEFAULT_TILE
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


def plan_jobs(inputs: list[str], recursive: bool = False, stdin: TextIO | None = None) -> list[Job]:
    """Every input with its output stem; stems are computed over all inputs, so every shard agrees on them."""
    paths = io.expand_inputs(inputs, recursive=recursive, stdin=stdin)
    if not paths:
        raise UsageError("no inputs: give image files, folders, quoted globs, or - with paths on stdin")
    return [Job(path, stem) for path, stem in zip(paths, io.unique_stems(paths))]


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
    if str(job.path) not in message:
        message = f"{job.path}: {message}"
    return {"input": str(job.path), "ok": False, "error": message, "mode": mode, "outputs": {}, "segments": [],
            "seconds": 0.0}


def _done(record: dict) -> Future:
    future: Future = Future()
    future.set_result(record)
    return future


class _Run:
    """One pass over the jobs: reading ahead, batching, writing behind, and reporting in input order."""

    def __init__(self, config: PredictConfig, net, card: dict, device: torch.device, options: InferenceOptions,
                 notify: Callback) -> None:
        self.config, self.net, self.card, self.device, self.options, self.notify = config, net, card, device, options, notify
        self.label_space = card_label_space(card)
        self.wanted = object_outputs(config)
        self.diameters: list[float] = []  # of every object predicted, for the note on the objects' scale
        self.batch: list[tuple[Job, np.ndarray, Future]] = []
        self.pending: deque[Future] = deque()  # one future record per input, in input order
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="segcli-write",  # one thread: files in input order
                                         initializer=background_thread)
        self.summary = PredictSummary(out=Path(config.out), inputs=0)

    def run(self, jobs: list[Job]) -> PredictSummary:
        self.summary.inputs = len(jobs)
        finished = {job: part for job in jobs if self.config.skip_existing and (
            part := read_part(self.config.out, self.config.mode, job, self.config.overlay, self.wanted)) is not None}
        readers = ThreadPoolExecutor(max(1, self.config.readers), thread_name_prefix="segcli-read",
                                     initializer=background_thread)
        try:
            for job, image in _read_ahead(jobs, set(finished), readers, ahead=2 * self.options.batch_size + 2,
                                          max_pixels=self.config.max_pixels, scaling=card_scaling(self.card),
                                          intensities=self.wanted.needs_intensities):
                if job in finished:
                    self.pending.append(_done(finished[job]["record"] | {"skipped": True}))
                elif isinstance(image, str):
                    self._flush()  # earlier inputs first, so records stay in input order
                    self.pending.append(_done(_failure(job, self.config.mode, image)))
                    if self.config.fail_fast:
                        self.summary.stopped = True
                        break
                else:
                    self.batch.append((job, image, Future()))
                    self.pending.append(self.batch[-1][2])
                    if len(self.batch) >= self.options.batch_size:
                        self._flush()
                # Outstanding records hold their images: wait for the oldest beyond a few batches. Never fewer
                # than one batch, or it would wait for images of the batch being gathered.
                self._report(keep=4 * self.options.batch_size)
            self._flush()
            self._report(keep=0)
        finally:
            readers.shutdown(wait=True, cancel_futures=True)
            self.writer.shutdown(wait=True, cancel_futures=True)
        return self.summary

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

    def _write(self, job: Job, image: np.ndarray | tuple, prediction: Prediction, seconds: float) -> dict:
        """write_outputs; a file that cannot be written (full disk) fails this input, and its other files go too."""
        config = self.config
        try:
            intensities = image[1] if isinstance(image, tuple) else None
            return write_outputs(config.out, config.mode, job, _rgb(image), prediction, self.label_space,
                                 config.alpha if config.overlay else None, seconds, self.wanted, intensities)
        except SegcliError as error:
            for path in output_paths(config.out, job.stem, config.mode, config.overlay, self.wanted.exports).values():
                path.unlink(missing_ok=True)
            return _failure(job, config.mode, str(error))

    def _report(self, keep: int) -> None:
        """Send the records that are ready, in input order, waiting for them while more than `keep` are outstanding."""
        while self.pending and (self.pending[0].done() or len(self.pending) > keep):
            record = self.pending.popleft().result()
            if self.config.mode != Mode.SEMANTIC:  # (a semantic segment is a whole class, not an object)
                # The objects' areas, counted by the writer already: no mask is summed again.
                self.diameters.extend(circle_diameter(s["area"]) for s in record["segments"] if s.get("isthing"))
            if not record["ok"]:
                self.summary.failed.append(record)
            elif record.get("skipped"):
                self.summary.skipped += 1
            else:
                self.summary.predicted += 1
            self.notify("image", record=record)


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


def _read_ahead(jobs: list[Job], skip: set[Job], pool: ThreadPoolExecutor, ahead: int,
                max_pixels: int | None = None, scaling: io.IntensityScaling = io.DEFAULT_SCALING,
                intensities: bool = False) -> Iterator[tuple[Job, np.ndarray | tuple | str | None]]:
    """Every job in order with its decoded image (with `intensities`: the image and its stored values; the error
    message if it failed; None for jobs in `skip`, which are not read); at most `ahead` images are decoded ahead
    of the consumer."""
    queue = (job for job in jobs if job not in skip)
    loading: dict[Job, Future] = {}
    read = _read_with_intensities if intensities else io.read_image

    def refill() -> None:
        while len(loading) < ahead and (job := next(queue, None)) is not None:
            loading[job] = pool.submit(read, job.path, max_pixels, scaling)

    for job in jobs:
        refill()
        if job in skip:
            yield job, None
            continue
        try:
            image = loading.pop(job).result()
        except SegcliError as error:
            image = str(error)
        yield job, image


def _read_with_intensities(path: Path, max_pixels: int | None, scaling: io.IntensityScaling
                           ) -> tuple[np.ndarray, np.ndarray]:
    """The model's image and the stored values the objects are measured on (a second decode, in the reader)."""
    return io.read_image(path, max_pixels, scaling), io.read_intensities(path, max_pixels)


def _rgb(image: np.ndarray | tuple) -> np.ndarray:
    return image[0] if isinstance(image, tuple) else image
