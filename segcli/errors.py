"""The one exception family that crosses from the package into the CLI.

Anything raised as a `SegcliError` is a user error: the CLI prints its message on one
line and exits with `exit_code`. Any other exception is a bug and shows a traceback.
"""

from __future__ import annotations


class SegcliError(Exception):
    """A problem the user can fix; the message says what to do."""

    exit_code = 2


class UsageError(SegcliError):
    """A bad option or a bad combination of options."""


class DataError(SegcliError):
    """A dataset, image or label file that cannot be read or cannot be right."""


class ModelError(SegcliError):
    """An unknown model, a model that cannot do the requested mode, missing weights."""


class InputError(SegcliError):
    """One input of a batch failed; the batch goes on (exit code 1 at the end)."""

    exit_code = 1


def check_minimums(*bounds: tuple[str, float | None, float], above: bool = False) -> None:
    """Refuse the first `(option, value, smallest)` whose value is given and below `smallest` (with `above`: not
    above it), as one line naming the option: such a number would crash deep inside or be silently ignored."""
    for option, value, smallest in bounds:
        if value is not None and (value <= smallest if above else value < smallest):
            requirement = f"must be above {smallest}" if above else f"use {smallest} or more"
            raise UsageError(f"{option} {value}: {requirement}")
