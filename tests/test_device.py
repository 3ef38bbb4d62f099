"""The process set-up every command shares (segcli.device): freed memory kept for reuse."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from segcli.device import _libc_version

# A fresh process, so the allocator starts as glibc's default: count the page faults of a 16 MB tensor made and
# freed three times, before and after reuse_freed_memory (resolve_device calls it, as every command does).
_FAULTS = """
import json, resource, torch
from segcli.device import resolve_device

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        torch.ones(16 << 20, dtype=torch.uint8)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults()
default = faults()
resolve_device("cpu")
faults()
print(json.dumps({"default": default, "reused": faults()}))
"""


@pytest.mark.skipif(not _libc_version().startswith("glibc"), reason="mallopt is glibc's; elsewhere nothing changes")
def test_a_command_reuses_large_freed_blocks_instead_of_faulting_them_in_again():
    out = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, check=True).stdout
    counts = json.loads(out.strip().splitlines()[-1])
    pages = 3 * (16 << 20) // 4096
    # glibc's default maps every block this large afresh: each use faults in all its pages again.
    assert counts["default"] > pages // 2, counts
    assert counts["reused"] < pages // 20, counts
