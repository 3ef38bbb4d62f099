"""Shared by the training tests: stop a run at its Nth checkpoint (as a kill would), compare two runs' weights."""

from __future__ import annotations

import torch
from safetensors.torch import load_file


class Interrupted(Exception):
    pass


def interrupt_at_checkpoint(number: int):
    """A train() callback that raises Interrupted once the run has written its `number`-th checkpoint."""
    seen = []

    def callback(event, **info):
        if event == "checkpoint":
            seen.append(info["step"])
            if len(seen) == number:
                raise Interrupted

    return callback


def assert_same_weights(a_path, b_path) -> None:
    a, b = load_file(str(a_path)), load_file(str(b_path))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
