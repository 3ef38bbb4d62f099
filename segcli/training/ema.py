"""An exponential moving average of the weights (`train --ema DECAY`): the model that is validated, saved and shipped.

Torch's `AveragedModel` holds the copy and averages parameters and buffers (BatchNorm's running statistics too);
the decay warms up as timm's and TensorFlow's EMA do, min(decay, (1 + n) / (10 + n)) after n updates, so that the
first validations do not see an average dominated by the random initial weights.
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel


def warmed_decay(decay: float, updates: int) -> float:
    """The decay of update number `updates` (0-based): (1 + n) / (10 + n) until that reaches `decay`."""
    return min(decay, (1 + updates) / (10 + updates))


def ema_model(model: torch.nn.Module, decay: float) -> AveragedModel:
    """A copy of `model` that `update_parameters(model)` moves towards `model` by 1 - warmed_decay of each update."""
    if not 0.0 < decay < 1.0:
        raise ValueError(f"EMA decay {decay}: give a value between 0 and 1, e.g. 0.999")

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        if not averaged[0].is_floating_point():  # integer buffers (BatchNorm's batch count): the model's own
            torch._foreach_copy_(averaged, current)
            return
        torch._foreach_lerp_(averaged, current, 1.0 - warmed_decay(decay, int(updates)))

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)
