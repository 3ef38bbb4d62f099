"""The command line: parse options, call one service function, render with rich.

Every command takes --device, --quiet and --debug. A `SegcliError` raised anywhere
below becomes one red line on stderr and its exit code (2 for usage/config errors);
any other exception is a bug and shows its traceback.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from segcli import __version__
from segcli.errors import SegcliError

err_console = Console(stderr=True)


@dataclass
class RunState:
    debug: bool = False
    quiet: bool = False
    device: str = "auto"


STATE = RunState()


class SegcliGroup(TyperGroup):
    """Turns SegcliError into one clear line and an exit code, in one place."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except SegcliError as error:
            if STATE.debug:
                raise
            err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=SegcliGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="Semantic, instance and panoptic image segmentation. Run `segcli COMMAND --help` for each command.",
)
data_app = typer.Typer(cls=SegcliGroup, no_args_is_help=True, help="Datasets: generate synthetic data, convert formats.")
app.add_typer(data_app, name="data")


class Mode(str, Enum):
    semantic = "semantic"
    instance = "instance"
    panoptic = "panoptic"


DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA if present, else CPU), cpu, cuda[:N] or mps.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or messages on stderr.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")]


def _setup(debug: bool = False, quiet: bool = False, device: str = "auto") -> RunState:
    STATE.debug, STATE.quiet, STATE.device = debug, quiet, device
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
    info: Annotated[str | None, typer.Option("--info", help="Details of one model: parameters, GFLOPs, receptive field.")] = None,
    size: Annotated[int, typer.Option("--size", help="Input size in pixels for --info's GFLOPs.")] = 512,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """List the model zoo, or describe one model with --info."""
    _setup(debug, quiet, device)
    from segcli.models.registry import list_models

    if info is not None:
        from segcli.models.facts import model_facts

        facts = model_facts(info, size=size)
        table = Table(title=f"{info}", show_header=False)
        for key, value in facts.items():
            table.add_row(key, str(value))
        Console().print(table)
        return
    table = Table(title="segcli model zoo")
    for column in ("name", "modes", "description"):
        table.add_column(column)
    for entry in list_models(mode.value if mode else None):
        table.add_row(entry.name, ",".join(entry.modes), entry.description)
    Console().print(table)


class SynthKind(str, Enum):
    shapes = "shapes"
    context = "context"


@data_app.command("synth")
def synth_command(
    kind: Annotated[SynthKind, typer.Option("--kind", help="shapes: stuff + circles/squares/triangles; context: cow vs goat.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the dataset to.")],
    n: Annotated[int, typer.Option("--n", help="Number of images.")] = 64,
    size: Annotated[int, typer.Option("--size", help="Image side in pixels.")] = 128,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same files.")] = 0,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of images in the val split.")] = 0.25,
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty folder that is not a synthetic dataset.")] = False,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Generate a synthetic dataset with semantic, instance (COCO) and panoptic (COCO) ground truth."""
    _setup(debug, quiet, device)
    from segcli.data.synth import generate, synth_label_space

    path = generate(kind.value, out, n=n, size=size, seed=seed, val_fraction=val_fraction, force=force)
    names = ", ".join(synth_label_space(kind.value).names)
    _say(f"wrote {n} {kind.value} images of {size}x{size} px to {path}/ (classes: {names})")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = sys.argv[1:] if argv is None else argv
    try:
        app(args=args, prog_name="segcli")
    except KeyboardInterrupt:
        sys.exit(130)


__all__ = ["app", "main", "Path"]
