"""What the speed benchmarks share: interleaved timing, the convolution ceiling, checks that print as PASS/FAIL.

The machine these run on may be shared: every figure that decides a target is a ratio to a reference
measured in the same run, and candidates and references are timed in turns (a, b, a, b, ...) so a
burst of someone else's work slows both, and the median of several rounds is reported.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

CEILING_SHAPES = ((64, 128), (128, 64))  # (channels, side): 3x3 convolutions oneDNN runs near its best here


def interleaved(functions: dict[str, Callable[[], object]], rounds: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each function, timed in turns over `rounds` rounds after `warmup` untimed ones."""
    for _ in range(warmup):
        for function in functions.values():
            function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def interleaved_cpu(functions: dict[str, Callable[[], object]],
                    rounds: int = 5) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall and CPU seconds (the process's, all its threads) of each function, timed in turns after one
    untimed round. On a shared machine the wall time swings with everyone else's load; the work a change adds
    shows in the CPU time."""
    for function in functions.values():
        function()
    wall: dict[str, list[float]] = {name: [] for name in functions}
    cpu: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            began, began_cpu = time.perf_counter(), time.process_time()
            function()
            wall[name].append(time.perf_counter() - began)
            cpu[name].append(time.process_time() - began_cpu)
    return ({name: statistics.median(v) for name, v in wall.items()},
            {name: statistics.median(v) for name, v in cpu.items()})


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def autocast(dtype: torch.dtype):
    return torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32)


# Passes per timed call: one pass takes about 12 ms in float32 here, and a median of five such short calls swung
# from 171 to 216 GFLOP/s between full runs; every fraction of the ceiling swings with it.
CEILING_REPEATS = 4


def conv_ceiling(dtype: torch.dtype, backward: bool = False) -> tuple[Callable[[], object], float]:
    """(function, GFLOP per call) of the ceiling: 3x3 convolutions, channels-last, batch 1, in `dtype`
    (with `backward`, forward plus the backward of input and weight, as a training step does), CEILING_REPEATS times."""
    torch.manual_seed(0)
    layers = []
    flops = 0.0
    for channels, side in CEILING_SHAPES:
        conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
        x = channels_last(torch.randn(1, channels, side, side))
        if not backward:  # inference at its best: weights and input already in dtype, no cast per call
            conv, x = conv.to(dtype), x.to(dtype)
        layers.append((conv, x.requires_grad_(backward)))
        flops += 2 * channels * channels * 9 * side * side * (3 if backward else 1) * CEILING_REPEATS

    def run() -> None:
        for conv, x in layers * CEILING_REPEATS:
            if backward:
                with autocast(dtype):
                    y = conv(x)
                y.sum().backward()
            else:
                with torch.inference_mode(), autocast(dtype):
                    conv(x)

    return run, flops / 1e9


def check(name: str, measured: str, target: str, met: bool) -> dict:
    """One line of `make bench`'s table."""
    return {"name": name, "measured": measured, "target": target, "met": bool(met),
            "verdict": "PASS" if met else "FAIL"}
