"""Latency and peak memory of a model's forward pass, measured the same way for every model.

Latency: median wall time of repeated batch-1 forward passes after warm-up, in inference mode.
Peak memory: on CUDA, the allocator's peak; on the CPU (Linux), the resident-set high-water mark
during one forward pass minus the resident set just before it, after freed memory has been handed
back to the system (malloc_trim), so one size's freed memory does not hide the next size's growth.
(A forked child would isolate it better, but fork after OpenMP threads exist can deadlock.)
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import statistics
import time
from pathlib import Path

import torch
from torch import nn


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _input(size: int, in_channels: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(1, in_channels, size, size, generator=generator).to(device)


def latency_ms(
    model: nn.Module,
    size: int,
    device: torch.device,
    repeats: int = 5,
    warmup: int = 1,
    in_channels: int = 3,
    max_seconds: float = 30.0,
) -> float:
    """Median milliseconds of one batch-1 forward pass at size x size.

    Stops repeating early once `max_seconds` have been spent (a naive sliding window at 1024 px
    would otherwise take hours), but always measures at least once after warm-up.
    """
    model.eval().to(device)
    x = _input(size, in_channels, device)
    times: list[float] = []
    spent = 0.0
    with torch.inference_mode():
        for i in range(warmup + repeats):
            _sync(device)
            start = time.perf_counter()
            model(x)
            _sync(device)
            elapsed = time.perf_counter() - start
            spent += elapsed
            if i >= warmup:
                times.append(elapsed)
            if spent > max_seconds and times:
                break
            if i < warmup and elapsed > max_seconds:
                # One pass already costs more than the budget: that pass is the measurement.
                times.append(elapsed)
                break
    return 1000.0 * statistics.median(times)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def _release_free_memory() -> None:
    """Hand memory that glibc keeps after frees back to the system, so RSS starts from what is in use."""
    gc.collect()
    # Without glibc there is nothing to trim: RSS may start a little high, the peak stays right.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_memory_mb(model: nn.Module, size: int, device: torch.device, in_channels: int = 3) -> float | None:
    """Extra memory in MB that one batch-1 forward pass at size x size needs (None where unmeasurable)."""
    model.eval().to(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        with torch.inference_mode():
            model(_input(size, in_channels, device))
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    if device.type != "cpu" or not Path("/proc/self/clear_refs").exists():
        return None
    x = _input(size, in_channels, device)
    with torch.inference_mode():
        model(_input(32, in_channels, device))  # thread pools and allocator set-up are not the image's cost
        _release_free_memory()
        # Writing 5 to clear_refs resets the high-water mark (VmHWM) to the current RSS.
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kib("VmRSS")
        model(x)
        peak = _status_kib("VmHWM")
    return (peak - before) / 1024.0
