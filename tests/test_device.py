"""The process set-up every command shares: freed memory kept for reuse (segcli.device), OpenMP workers that stop
spinning soon (segcli/__init__.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segcli.device import _libc_version

# A fresh process, so the allocator starts as glibc's default. 40 MB blocks lie above the 32 MB to which glibc's own
# mmap threshold can adapt, so by default every one is mapped afresh and faults all its pages in again. After
# resolve_device (which every command calls) they come from the heap: once it has grown to hold them (a round or two),
# a round of four allocations faults in almost nothing.
_FAULTS = """
import json, resource, torch
from segcli.device import resolve_device

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        torch.ones(40 << 20, dtype=torch.uint8)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults()
default = faults()
resolve_device("cpu")
print(json.dumps({"default": default, "reused": min(faults() for _ in range(4))}))
"""


@pytest.mark.skipif(not _libc_version().startswith("glibc"), reason="mallopt is glibc's; elsewhere nothing changes")
def test_a_command_reuses_large_freed_blocks_instead_of_faulting_them_in_again():
    out = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, check=True).stdout
    counts = json.loads(out.strip().splitlines()[-1])
    pages = 4 * (40 << 20) // 4096
    assert counts["default"] > pages // 2, counts  # glibc's default: every block mapped and faulted in again
    assert counts["reused"] < pages // 20, counts


# A fresh process: after a parallel region the main thread sleeps 50 ms; the CPU time spent meanwhile is the OpenMP
# workers spinning before they sleep (median of nine rounds).
_SPIN = """
import json, os, statistics, sys, time
if sys.argv[1] == "segcli":
    import segcli  # before torch, as the CLI does
import torch

x = torch.randn(256, 256, 64)

def cpu_while_sleeping():
    x.exp()
    start = time.process_time()
    time.sleep(0.05)
    return time.process_time() - start

for _ in range(3):
    cpu_while_sleeping()
print(json.dumps({"ms": 1e3 * statistics.median(cpu_while_sleeping() for _ in range(9)),
                  "spincount": os.environ.get("GOMP_SPINCOUNT")}))
"""


def _spin(first: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"} | env
    out = subprocess.run([sys.executable, "-c", _SPIN, first],
                         capture_output=True, text=True, check=True, env=clean).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not any(Path(torch.__file__).parent.glob("lib/libgomp*")), reason="this torch does not use libgomp")
def test_openmp_workers_stop_spinning_soon_after_segcli_is_imported_and_a_users_spincount_is_kept():
    default, ours = _spin("torch"), _spin("segcli")
    assert ours["spincount"] == "20000" and default["spincount"] is None
    assert ours["ms"] < 2.0 and default["ms"] > 2 * ours["ms"], (default, ours)  # libgomp's default: 5-11 ms here
    assert _spin("segcli", GOMP_SPINCOUNT="300000")["spincount"] == "300000"
