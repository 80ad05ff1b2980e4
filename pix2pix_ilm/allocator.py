"""Keep freed memory inside the process (glibc) so that big tensors are not page-faulted in at every step.

glibc serves allocations above its mmap threshold (at most 32 MiB) with fresh ``mmap`` pages and unmaps them
at ``free``; a pix2pix step allocates such buffers many times (a ``unet_256`` weight gradient is 32 MiB, and
oneDNN's weight copies as much again), so every step pays one page fault per 4 KiB again. Serving them from
the heap and never trimming it keeps the memory mapped: on the 2-core benchmark machine the ``unet_256``
training step went from 0.63 s to 0.53 s with torch's own convolutions (``bench`` measures it as the
``system_malloc`` path). The heap settles after a few steps of a fixed workload (its peak RSS is in the
benchmark's report next to the default's); the process keeps its peak memory until it exits.
Set ``PIX2PIX_ILM_RETAIN_MEMORY=0`` to keep glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

RETAIN_MEMORY_ENV = "PIX2PIX_ILM_RETAIN_MEMORY"
_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
_applied = False


def retain_freed_memory() -> bool:
    """Serve big allocations from the heap and never trim it (glibc only); True if the setting is in effect."""
    global _applied
    if _applied:
        return True
    if os.environ.get(RETAIN_MEMORY_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _applied
