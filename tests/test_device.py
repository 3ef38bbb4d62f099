"""The process set-up every command shares (segcli.device): freed memory kept for reuse."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

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
