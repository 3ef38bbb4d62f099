"""The command line: parse options, call one service function, render with rich.

Every command takes --device, --quiet and --debug. A `SegcliError` raised anywhere
below becomes one red line on stderr and its exit code (2 for usage/config errors);
any other exception is a bug and shows its traceback.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer._click.exceptions import NoArgsIsHelpError
from typer._click.exceptions import UsageError as OptionError  # typer parses with its own copy of click
from typer.core import TyperGroup

from segcli._version import __version__
from segcli.errors import SegcliError, UsageError
from segcli.structures import Mode

err_console = Console(stderr=True)


def out_console() -> Console:
    """Results: tables on stdout, 80 columns wide when it is no terminal (a pipe, a file). Made at each use: a
    console reads COLUMNS once, when it is made, so one kept from import time would keep that moment's width."""
    return Console()
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a program the pipe's closing killed


@dataclass
class RunState:
    debug: bool = False  # show tracebacks
    quiet: bool = False  # no progress or messages on stderr


STATE = RunState()


class SegcliGroup(TyperGroup):
    """Turns SegcliError into one clear line and an exit code, in one place; flags show no value type in help."""

    def get_params(self, ctx: typer.Context) -> list:
        return _without_flag_types(super().get_params(ctx))

    def get_command(self, ctx: typer.Context, name: str):
        command = super().get_command(ctx, name)
        if command is not None and not isinstance(command, TyperGroup):
            _without_flag_types(command.get_params(ctx))
        return command

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except SegcliError as error:
            if STATE.debug:
                raise
            _error_line(str(error))
            raise typer.Exit(error.exit_code) from None
        except OptionError as error:  # an option or argument that does not parse: one line too, not a usage box
            if isinstance(error, NoArgsIsHelpError):
                raise  # `segcli data` alone: typer shows the help
            where = error.ctx.command_path if error.ctx else "segcli"
            _error_line(f"{error.format_message().rstrip('.')} (see {where} --help)")
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted: files already written are complete; run again (predict --skip-existing, "
                              "train --resume) to continue", highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
        except BrokenPipeError:
            _stop_on_broken_pipe()


def _without_flag_types(params: list) -> list:
    """A flag takes no value: typer's help would show one (`--version <bool>`); an empty metavar shows none."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


def _stop_on_broken_pipe(*_) -> None:
    """The reader of stdout went away (`| head -1`): stop, as a program killed by SIGPIPE would, and say so.
    Also rich's hook for the help pages it writes (its default exits 1, which `set -o pipefail` reads as a failure)."""
    # Python's exit-time flush would fail on the closed pipe again; a stdout without a descriptor (tests) has none.
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    err_console.print(f"stopped: the reader of stdout closed the pipe; exit code {EXIT_BROKEN_PIPE}",
                      highlight=False, soft_wrap=True)
    raise SystemExit(EXIT_BROKEN_PIPE) from None


Console.on_broken_pipe = _stop_on_broken_pipe  # every rich console of this process, typer's help included


def _error_line(message: str) -> None:
    # escape: messages carry paths and hints such as segcli[onnx] that rich would read as markup
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


app = typer.Typer(
    cls=SegcliGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="Semantic, instance and panoptic image segmentation. Run `segcli COMMAND --help` for each command.",
)
data_app = typer.Typer(cls=SegcliGroup, no_args_is_help=True,
                       help="Datasets: generate synthetic data, convert formats.")
app.add_typer(data_app, name="data")


DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA if present, else CPU), cpu, cuda[:N] or mps.")]
# CPU-only commands still take --device (every command does: scripts pass it to all) and check its spelling.
CpuDeviceOpt = Annotated[str, typer.Option("--device", help="Checked like every command's (auto, cpu, cuda[:N], mps), "
                                                            "but this command runs on the CPU whatever it says.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or messages on stderr.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="Never download weights (as SEGCLI_OFFLINE=1); "
                                                            "missing weights are named with where to put them.")]
TtaOpt = Annotated[bool, typer.Option("--tta", help="Test-time augmentation: average with the mirrored image (2x the "
                                      "time), over all 8 turns and mirrors for models trained with --rotate (8x).")]
RecursiveOpt = Annotated[bool, typer.Option("--recursive", "-r", help="Descend into subfolders of folder inputs.")]
# Post-processing thresholds (default: the values recorded in the checkpoint's card); each applies to some models only.
CenterThresholdOpt = Annotated[float | None, typer.Option("--center-threshold", help="Panoptic-DeepLab models: minimum "
                                                          "centre heatmap value of an instance (card: 0.1).")]
NmsKernelOpt = Annotated[int | None, typer.Option("--nms-kernel", help="Panoptic-DeepLab models: odd window of the "
                                                  "centre non-maximum suppression, px (card: 7).")]
TopKOpt = Annotated[int | None, typer.Option(
    "--top-k", help="Panoptic-DeepLab models: at most this many centres per image.")]
InteriorThresholdOpt = Annotated[float | None, typer.Option(
    "--interior-threshold", help="Contour models: object-interior probability that seeds an instance (card: 0.5).")]
DistanceThresholdOpt = Annotated[float | None, typer.Option(
    "--distance-threshold", help="Distance models: seeds are the interior pixels deeper than this share of their "
                                 "object's depth (card: 0.4).")]
ProbThresholdOpt = Annotated[float | None, typer.Option("--prob-threshold", help="Star-convex (StarDist) models: "
                                                        "minimum object probability of a polygon's centre "
                                                        "(card: 0.5).")]
NmsThresholdOpt = Annotated[float | None, typer.Option("--nms-threshold", help="Star-convex (StarDist) models: drop a "
                                                       "polygon more than this share of which is claimed by likelier "
                                                       "ones (card: 0.4).")]
MinAreaOpt = Annotated[int | None, typer.Option(
    "--min-area", help="Contour and star-convex models: drop instances smaller than this, px.")]
ScoreThresholdOpt = Annotated[float | None, typer.Option(
    "--score-threshold", help="Mask R-CNN: minimum detection score.")]
StuffAreaOpt = Annotated[int | None, typer.Option(
    "--stuff-area", help="Stuff segments smaller than this (px) become void.")]
# Objects: measurements and the files other tools open (docs/measure.md).
MeasureOpt = Annotated[bool, typer.Option("--measure", help="Write objects.csv (and objects.parquet with pyarrow): "
                                          "one row per object with class, score, shape and per-channel intensities; "
                                          "--json lines count the objects per class.")]
ExportOpt = Annotated[list[str] | None, typer.Option("--export", help="Also write each image's objects as geojson "
                                                     "(QuPath), imagej (Fiji ROI set) and/or yolo (polygons): "
                                                     "comma-separated or repeated, under export/<format>/.")]
PixelSizeOpt = Annotated[float | None, typer.Option("--pixel-size", metavar="UM", help="The images' pixel size in µm "
                                                    "(e.g. 0.5 for a 20x scan): resampled to the model's training "
                                                    "pixel size when its card records one; measurements also in µm.")]
ObjectSizeOpt = Annotated[float | None, typer.Option("--object-size", metavar="PX", help="A typical object's diameter "
                                                     "in the images, px: they are resampled so it matches the model's "
                                                     "training objects.")]


def _choices(name: str, *values: str) -> type[Enum]:
    """A str Enum of an option's choices, which typer lists in --help and checks."""
    return Enum(name, {value.replace("-", "_"): value for value in values}, type=str)


THRESHOLD_OPTIONS = {"center_threshold": CenterThresholdOpt, "nms_kernel": NmsKernelOpt, "top_k": TopKOpt,
                     "interior_threshold": InteriorThresholdOpt, "distance_threshold": DistanceThresholdOpt,
                     "prob_threshold": ProbThresholdOpt, "nms_threshold": NmsThresholdOpt, "min_area": MinAreaOpt,
                     "score_threshold": ScoreThresholdOpt, "stuff_area": StuffAreaOpt}


def _with_thresholds(command):
    """Give a command the post-processing options (declared once, in THRESHOLD_OPTIONS, shown before --device);
    it receives those given as one dict, `thresholds` (None: keep the card's value)."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "thresholds"]
    at = next(i for i, p in enumerate(own) if p.name == "device")
    added = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=option)
             for name, option in THRESHOLD_OPTIONS.items()]

    @functools.wraps(command)
    def wrapper(**options):
        given = {name: options.pop(name) for name in THRESHOLD_OPTIONS}
        return command(**options, thresholds={k: v for k, v in given.items() if v is not None})

    wrapper.__signature__ = signature.replace(parameters=[*own[:at], *added, *own[at:]])
    return wrapper


def _setup(debug: bool = False, quiet: bool = False, device: str = "auto", offline: bool = False) -> RunState:
    from segcli.device import check_device_name

    STATE.debug, STATE.quiet = debug, quiet
    check_device_name(device)  # a misspelt --device is a usage error in every command, even where it is unused
    if offline:
        from segcli.hub import set_offline

        set_offline()  # for this process and all it starts: every library below reads segcli.hub.is_offline()
    return STATE


def _say(message: str) -> None:
    if not STATE.quiet:
        err_console.print(message, highlight=False)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"segcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """segcli: segment images from the command line."""


@app.command("models")
def models_command(
    mode: Annotated[Mode | None, typer.Option("--mode", help="Only models that support this mode.")] = None,
    info: Annotated[str | None, typer.Option(
        "--info", help="Details of one model: parameters, GFLOPs, receptive field.")] = None,
    size: Annotated[int, typer.Option("--size", help="Input size in pixels for --info's GFLOPs.")] = 512,
    fetch: Annotated[list[str] | None, typer.Option("--fetch", help="Download these models' (or encoders') weights "
                                                                   "now, for later offline use; repeatable.")] = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="The list (with which weights are on this machine), or --info's facts, as JSON on stdout "
                       "instead of a table.")] = False,
    offline: OfflineOpt = False,
    device: CpuDeviceOpt = "auto",
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """List the zoo and which pretrained weights are here, fetch weights, or describe one model."""
    _setup(debug, quiet, device, offline)
    from segcli.services import catalog

    if fetch:
        for name, paths in catalog.fetch_models(fetch, progress=not quiet):
            _say(f"{name}: " + ", ".join(str(p) for p in paths))
        return
    if info is not None:
        from segcli.errors import check_minimums

        check_minimums(("--size", size, 32))  # the zoo's largest output stride: smaller inputs crash some models
        facts = catalog.model_info(info, size=size)
        if json_out:
            _print_json(facts)
        else:
            _render_info(info, facts)
        return
    rows = catalog.list_catalog(mode.value if mode else None)
    if json_out:
        _print_json(rows)
        return
    _render_models(rows)
    _say(f"weights cache: {catalog.cache_folder()}  (segcli models --fetch NAME downloads ahead of time; "
         "segcli models --info NAME describes one)")


MODE_LETTERS = {"semantic": "S", "instance": "I", "panoptic": "P"}
NAME_WIDTH = 28  # a longer name gets a line of its own, so that the other columns keep their room at 80 columns


def _render_models(rows: list[dict]) -> None:
    """The zoo, then the bundled models with their test scores and data licences: one line per model (`| grep`
    finds whole rows), names never cut (they are what users copy), the last column cut to the width (--info and
    --json say all)."""
    from segcli.services import catalog

    width, lines = out_console().width, []
    zoo = [row for row in rows if "architecture" not in row]
    bundled = [row for row in rows if "architecture" in row]
    if zoo:
        table = _text_table(("name", "modes", "weights", "about"), [
            (row["name"], _mode_letters(row["modes"]), catalog.weights_summary(row), row["description"])
            for row in zoo], width)
        lines += ["model zoo (modes: S semantic, I instance, P panoptic)", *table,
                  "weights: the download ('here': on this machine); -: trained with segcli train"]
    if bundled:
        table = _text_table(("name", "modes", "test scores", "training data licence"), [
            (row["name"], _mode_letters(row["modes"]), row["headline"] or "-", row["licence"]) for row in bundled],
            width, wrap=True)  # every word of a licence: a non-commercial one must say so wherever the model is listed
        lines += ["", "bundled models (ship with segcli, work offline; scores on held-out test images)", *table]
    sys.stdout.write("\n".join(lines).lstrip("\n") + "\n")


def _mode_letters(modes: list[str]) -> str:
    return " ".join(MODE_LETTERS[mode] for mode in modes) or "-"


def _text_table(headers: tuple[str, ...], rows: list[tuple[str, ...]], width: int, wrap: bool = False) -> list[str]:
    """Plain aligned columns: each as wide as its widest cell (the first at most NAME_WIDTH: a longer first cell
    stands on a line of its own), the last cut with an ellipsis at `width` (`wrap`: continued on lines below)."""
    import textwrap

    first = min(NAME_WIDTH, max(len(row[0]) for row in [headers, *rows]))
    widths = [first, *(max(len(row[i]) for row in [headers, *rows]) for i in range(1, len(headers) - 1))]
    indent = sum(widths) + 2 * len(widths)
    room = max(width - indent, 12)
    lines = []
    for row in [headers, *rows]:
        if len(row[0]) > first:
            lines.append(row[0])
            row = ("", *row[1:])
        last = [row[-1]] if len(row[-1]) <= room else textwrap.wrap(row[-1], room) if wrap else \
            [row[-1][: room - 1].rstrip() + "…"]
        lines.append("".join(f"{cell:<{w}}  " for cell, w in zip(row, widths)) + last[0])
        lines += [" " * indent + more for more in last[1:]]
    return [line.rstrip() for line in lines]


def _render_info(name: str, facts: dict) -> None:
    """One model's facts as rows of a table; a bundled model's training data and scores as tables of their own."""
    from segcli.services.catalog import score_table

    table = Table(title=name, show_header=False)
    for key, value in facts.items():
        if key == "pixel_size_um" and value is None:
            value = "unknown: predict --object-size PX rescales inputs"  # (--pixel-size needs the card's)
        if key in ("scores", "training_data", "thing_classes") or value is None:
            continue
        if isinstance(value, dict):
            value = "; ".join(f"{k}: " + ", ".join(f"{a} {b:g}" for a, b in v.items()) if isinstance(v, dict)
                              else f"{k} {v:g}" for k, v in value.items())
        table.add_row(key, escape(", ".join(map(str, value)) if isinstance(value, list) else str(value)))
    if facts.get("bundled") and not facts["scores"]:
        table.add_row("scores", "none recorded in the card")
    _show(table)
    if facts.get("training_data"):
        data = Table(title=f"{name}: training data")
        for column in ("data", "licence", "url"):
            data.add_column(column, overflow="fold")
        for source in facts["training_data"]:
            data.add_row(escape(source["name"]), escape(source["licence"]), escape(source.get("url") or "-"))
        _show(data)
    if facts.get("bundled") and facts["scores"]:
        headings, rows = score_table(facts["scores"], facts["thing_classes"])
        scores = Table(title=f"{name}: scores per test set and kind of image")
        for heading in headings:
            scores.add_column(heading, justify="left" if heading in ("test set", "kind") else "right")
        for row in rows:
            scores.add_row(*map(escape, row))
        _show(scores)


def _show(table: Table) -> None:
    """A command's result table: on stdout, where `| grep` and `| less` find it (--quiet hides messages, not
    results)."""
    out_console().print(table)


def _print_json(obj: object) -> None:
    import json

    sys.stdout.write(json.dumps(obj) + "\n")


# Inputs as they come (docs/inputs.md): channels, stacks, videos, URLs.
ChannelsOpt = Annotated[str | None, typer.Option("--channels", help="The image channels the model gets, in order, from "
                                                 "0 (e.g. 2,0). Default: those the model was trained on, else all.")]
PageOpt = Annotated[int | None, typer.Option("--page", help="Predict this plane (from 0) of multi-page TIFF stacks, "
                                             "which are refused without it or --stack.")]
StackOpt = Annotated[bool, typer.Option("--stack", help="Predict every plane of TIFF stacks; their labels and overlays "
                                        "become multi-page TIFFs.")]
StitchOpt = Annotated[float | None, typer.Option(
    "--stitch", help="With --stack: link objects of consecutive planes that overlap by this mask IoU into 3D objects "
                     "with one id.")]
VidStrideOpt = Annotated[int, typer.Option("--vid-stride", help="Videos: predict every Nth frame.")]
SaveVideoOpt = Annotated[bool, typer.Option("--save-video", help="Videos: also write overlays/<stem>.mp4, the overlays "
                                            "at the source's frame rate.")]
TrackOpt = Annotated[bool, typer.Option("--track", help="Instance and panoptic ids that persist across a video's "
                                        "frames (mask IoU matching, a short memory for hidden objects).")]
MaxDownloadOpt = Annotated[str, typer.Option(
    "--max-download", help="URLs: refuse files larger than this (e.g. 500M, 2G).")]
DownloadTimeoutOpt = Annotated[float, typer.Option("--download-timeout", help="URLs: seconds without an answer before "
                                                   "one fails.")]
# The rest of predict's options, here so that predict_command stays a screen long.
PredictInputsArg = Annotated[list[str], typer.Argument(
    help="Images and videos: files, folders, http(s) URLs, quoted globs, or - (one path per line on stdin).",
    show_default=False)]
PredictModeOpt = Annotated[Mode, typer.Option("--mode", help="What to predict: semantic, instance or panoptic.")]
PredictModelOpt = Annotated[str | None, typer.Option(
    "--model", help="A bundled model or one with library weights (tv_*), downloaded on first use (default: the mode's, "
                    "see docs/models.md).")]
PredictWeightsOpt = Annotated[Path | None, typer.Option(
    "--weights", help="A segcli checkpoint (NAME.safetensors beside NAME.json), or with --model tv_* a torchvision "
                      "state dict.")]
PredictOutOpt = Annotated[Path, typer.Option(
    "--out", help="Output folder: <mode>/<stem>.png, overlays/, instances.json, panoptic.json.")]
JsonLinesOpt = Annotated[bool, typer.Option(
    "--json", help="One JSON line per input on stdout (outputs, segments, errors).")]
NoOverlayOpt = Annotated[bool, typer.Option("--no-overlay", help="Do not write overlays/<stem>.jpg.")]
SkipExistingOpt = Annotated[bool, typer.Option("--skip-existing", help="Resume: keep the images a run of the same "
                                               "settings finished in --out, predict the rest.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Remove the results --out holds first (a folder "
                                            "holding other results is refused without it).")]
FailFastOpt = Annotated[bool, typer.Option("--fail-fast", help="Stop at the first input that fails.")]
ShardOpt = Annotated[str | None, typer.Option(
    "--shard", help="I/N: predict only the I-th (0-based) of N stable shares.")]
TileOpt = Annotated[int | None, typer.Option(
    "--tile", help="Tile images larger than this many px (default 1024; 0: never).")]
OverlapOpt = Annotated[float, typer.Option("--overlap", help="Fraction of a tile shared with each neighbour.")]
PredictBatchSizeOpt = Annotated[int | None, typer.Option(
    "--batch-size", help="Same-size images (or tiles) per forward pass (default: 4 on a GPU, 1 on a CPU).")]
HalfOpt = Annotated[bool, typer.Option("--half", help="float16 autocast (GPUs).")]
PredictBf16Opt = Annotated[bool, typer.Option(
    "--bf16", help="bfloat16 autocast (CPUs with AVX-512 BF16, recent GPUs).")]
BackendOpt = Annotated[str, typer.Option(
    "--backend", help="torch, or onnxruntime (dense checkpoints, CPU float32).")]
OverlayAlphaOpt = Annotated[float, typer.Option("--alpha", help="Opacity of the overlay colours, 0..1.")]
MaxPixelsOpt = Annotated[int | None, typer.Option("--max-pixels", help="Refuse images whose header declares more "
                                                  "pixels (default 2^28, 16384 x 16384), before decoding them.")]


@app.command("predict")
@_with_thresholds
def predict_command(
    inputs: PredictInputsArg,
    mode: PredictModeOpt = Mode.SEMANTIC, model: PredictModelOpt = None, weights: PredictWeightsOpt = None,
    out: PredictOutOpt = Path("runs/predict"), recursive: RecursiveOpt = False, json_lines: JsonLinesOpt = False,
    no_overlay: NoOverlayOpt = False, skip_existing: SkipExistingOpt = False, overwrite: OverwriteOpt = False,
    fail_fast: FailFastOpt = False, shard: ShardOpt = None, tile: TileOpt = None, overlap: OverlapOpt = 0.25,
    tta: TtaOpt = False, batch_size: PredictBatchSizeOpt = None, half: HalfOpt = False, bf16: PredictBf16Opt = False,
    backend: BackendOpt = "torch", alpha: OverlayAlphaOpt = 0.5, max_pixels: MaxPixelsOpt = None,
    measure: MeasureOpt = False, export: ExportOpt = None, pixel_size: PixelSizeOpt = None,
    object_size: ObjectSizeOpt = None, channels: ChannelsOpt = None, page: PageOpt = None, stack: StackOpt = False,
    stitch: StitchOpt = None, vid_stride: VidStrideOpt = 1, save_video: SaveVideoOpt = False, track: TrackOpt = False,
    max_download: MaxDownloadOpt = "1G", download_timeout: DownloadTimeoutOpt = 30.0,
    offline: OfflineOpt = False, device: DeviceOpt = "auto", quiet: QuietOpt = False, debug: DebugOpt = False,
    thresholds: dict | None = None,  # the post-processing options given (_with_thresholds)
) -> None:
    """Segment images and videos with a model and write class, instance or panoptic PNGs, COCO json and overlays."""
    _setup(debug, quiet, device, offline)
    if half and bf16:
        raise UsageError("--half and --bf16: choose one precision")
    from segcli.services.predict import PredictConfig, predict

    precision = "float16" if half else "bfloat16" if bf16 else "float32"
    config = PredictConfig(
        inputs=inputs, mode=mode.value, model=model, weights=weights, out=out, recursive=recursive,
        overlay=not no_overlay, alpha=alpha, skip_existing=skip_existing, overwrite=overwrite, fail_fast=fail_fast,
        shard=shard, tile=tile, overlap=overlap, tta=tta, batch_size=batch_size, precision=precision, device=device,
        backend=backend, max_pixels=max_pixels, thresholds=thresholds, measure=measure, exports=export or [],
        pixel_size=pixel_size, object_size=object_size, channels=channels, page=page, stack=stack, stitch=stitch,
        vid_stride=vid_stride, save_video=save_video, track=track, max_download=max_download,
        download_timeout=download_timeout)
    # Saved before the progress display starts: on a terminal rich redirects sys.stdout to stderr while it shows.
    stdout = sys.stdout
    progress = _progress()
    try:
        summary = predict(config, callback=_predict_progress(progress, stdout if json_lines else None))
    finally:
        progress.stop()
    done = f"{summary.predicted} predicted, {summary.skipped} skipped, {len(summary.failed)} failed"
    _say(f"{done} -> {out}/" + (" (stopped at the first failure: --fail-fast)" if summary.stopped else ""))
    if summary.failed:
        raise typer.Exit(1)


def _predict_progress(progress, json_out):
    """A bar over the inputs; each failure as one line on stderr; with --json, each record as one line on json_out."""
    import json

    tasks: dict[str, int] = {}

    def update(event: str, **info) -> None:
        if event == "start":  # started here, not before predict: a configuration error then prints no empty bar
            if info.get("note") and not STATE.quiet:
                err_console.print(escape(info["note"]), highlight=False, soft_wrap=True)
            progress.start()
            tasks["images"] = progress.add_task(f"predict ({info['model']}, {info['device']})", total=info["inputs"])
        elif event == "warning":
            if not STATE.quiet:
                progress.console.print(f"[yellow]{escape(info['message'])}[/]", highlight=False, soft_wrap=True)
        elif event == "download" and not STATE.quiet:
            err_console.print(f"downloading {escape(info['url'])}", highlight=False, soft_wrap=True)
        elif event == "image":
            record = info["record"]
            progress.advance(tasks["images"], info.get("jobs", 1))
            if not record["ok"]:  # shown even with --quiet: it decides the exit code
                progress.console.print(f"[bold red]failed:[/] {record['error']}", highlight=False, soft_wrap=True)
            if json_out is not None:
                json_out.write(json.dumps(record) + "\n")
                json_out.flush()

    return update


SynthKind = _choices("SynthKind", "shapes", "context")


@data_app.command("synth")
def synth_command(
    kind: Annotated[SynthKind, typer.Option(
        "--kind", help="shapes: stuff + circles/squares/triangles; context: cow vs goat.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the dataset to.")],
    n: Annotated[int, typer.Option("--n", help="Number of images.")] = 64,
    size: Annotated[int, typer.Option("--size", help="Image side in pixels.")] = 128,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same files.")] = 0,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of images in the val split.")] = 0.25,
    force: Annotated[bool, typer.Option(
        "--force", help="Write into a non-empty folder that is not a synthetic dataset.")] = False,
    device: CpuDeviceOpt = "auto",
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Generate a synthetic dataset with semantic, instance (COCO) and panoptic (COCO) ground truth."""
    _setup(debug, quiet, device)
    from segcli.data.synth import generate, synth_label_space

    path = generate(kind.value, out, n=n, size=size, seed=seed, val_fraction=val_fraction, force=force)
    names = ", ".join(synth_label_space(kind.value).names)
    _say(f"wrote {n} {kind.value} images of {size}x{size} px to {path}/ (classes: {names})")


def _split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in _split_list(text))
    except ValueError:
        raise UsageError(f"--sizes {text!r}: write image sides in pixels separated by commas, "
                         "e.g. 128,256,512") from None


def _parse_weights(items: list[str]) -> dict[str, Path]:
    parsed = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--weights {item!r}: write NAME=FILE, e.g. --weights unet=runs/unet/best.safetensors")
        parsed[name] = Path(path)
    return parsed


def _progress():
    """A rich progress display on stderr (a silent one under --quiet)."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    class Bars(Progress):
        def stop(self) -> None:
            if self.tasks or self.disable:
                super().stop()
            else:  # no bar was shown (refused before any work): no closing blank line above the error
                self.live.stop()

    return Bars(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=STATE.quiet,
        transient=False,
    )


# segcli.data.load.READERS' formats, typed again: importing the readers would slow every command's start-up.
Format = _choices("Format", "auto", "folder", "idmap", "voc", "coco", "coco-panoptic", "cityscapes", "yolo")


ConvertTarget = _choices("ConvertTarget", "coco", "coco-panoptic", "yolo", "idmap", "folder")


@data_app.command("convert")
def convert_command(
    source: Annotated[Path, typer.Argument(help="A dataset in any format segcli reads (a folder or a COCO json).",
                                           metavar="SRC", show_default=False)],
    to: Annotated[ConvertTarget, typer.Option("--to", help="The format to write.")],
    out: Annotated[Path, typer.Option("--out", help="A new or empty folder for the converted dataset.")],
    data_format: Annotated[Format, typer.Option(
        "--format", help="SRC's format; auto recognises the layout.")] = Format.auto,
    classes: Annotated[Path | None, typer.Option("--classes", help="classes.txt for SRC: names (and thing/stuff flags) "
                                                 "in index order.")] = None,
    binary: Annotated[bool, typer.Option("--binary", help="SRC's masks are 0/255: read 255 as class 1.")] = False,
    images: Annotated[Path | None, typer.Option("--images", help="COCO SRC: folder of the images.")] = None,
    masks: Annotated[Path | None, typer.Option("--masks", help="COCO panoptic SRC: folder of the PNGs.")] = None,
    device: CpuDeviceOpt = "auto",
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Convert a dataset to another format (images copied; splits kept); refused when the target cannot hold it."""
    _setup(debug, quiet, device)
    from segcli.services.convert import convert_dataset

    with _progress() as progress:
        tasks: list = []  # the bar starts with the first image: a refusal before it shows none

        def update(event: str, done: int, total: int) -> None:
            tasks[:] = tasks or [progress.add_task(f"convert to {to.value}", total=total)]
            progress.update(tasks[0], completed=done)

        summary = convert_dataset(source=source, to=to.value, out=out, data_format=data_format.value, images=images,
                                  masks=masks, classes=classes, binary=binary, callback=update)
    for warning in summary.warnings:  # shown even with --quiet: the converted dataset differs from SRC there
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    splits = f" (splits: {', '.join(summary.splits)})" if summary.splits else ""
    _say(f"wrote {summary.images} images of {source} ({summary.source_format}) as {to.value} to {out}/{splits}")



# Training options, declared here so that train_command stays a screen long (FormatOpt: tune's too).
TimeOpt = Annotated[str | None, typer.Option("--time", help="Train for this long (e.g. 90s, 20m, 1h30m), validation "
                                             "included; the learning-rate schedule ends with it.")]
BatchSizeOpt = Annotated[int | None, typer.Option("--batch-size", help="Images per step (per process under torchrun; "
                                                  "default: the plan's).")]
ImgSizeOpt = Annotated[int | None, typer.Option("--img-size", help="Resize training: random crops resized to this "
                                                "side, in pixels. No size option: the plan's crop and scale.")]
CropOpt = Annotated[int | None, typer.Option("--crop", help="Crop training: random PX-wide windows at the images' own "
                                             "scale (or --scale); validation and predict use whole images.")]
ScaleOpt = Annotated[float | None, typer.Option("--scale", help="Resize images by F first (0.5: half size) for crop "
                                                "training; predict and eval apply it too.")]
ZoomOpt = Annotated[float | None, typer.Option("--zoom", help="Crop training: zoom windows by a random factor up to "
                                              "1+F either way (e.g. 0.25; default 0: off).")]
RotateOpt = Annotated[bool | None, typer.Option("--rotate/--no-rotate", help="Crop training: vertical flips and "
                                                "quarter turns too (default: the plan's, on for grey or deep images).")]
InvertOpt = Annotated[bool | None, typer.Option("--invert/--no-invert", help="Crop training: invert the intensities "
                                                "of half the windows (default: off; docs/training.md).")]
StainOpt = Annotated[bool | None, typer.Option("--stain/--no-stain", help="Crop training: H&E stain jitter "
                                              "(default: the plan's, on for stained histology).")]
DarkGroundOpt = Annotated[bool | None, typer.Option(
    "--dark-ground/--no-dark-ground", help="Invert the images on bright ground, in training and at inference "
                                           "(default: the plan's, on for microscopy mixing fluorescence and "
                                           "brightfield).")]
ClassWeightsOpt = Annotated[str | None, typer.Option("--class-weights", help="auto (inverse sqrt frequency) or none "
                                                     "(default: the plan's).")]
CenterSigmaOpt = Annotated[float | None, typer.Option("--center-sigma", help="Panoptic-DeepLab centre Gaussian, px "
                                                      "(default: the plan's, from the object size).")]
BoundaryWidthOpt = Annotated[int | None, typer.Option("--boundary-width", help="Contour models: object boundary width, "
                                                      "px (default: the plan's).")]
LogOpt = Annotated[str, typer.Option("--log", help="Log for watching: tensorboard (OUT/tb), mlflow "
                                                  "(MLFLOW_TRACKING_URI or ./mlruns), tensorboard,mlflow, or none. "
                                                  "curves.png is always written.")]
PretrainedOpt = Annotated[bool, typer.Option(
    "--pretrained/--no-pretrained", help="Start from library weights (tv_*: COCO, --encoder: ImageNet), fetched on "
                                         "first use; new heads for the data's classes.")]
EncoderOpt = Annotated[str | None, typer.Option("--encoder", help="ImageNet encoder under the model's decoder, "
                                                "e.g. resnet34 (segcli models lists the encoders and the models "
                                                "that take one).")]
ContactWeightOpt = Annotated[float | None, typer.Option("--contact-weight", help="Contour models: loss weight where "
                                                        "objects touch (1: off; default: the plan's).")]
TrainPixelSizeOpt = Annotated[float | None, typer.Option(
    "--pixel-size", help="The training images' pixel size in µm, recorded in the card: predict --pixel-size "
                         "resamples to it.")]
EmaOpt = Annotated[float | None, typer.Option("--ema", help="Validate, save and ship a moving average of the weights "
                                              "with this decay per step, e.g. 0.999 (default: off).")]
TrainChannelsOpt = Annotated[str | None, typer.Option(
    "--channels", help="Train on these image channels, in order, from 0 (e.g. 2,0), or on all of them (all; TIFFs "
                       "keep every channel).")]
TrainClassesOpt = Annotated[Path | None, typer.Option("--classes", help="classes.txt: names (and thing/stuff flags) in "
                                                      "index order.")]
BinaryOpt = Annotated[bool, typer.Option("--binary", help="Masks are 0/255: read 255 as class 1.")]
TrainModelOpt = Annotated[str, typer.Option(
    "--model", help="Zoo model name, or a bundled model to fine-tune (segcli models).")]
TrainModeOpt = Annotated[Mode, typer.Option("--mode", help="What to learn: semantic, instance or panoptic.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")]
TrainBf16Opt = Annotated[bool, typer.Option(
    "--bf16", help="bfloat16 autocast (about 2x on CPUs with AVX-512 BF16).")]
FormatOpt = Annotated[Format, typer.Option("--format", help="Dataset format; auto recognises the layout.")]
ScheduleOpt = Annotated[str, typer.Option("--schedule", help="Learning-rate decay after warm-up: poly or cosine.")]
ValEveryOpt = Annotated[int | None, typer.Option("--val-every", help="Validate every N steps (default: automatic, at "
                                                 "most 10% of the time; 0: only at the end).")]
PatienceOpt = Annotated[int | None, typer.Option("--patience", help="Early stopping: validations without improvement.")]
TrainWorkersOpt = Annotated[int | None, typer.Option(
    "--workers", help="Data-loading worker processes (default: one per two cores, at most 4; 0: the main process).")]
TrainWeightsOpt = Annotated[Path | None, typer.Option(
    "--weights", help="Start from: a segcli checkpoint (its card gives the model), or for tv_* a torchvision state "
                      "dict.")]


@app.command("train")
def train_command(
    data: Annotated[Path, typer.Option("--data", help="Dataset folder or COCO json (formats: docs/training.md).")],
    model: TrainModelOpt,
    mode: TrainModeOpt = Mode.SEMANTIC,
    data_format: FormatOpt = Format.auto,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Passes over the training split (default 30).")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Optimiser steps instead of epochs.")] = None,
    time_budget: TimeOpt = None, batch_size: BatchSizeOpt = None,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).")] = 1e-3,
    img_size: ImgSizeOpt = None,
    crop: CropOpt = None, scale: ScaleOpt = None, pixel_size: TrainPixelSizeOpt = None,  # the training images' scale
    zoom: ZoomOpt = None,
    rotate: RotateOpt = None, invert: InvertOpt = None, stain: StainOpt = None, dark_ground: DarkGroundOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run folder (default runs/MODEL-MODE).")] = None,
    resume: ResumeOpt = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed: the same seed gives the same run on a CPU.")] = 0,
    val: Annotated[Path | None, typer.Option("--val", help="COCO: the validation json.")] = None,
    classes: TrainClassesOpt = None, channels: TrainChannelsOpt = None, binary: BinaryOpt = False,  # what the data is
    images: Annotated[Path | None, typer.Option("--images", help="COCO: folder of the images.")] = None,
    masks: Annotated[Path | None, typer.Option("--masks", help="COCO panoptic: folder of the PNGs.")] = None,
    width: Annotated[int | None, typer.Option("--width", help="Base channel width of the model.")] = None,
    dice: Annotated[float, typer.Option("--dice", help="Weight of a Dice loss added to cross-entropy.")] = 0.0,
    class_weights: ClassWeightsOpt = None, center_sigma: CenterSigmaOpt = None, boundary_width: BoundaryWidthOpt = None,
    contact_weight: ContactWeightOpt = None, ema: EmaOpt = None,
    plan_only: Annotated[bool, typer.Option("--plan-only", help="Print the plan from the data and stop.")] = False,
    schedule: ScheduleOpt = "poly",
    warmup: Annotated[int | None, typer.Option("--warmup", help="Warm-up steps (default 5% of the run).")] = None,
    clip: Annotated[float, typer.Option("--clip", help="Gradient-norm clipping (0: off).")] = 1.0,
    val_every: ValEveryOpt = None, patience: PatienceOpt = None,
    bf16: TrainBf16Opt = False,
    amp: Annotated[bool, typer.Option("--amp", help="float16 mixed precision on CUDA.")] = False,
    workers: TrainWorkersOpt = None,
    val_limit: Annotated[int | None, typer.Option("--val-limit", help="Validate on at most N images.")] = None,
    pretrained: PretrainedOpt = True, weights: TrainWeightsOpt = None,
    encoder: EncoderOpt = None, log: LogOpt = "tensorboard",
    offline: OfflineOpt = False, device: DeviceOpt = "auto", quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Train a zoo model on a dataset, with validation, checkpoints (best, last) and --resume."""
    from segcli.distributed import launch_rank
    _setup(debug, quiet or launch_rank() > 0, device, offline)  # under torchrun only rank 0 talks
    from segcli.services.train import TrainConfig

    time_limit = parse_duration(time_budget) if time_budget is not None else None  # seconds
    config = TrainConfig(
        data=data, model=model, mode=mode.value, data_format=data_format.value, out=out, epochs=epochs, steps=steps,
        time=time_limit, batch_size=batch_size, lr=lr, img_size=img_size, crop=crop, scale=scale, zoom=zoom,
        rotate=rotate, invert=invert, stain=stain, dark_ground=dark_ground, seed=seed, resume=resume, device=device,
        width=width, dice=dice, class_weights=class_weights, center_sigma=center_sigma, boundary_width=boundary_width,
        contact_weight=contact_weight, schedule=schedule, warmup=warmup, clip=clip, ema=ema, val_every=val_every,
        patience=patience, bf16=bf16, amp=amp, workers=workers, pixel_size=pixel_size, val_limit=val_limit,
        classes=classes, binary=binary, val=val, images=images, masks=masks, pretrained=pretrained, weights=weights,
        encoder=encoder, channels=channels, log=log, command=["segcli", *sys.argv[1:]])
    _run_training(config, plan_only)


def _run_training(config, plan_only: bool) -> None:
    """Print the plan and stop, or train with progress bars and say where the checkpoints are."""
    for option, value, choices in (("--class-weights", config.class_weights, ("auto", "none")),
                                   ("--schedule", config.schedule, ("poly", "cosine"))):
        if value is not None and value not in choices:
            raise UsageError(f"{option} {value!r}: choose {' or '.join(choices)}")
    from dataclasses import asdict

    from segcli.services.train import plan_run, train

    if plan_only:
        _, plan, print_ = plan_run(config)
        _print_plan(plan.rows(), asdict(print_), force=True)
        return
    with _progress() as progress:
        result = train(config, callback=_train_progress(progress))
    _say(f"best checkpoint: {result.best}  (last: {result.last}); {result.steps} steps in {result.seconds:.0f} s")


def parse_duration(text: str) -> float:
    """"90", "90s", "20m", "1.5h", "1h30m" -> seconds."""
    import re

    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text.lower())
    if not text.strip() or parts is None or not any(parts.groups()):
        raise UsageError(f"--time {text!r}: write a duration such as 90s, 20m, 1h or 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in parts.groups())
    total = 3600 * hours + 60 * minutes + seconds
    if total <= 0:
        raise UsageError(f"--time {text!r}: the duration must be positive")
    return total


def _print_plan(rows: list, fingerprint: dict, force: bool = False) -> None:
    """The plan as one table on stderr: each setting, its value, and what chose it; the fingerprint as its caption."""
    if STATE.quiet and not force:
        return
    table = Table(title="training plan")
    for column in ("setting", "value", "from"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    sizes = (f"{fingerprint['images']} images, height {fingerprint['height']}, width {fingerprint['width']} "
             "(min/median/max)")
    objects = ", ".join(f"{k} {v:g} px" for k, v in fingerprint["object_diameter"].items()) or "none"
    classes = ", ".join(f"{k} {100 * v:.1f}%" for k, v in fingerprint["class_frequency"].items())
    table.caption = (f"data: {sizes}; {fingerprint['bit_depth']}-bit, values {fingerprint['intensity_range'][0]:g}.."
                     f"{fingerprint['intensity_range'][1]:g}; median object diameter {objects}, "
                     f"{fingerprint['objects_per_image']:g} objects per image; pixels: {classes}")
    err_console.print(table)


def _train_progress(progress):
    """Step and epoch bars with loss, images/s and ETA; a table after each validation."""
    tasks: dict[str, int] = {}

    def update(event: str, **info) -> None:
        if STATE.quiet:
            return
        if event == "plan":
            _print_plan(info["rows"], info["fingerprint"])
        elif event == "start":
            progress.console.print(f"training {info['model']} on {info['device']}: {info['train_images']} training / "
                                   f"{info['val_images']} validation images -> {info['out']}", highlight=False)
            if info["epochs"] is not None:
                tasks["epochs"] = progress.add_task("epochs", total=info["epochs"])
            else:  # --time: a bar over the time budget (in % of it)
                tasks["time"] = progress.add_task(f"time budget {info['time']:.0f} s", total=100)
            tasks["steps"] = progress.add_task("steps", total=info["total_steps"], completed=info["resumed_at"])
        elif event == "step":
            if "epochs" in tasks:
                epochs_done = min(info["epochs"], info["step"] / info["steps_per_epoch"])
                progress.update(tasks["epochs"], completed=round(epochs_done, 2),
                                description=f"epoch {info['epoch']}/{info['epochs']}")
            else:
                progress.update(tasks["time"], completed=round(100 * info["progress"], 1))
            progress.update(tasks["steps"], completed=info["step"],
                            description=f"step: loss {info['loss']:.4f} "
                                        f"{info['images_per_s']:.1f} img/s")
        elif event == "validation":
            summary = {k: v for k, v in info["metrics"].items() if isinstance(v, (int, float))}
            table = Table(title=f"validation at step {info['step']}" + (" (best)" if info["improved"] else ""))
            for key in summary:
                table.add_column(key, justify="right")
            table.add_row(*(_fmt(v) for v in summary.values()))
            progress.console.print(table)
        elif event in ("warning", "stop"):
            progress.console.print(f"[yellow]{info.get('message') or info.get('reason')}[/]", highlight=False)

    return update


# eval's options, here so that eval_command stays a screen long.
EvalModeOpt = Annotated[Mode, typer.Option(
    "--mode", help="semantic (PNG folders), instance (COCO jsons), panoptic (COCO panoptic).")]
GtOpt = Annotated[Path | None, typer.Option(
    "--gt", help="Ground truth: a folder of class PNGs, or a COCO / COCO panoptic json.")]
PredOpt = Annotated[Path | None, typer.Option(
    "--pred", help="Predictions, in the same form as --gt (predict's output).")]
GtDirOpt = Annotated[Path | None, typer.Option(
    "--gt-dir", help="Panoptic ground-truth PNGs (default: the json path without .json).")]
PredDirOpt = Annotated[Path | None, typer.Option(
    "--pred-dir", help="Panoptic prediction PNGs (default: the json path without .json).")]
EvalDataOpt = Annotated[Path | None, typer.Option(
    "--data", help="A dataset: predict its validation split and score it.")]
EvalModelOpt = Annotated[str | None, typer.Option(
    "--model", help="Model for --data: bundled, or library weights (tv_*) fetched on first use.")]
EvalWeightsOpt = Annotated[Path | None, typer.Option(
    "--weights", help="Checkpoint for --data (or with --model tv_* a torchvision state dict).")]
EvalFormatOpt = Annotated[str | None, typer.Option("--format", help="Dataset format for --data (default auto).")]
EvalSplitOpt = Annotated[str | None, typer.Option("--split", help="Split of --data to score (default val).")]
NumClassesOpt = Annotated[int | None, typer.Option(
    "--num-classes", help="Semantic: number of classes (default: from --classes or the data).")]
IgnoreIndexOpt = Annotated[int | None, typer.Option(
    "--ignore-index", help="Semantic: ground-truth label to ignore (default 255).")]
EvalClassesOpt = Annotated[Path | None, typer.Option(
    "--classes", help="classes.txt: one class name per line, in index order.")]
BoundaryPxOpt = Annotated[float | None, typer.Option(
    "--boundary-px", help="Boundary F1 tolerance in pixels (default 2% of the diagonal).")]
EvalWorkersOpt = Annotated[int | None, typer.Option(
    "--workers", help="Semantic/panoptic files: parallel worker processes (default: by image count).")]
EvalJsonOpt = Annotated[Path | None, typer.Option(
    "--json", help="Write the metrics (docs/evaluating.md) to this JSON file (- for stdout).")]
CsvOpt = Annotated[Path | None, typer.Option("--csv", help="Write the per-class rows to this CSV file.")]
ReportOpt = Annotated[Path | None, typer.Option("--report", help="Write a report folder: report.html (opens "
                                                "offline), confusion matrix, per-class tables, PR curves, worst "
                                                "images.")]
WorstOpt = Annotated[int | None, typer.Option("--worst", help="With --report: how many of the worst images to "
                                              "draw (default 8).")]
ReportImagesOpt = Annotated[Path | None, typer.Option("--images", help="With --report on files: the images' folder "
                                                      "(default: images/ beside the ground truth).")]


@app.command("eval")
@_with_thresholds
def eval_command(
    mode: EvalModeOpt,
    gt: GtOpt = None, pred: PredOpt = None, gt_dir: GtDirOpt = None, pred_dir: PredDirOpt = None,
    data: EvalDataOpt = None, model: EvalModelOpt = None, weights: EvalWeightsOpt = None,
    data_format: EvalFormatOpt = None, split: EvalSplitOpt = None,
    num_classes: NumClassesOpt = None, ignore_index: IgnoreIndexOpt = None, classes: EvalClassesOpt = None,
    boundary_px: BoundaryPxOpt = None, workers: EvalWorkersOpt = None,
    json_out: EvalJsonOpt = None, csv_out: CsvOpt = None,
    report: ReportOpt = None, worst: WorstOpt = None, images: ReportImagesOpt = None,
    tta: TtaOpt = False,
    pixel_size: PixelSizeOpt = None,
    object_size: ObjectSizeOpt = None,
    offline: OfflineOpt = False,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    thresholds: dict | None = None,  # the post-processing options given (_with_thresholds)
) -> None:
    """Score predictions: mIoU/Dice/boundary F1, COCO mask AP, or panoptic quality, as the reference scripts do."""
    _setup(debug, quiet, device, offline)
    from segcli.services.evaluate import EvalConfig, evaluate

    if thresholds and data is None:
        option = "--" + next(iter(thresholds)).replace("_", "-")
        raise UsageError(f"{option} post-processes a model's outputs: it goes with --data")
    config = EvalConfig(
        mode=mode.value, gt=gt, pred=pred, gt_dir=gt_dir, pred_dir=pred_dir, workers=workers, images=images,
        data=data, model=model, weights=weights, data_format=data_format, split=split, device=device,
        thresholds=thresholds, tta=tta or None, pixel_size=pixel_size, object_size=object_size,
        num_classes=num_classes, ignore_index=ignore_index, classes=classes, boundary_px=boundary_px,
        report=report, worst=worst)
    result = evaluate(config, callback=_warnings)
    if report is not None:
        _say(f"report: {report / 'report.html'}")
    if json_out and str(json_out) == "-":  # stdout carries the JSON only
        _print_json(result)
    else:
        _render_metrics(mode.value, result)
    if json_out and str(json_out) != "-":
        from segcli import io

        io.write_json(json_out, result, indent=2)
    if csv_out:
        from segcli.services.compare_report import write_csv

        write_csv(csv_out, [{k: v for k, v in row.items() if not isinstance(v, dict)} for row in result["per_class"]])


def _warnings(event: str, **info) -> None:
    """A service's warnings, one yellow line each on stderr."""
    if event == "warning" and not STATE.quiet:
        err_console.print(f"[yellow]{escape(info['message'])}[/]", highlight=False, soft_wrap=True)


@app.command("tune")
def tune_command(
    data: Annotated[Path, typer.Option("--data", help="A dataset with the model's classes: its --split is scored.")],
    weights: Annotated[Path | None, typer.Option("--weights", help="The checkpoint to tune: its card is rewritten "
                                                                  "(or a copy at --out).")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="A bundled model to tune; its tuned copy goes to --out.")] = None,
    mode: Annotated[Mode | None, typer.Option("--mode", help="The mode to tune for, by its metric (PQ, mask AP, mIoU); "
                                                             "default: the card's.")] = None,
    grid: Annotated[list[str] | None, typer.Option(
        "--grid", help="NAME=V1,V2,...: values of one threshold, searched in the order given; repeatable "
                       "(default: per model).")] = None,
    split: Annotated[str, typer.Option(
        "--split", help="The split to choose on (keep test for the final score).")] = "val",
    out: Annotated[Path | None, typer.Option("--out", help="Write the tuned checkpoint here (weights copied, new card) "
                                                          "instead of rewriting the card of --weights.")] = None,
    data_format: FormatOpt = Format.auto,
    json_out: Annotated[bool, typer.Option(
        "--json", help="The search as JSON on stdout instead of the table.")] = False,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Choose a checkpoint's post-processing thresholds on a validation split and write them into its card."""
    _setup(debug, quiet, device)
    from segcli.services.tune import TuneConfig, tune

    config = TuneConfig(data=data, weights=weights, model=model, mode=mode.value if mode else None,
                        grid=_parse_grid(grid or []) or None, split=split, out=out, data_format=data_format.value,
                        device=device)
    progress = _progress()
    try:
        result = tune(config, callback=_tune_progress(progress))
    finally:
        progress.stop()
    if json_out:
        _print_json({"card": str(result.card), "mode": result.mode, "metric": result.metric, "split": result.split,
                     "start": result.start, "chosen": result.chosen, "best": result.best, "tried": result.tried})
    else:
        _render_search(result)
    changed = ", ".join(f"{k} {v:g}" for k, v in result.chosen.items() if result.start.get(k) != v) or "none changed"
    _say(f"{result.mode} thresholds ({changed}; {result.split} {result.metric} {result.best:.4f}) -> {result.card}")


def _parse_grid(items: list[str]) -> dict[str, list[float]]:
    """["min_area=5,10", ...] -> {"min_area": [5.0, 10.0], ...}."""
    grid: dict[str, list[float]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        try:
            parsed = [float(v) for v in values.split(",")] if sep and name.strip() else None
        except ValueError:
            parsed = None
        if not parsed:
            raise UsageError(f"--grid {item!r}: write NAME=V1,V2,..., e.g. --grid min_area=5,10,20")
        if name.strip() in grid:
            raise UsageError(f"--grid {name.strip()}: given twice; list all its values in one --grid")
        grid[name.strip()] = parsed
    return grid


def _tune_progress(progress):
    tasks: dict[str, int] = {}

    def update(event: str, **info) -> None:
        if event == "start":
            progress.start()
            description = f"tune: {info['metric']} on {info['split']} ({info['images']} images)"
            tasks["settings"] = progress.add_task(description, total=info["settings"])
        elif event == "setting":
            progress.advance(tasks["settings"])

    return update


def _render_search(result) -> None:
    """Every setting scored, in the order tried, the chosen one marked: the result, on stdout."""
    searched = [k for k in result.chosen if any(t[k] != result.start[k] for t in result.tried)]
    table = Table(title=f"tune ({result.mode})")
    for column in (*searched, result.metric, "chosen"):
        table.add_column(column, justify="right")
    for tried in result.tried:
        mark = "*" if all(tried[k] == v for k, v in result.chosen.items()) else ""
        table.add_row(*(f"{tried[k]:g}" for k in searched), f"{tried[result.metric]:.4f}", mark)
    fixed = [f"{k} {v:g}" for k, v in result.chosen.items() if k not in searched]
    table.caption = f"{result.split} split" + ("; fixed: " + ", ".join(fixed) if fixed else "")
    Console(soft_wrap=False).print(table)


_SUMMARY_KEYS = {
    "semantic": ("miou", "pixel_accuracy", "mean_dice", "boundary_f1"),
    "instance": ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large"),
    "panoptic": ("pq", "sq", "rq"),
}


def _fmt(value) -> str:
    return "-" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))


def _render_metrics(mode: str, result: dict) -> None:
    """Summary row on top, then per-class rows sorted by their main score."""
    keys = _SUMMARY_KEYS[mode]
    table = Table(title=f"segcli eval ({mode})")
    table.add_column("class")
    for key in keys:
        table.add_column(key, justify="right")
    if mode == "panoptic":
        table.add_column("n", justify="right")
        table.add_row("[bold]all[/]", *(_fmt(result[k]) for k in keys), _fmt(result["n"]))
        for part in ("things", "stuff"):
            table.add_row(f"[bold]{part}[/]", *(_fmt(result[part][k]) for k in keys), _fmt(result[part]["n"]))
    else:
        table.add_row("[bold]all[/]", *(_fmt(result.get(k)) for k in keys))
    row_keys = {"semantic": ("iou", None, "dice", "boundary_f1"), "instance": keys, "panoptic": keys}[mode]
    main = row_keys[0]
    scored = [r for r in result.get("per_class", []) if r.get(main) is not None]
    table.add_section()
    for row in sorted(scored, key=lambda r: r[main], reverse=True):
        table.add_row(str(row.get("name", row["id"])), *(_fmt(row.get(k)) if k else "" for k in row_keys))
    absent = len(result.get("per_class", [])) - len(scored)
    if absent:
        where = "the ground truth" if mode == "instance" else "both ground truth and prediction"
        table.caption = f"{absent} classes not shown: absent from {where} (null in --json)"
    _show(table)


# compare's options, here so that compare_command stays a screen long.
ApproachesOpt = Annotated[str, typer.Option(
    "--approaches", help="Comma-separated zoo names, e.g. sliding,fullres,fcn,unet,deeplab; LABEL=NAME runs NAME under "
                         "another label (e.g. unet,unet2=unet).")]
CompareDataOpt = Annotated[Path | None, typer.Option(
    "--data", help="Dataset to train and score on (default: synthetic 'context' data).")]
CompareFormatOpt = Annotated[str, typer.Option("--format", help="Dataset format (auto detects).")]
CompareBinaryOpt = Annotated[bool, typer.Option(
    "--binary", help="Masks are 0/255 (ISBI membranes): read 255 as class 1.")]
BudgetStepsOpt = Annotated[int | None, typer.Option("--budget-steps", help="Optimiser steps per approach.")]
CompareEpochsOpt = Annotated[int | None, typer.Option(
    "--epochs", help="Epochs per approach instead of a step budget.")]
SizesOpt = Annotated[str | None, typer.Option(
    "--sizes", help="Image sides for latency and memory, e.g. 128,256,512,1024.")]
CompareImgSizeOpt = Annotated[int | None, typer.Option("--img-size", help="Training crop size in pixels.")]
CompareWeightsOpt = Annotated[list[str] | None, typer.Option(
    "--weights", help="NAME=FILE: use this checkpoint instead of training NAME.")]
CompareOutOpt = Annotated[Path, typer.Option(
    "--out", help="Folder for results.json/csv, report.md and the plots.")]
CompareSeedOpt = Annotated[int, typer.Option(
    "--seed", help="First seed; also seeds the synthetic data and the validation hold-out.")]
SeedsOpt = Annotated[int | None, typer.Option(
    "--seeds", min=1, help="Train each approach with this many seeds (SEED, SEED+1, ...); verdicts weigh margins "
                           "against their spread. Default 3 (1 with --quick).")]
QuickOpt = Annotated[bool, typer.Option(
    "--quick", help="A one-minute smoke test on tiny data; its claims are not judged.")]


@app.command("compare")
def compare_command(
    approaches: ApproachesOpt = "sliding,fullres,fcn,unet",
    data: CompareDataOpt = None,
    data_format: CompareFormatOpt = "auto",
    binary: CompareBinaryOpt = False,
    budget_steps: BudgetStepsOpt = None,
    epochs: CompareEpochsOpt = None,
    sizes: SizesOpt = None,
    img_size: CompareImgSizeOpt = None,
    weights: CompareWeightsOpt = None,
    out: CompareOutOpt = Path("runs/compare"),
    seed: CompareSeedOpt = 0,
    seeds: SeedsOpt = None,
    quick: QuickOpt = False,
    offline: OfflineOpt = False,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Train the course's approaches on the same data; measure accuracy, boundaries, speed, memory, receptive field."""
    _setup(debug, quiet, device, offline)
    from segcli.services.compare import CompareConfig, compare

    config = CompareConfig(
        out=out,
        approaches=tuple(_split_list(approaches)),
        data=data, data_format=data_format,
        binary=binary,
        steps=budget_steps,
        epochs=epochs,
        sizes=_sizes(sizes) if sizes else None,
        img_size=img_size,
        seed=seed,
        seeds=seeds,
        device=device,
        quick=quick,
        weights=_parse_weights(weights or []),
    )
    with _progress() as progress:
        results = compare(config, callback=_compare_progress(progress))
    _render_compare(results, out)


def _render_compare(results, out: Path) -> None:
    """The two tables, then each claim's and each ranking's verdict (coloured), then where the files are."""
    from segcli.services.compare_report import HELD, NOT_HELD, claims, ranking, terminal_tables

    for title, rows in terminal_tables(results):
        table = Table(title=f"segcli compare: {title}")
        for column in rows[0]:
            table.add_column(column, justify="left" if column == "approach" else "right")
        for row in rows:
            table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in rows[0]))
        err_console.print(table)
    colours = {HELD: "[green]", NOT_HELD: "[red]"}
    for item in [*claims(results), *ranking(results)]:
        verdict = f"{colours.get(item.verdict, '[yellow]')}{item.verdict}[/]"
        why = f" ({escape(item.reason)})" if item.reason else ""
        _say(f"{verdict}{why}: {escape(item.claim)}\n  {escape(item.evidence)}")
    _say(f"results in {out}/ (results.json, results.csv, report.md, grid.png, scaling.png, tradeoff.png)")


def _compare_progress(progress):
    tasks: dict[str, int] = {}

    def update(event: str, **info) -> None:
        approach = info.get("approach", "")
        if event == "train:step":
            key = f"train {approach}" + ("" if info.get("seed") is None else f" seed {info['seed']}")
            if key not in tasks:
                tasks[key] = progress.add_task(key, total=info.get("total_steps"))
            progress.update(tasks[key], completed=info.get("step", 0),
                            description=f"{key} loss {info.get('loss', 0):.3f}")
        elif event in ("evaluate", "time", "data", "reuse"):
            detail = f" at {info['size']} px" if "size" in info else ""
            detail += f" seed {info['seed']}" if info.get("seed") is not None else ""
            progress.console.log(f"{event} {approach}{detail}".strip()) if not STATE.quiet else None

    return update


ImageExt = _choices("ImageExt", "png", "jpg")


@app.command("visualize")
def visualize_command(
    inputs: Annotated[list[str], typer.Argument(help="Images: files, folders, quoted globs, or - (paths on stdin).",
                                                metavar="IMAGE", show_default=False)],
    pred: Annotated[Path | None, typer.Option(
        "--pred", help="A `segcli predict --out` folder holding the predictions.")] = None,
    mask: Annotated[Path | None, typer.Option("--mask", help="Instead of --pred: one label PNG for one image.")] = None,
    mask_kind: Annotated[Mode | None, typer.Option(
        "--mask-kind", help="What --mask holds: class indices (default), instance ids, or COCO panoptic ids "
                            "(drawn as classless segments: the PNG alone has no classes).")] = None,
    mode: Annotated[Mode | None, typer.Option(
        "--mode", help="Which prediction of --pred to draw (default: panoptic, else instance, else semantic, "
                       "whichever it has).")] = None,
    gt: Annotated[Path | None, typer.Option("--gt", help="Ground truth: a label PNG, or a folder of <stem>.png. "
                                                         "Draws TP/FP/FN and the image's IoU.")] = None,
    classes: Annotated[Path | None, typer.Option(
        "--classes", help="classes.txt: names and colours in index order.")] = None,
    out: Annotated[Path, typer.Option(
        "--out", help="Folder for <stem>.png per image (and grid.png).")] = Path("runs/visualize"),
    alpha: Annotated[float, typer.Option("--alpha", help="Opacity of the label colours over the image, 0..1.")] = 0.5,
    contours: Annotated[bool | None, typer.Option(
        "--contours/--no-contours", help="Outline regions (default: instances and things yes, semantic classes no).",
        show_default=False)] = None,
    legend: Annotated[bool, typer.Option("--legend/--no-legend", help="A legend of the classes present.")] = True,
    side_by_side: Annotated[bool, typer.Option(
        "--side-by-side", help="Panels image | prediction (| ground truth | errors with --gt).")] = False,
    grid: Annotated[bool, typer.Option(
        "--grid", help="Also write grid.png: a contact sheet of every picture.")] = False,
    cols: Annotated[int, typer.Option("--cols", help="Columns of the --grid contact sheet.")] = 4,
    ext: Annotated[ImageExt, typer.Option("--ext", help="Output format: png (exact) or jpg (smaller).")] = ImageExt.png,
    recursive: RecursiveOpt = False,
    device: CpuDeviceOpt = "auto",
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Draw predictions on their images: overlays, contours, legend, error maps against ground truth, grids."""
    _setup(debug, quiet, device)
    from segcli.services.visualize import VisualizeConfig, visualize

    config = VisualizeConfig(
        inputs=inputs, out=out, pred=pred, mask=mask, mask_kind=mask_kind.value if mask_kind else None,
        mode=mode.value if mode else None, gt=gt, classes=classes, alpha=alpha, contours=contours, legend=legend,
        side_by_side=side_by_side, grid=grid, cols=cols, ext=ext.value, recursive=recursive,
    )
    with _progress() as progress:
        summary = visualize(config, callback=_visualize_progress(progress))
    for _input, message in summary.failures:  # each message names its input
        err_console.print(f"[bold red]failed:[/] {message}", highlight=False, soft_wrap=True)
    grid_note = f" and {summary.grid.name}" if summary.grid else ""
    _say(f"wrote {len(summary.outputs)} {summary.mode} pictures to {out}/{grid_note}")
    if summary.failures:
        raise typer.Exit(1)


def _visualize_progress(progress):
    tasks: dict[str, int] = {}

    def update(event: str, **info) -> None:
        if event == "start":
            tasks["images"] = progress.add_task(f"visualize {info['mode']}", total=info["total"])
        elif event == "image":
            progress.advance(tasks["images"])

    return update


LabelKind = _choices("LabelKind", "auto", "instance", "semantic", "panoptic")


@app.command("measure")
def measure_command(
    labels: Annotated[list[str], typer.Argument(
        help="Label images: files, folders, quoted globs, or - (paths on stdin).", metavar="LABELS",
        show_default=False)],
    images: Annotated[Path | None, typer.Option("--images", help="Folder of the images (same stems) whose stored "
                                                "values give the intensity columns.")] = None,
    kind: Annotated[LabelKind, typer.Option(
        "--kind", help="What the labels hold; auto: RGB = COCO panoptic, palette PNG = class indices, other grey "
                       "images = instance ids.")] = LabelKind.auto,
    classes: Annotated[Path | None, typer.Option(
        "--classes", help="classes.txt: class names (and thing flags) in index order (default: predict's json beside "
                          "the labels, else 'object').")] = None,
    pixel_size: PixelSizeOpt = None,
    out: Annotated[Path, typer.Option("--out", help="The table: a .csv, a .parquet (needs pyarrow), or - for CSV on "
                                      "stdout.")] = Path("objects.csv"),
    recursive: RecursiveOpt = False,
    device: CpuDeviceOpt = "auto",
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Measure the objects of existing label images: one row per object (shape, per-channel intensities), no model."""
    _setup(debug, quiet, device)
    from segcli.services.measure_objects import MeasureConfig, measure_objects

    to_stdout = str(out) == "-"
    config = MeasureConfig(labels=labels, images=images, kind=kind.value, classes=classes, pixel_size=pixel_size,
                           out=None if to_stdout else out, recursive=recursive)
    summary = measure_objects(config, callback=_measure_progress)
    if to_stdout:
        from segcli.regions import write_csv_stream

        write_csv_stream(sys.stdout, summary.rows)
    _say(f"{len(summary.rows)} objects in {summary.measured} label images -> {out}"
         + (f"; {len(summary.failed)} failed" if summary.failed else ""))
    if summary.failed:
        raise typer.Exit(1)


def _measure_progress(event: str, record: dict) -> None:
    if not record["ok"]:  # shown even with --quiet: it decides the exit code
        err_console.print(f"[bold red]failed:[/] {escape(record['error'])}", highlight=False, soft_wrap=True)


ExportFormat = _choices("ExportFormat", "onnx")


@app.command("report")
def report_command(
    run: Annotated[Path, typer.Argument(help="A training run folder (the --out of segcli train).")],
    out: Annotated[Path | None, typer.Option("--out", help="Report folder (default RUN/report).")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Where the run's data is now, if it moved.")] = None,
    worst: Annotated[int, typer.Option("--worst", help="How many of the worst validation images to draw.")] = 8,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """report.html of a training run: curves, plan, card, the best checkpoint's evaluation, sample predictions."""
    _setup(debug, quiet, device)
    from segcli.services.run_report import report_run

    result = report_run(run=run, out=out, data=data, worst=worst, device=device)
    if result.note:
        _say(f"[yellow]no final evaluation: {result.note}[/]")
    _say(f"report: {result.path}")


@app.command("export")
def export_command(
    weights: Annotated[Path, typer.Option(
        "--weights", help="A segcli checkpoint (NAME.safetensors beside NAME.json).")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="Export format; onnx is the only one so far.")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="File to write (default: the weights path with .onnx).")] = None,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset version.")] = 17,
    size: Annotated[int, typer.Option(
        "--size", help="Example input side in pixels for tracing (a multiple of 32).")] = 256,
    device: CpuDeviceOpt = "auto",
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Export a dense (semantic or panoptic) checkpoint to ONNX, its card in the file's metadata; traced on the CPU."""
    _setup(debug, quiet, device)
    from segcli.services.export import export_onnx

    path = export_onnx(weights, out=out, opset=opset, size=size)
    _say(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = sys.argv[1:] if argv is None else argv
    try:
        app(args=args, prog_name="segcli")
    except KeyboardInterrupt:  # before or after a command ran (the group handles it during one)
        err_console.print("interrupted")
        sys.exit(130)


__all__ = ["app", "main", "Path"]
