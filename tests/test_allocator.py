"""``retain_freed_memory``: a big tensor freed and allocated again is not page-faulted in again (once the
heap has settled)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from pix2pix_ilm.allocator import RETAIN_MEMORY_ENV

PROBE = """
import json, resource, torch
from pix2pix_ilm.allocator import retain_freed_memory
applied = retain_freed_memory()
def faults_of_one_allocation():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(64 * 2**20 // 4).fill_(1.0)  # 64 MiB, above glibc's largest mmap threshold (32 MiB)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults = [faults_of_one_allocation() for _ in range(16)]
# glibc's heap settles after a few rounds (aligned blocks do not fit the hole the last one left at first)
print(json.dumps({"applied": applied, "faults": sum(faults[-4:])}))
"""


def _probe(**env: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the setting is glibc's mallopt"
)
def test_retained_memory_is_reused_without_page_faults():
    retained = _probe()
    default = _probe(**{RETAIN_MEMORY_ENV: "0"})
    assert retained["applied"] is True and default["applied"] is False
    # glibc maps fresh pages for every such allocation: 4 x 16384 faults of 4 KiB (4 x 32 with huge pages)
    assert default["faults"] >= 4 * 32
    assert retained["faults"] * 10 < default["faults"]  # the freed block is reused as it is
