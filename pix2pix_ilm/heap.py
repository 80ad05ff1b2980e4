"""Keep freed memory in the process (glibc ``mallopt``), so big buffers are not page-faulted in at every step.

glibc serves allocations above its mmap threshold (at most 32 MiB) with fresh ``mmap`` pages and unmaps them at
``free``; a ``unet_256`` step allocates such buffers many times (one weight gradient is 32 MiB), so every step
would pay one page fault per 4 KiB again. The setting changes the whole process, so the library never calls
it: the command line opts in on CPU (unless ``PIX2PIX_ILM_RETAIN_MEMORY=0``), a Python caller chooses.
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
