"""What a measurement reads: timing with CPU-contention retries, peak memory, and the machine."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pix2pix_ilm import __version__

#: cpu_wait above this marks a figure as taken while other processes competed for the CPU
CONTENDED = 0.05


def _proc_status_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class MemoryProbe:
    """Peak memory from now on: RSS high-water mark on CPU (reset if Linux allows), allocator peak on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.rss_reset = True
        except OSError:
            self.rss_reset = False
        self.rss_start_mib = _proc_status_mib("VmRSS")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def report(self) -> dict[str, Any]:
        peak = _proc_status_mib("VmHWM")
        if peak is None:  # no /proc: ru_maxrss is KiB on Linux, bytes on macOS
            import resource  # not on Windows

            scale = 1024 * 1024 if sys.platform == "darwin" else 1024
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
        out = {
            "peak_rss_mib": round(peak, 1),
            "rss_start_mib": None if self.rss_start_mib is None else round(self.rss_start_mib, 1),
            "peak_rss_since_start": self.rss_reset,
        }
        if self.device.type == "cuda":
            out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        return out


def runqueue_wait_s() -> float | None:
    """Seconds this process's threads have spent runnable but waiting for a CPU (Linux schedstat), or None.

    On a shared machine this is the contention signal: a step that waited for the CPU was slowed down by
    other processes, not by its own code.
    """
    total = 0
    try:
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
                total += int(Path(f"/proc/self/task/{task}/schedstat").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return total / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def host_syncs(run: Callable[[], Any], device: torch.device) -> int | None:
    """How often one call of ``run`` makes the host wait for the GPU, by torch's sync debug mode (it flags
    every synchronising CUDA call: ``.item()``, blocking copies, ``nonzero``, ...); None off CUDA."""
    if device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def wait_share(waited_before: float | None, elapsed_s: float) -> float | None:
    """Share of ``elapsed_s`` (wall time since ``waited_before`` was read) that the threads waited for a CPU."""
    waited_after = runqueue_wait_s()
    if waited_before is None or waited_after is None or elapsed_s <= 0:
        return None
    return round((waited_after - waited_before) / (elapsed_s * torch.get_num_threads()), 4)


def summarize(rates: list[float]) -> dict:
    return {
        "median": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "repeats": [round(r, 4) for r in rates],
    }


MATMUL_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def largest_matmul(device: torch.device) -> int:
    """The square size of the rate's matrix product: 2048 on CPU, 8192 on a GPU."""
    return 2048 if device.type == "cpu" else 8192


def matmul_rates(
    device: torch.device, budget_s: float = 0.05, dtypes: tuple[str, ...] = tuple(MATMUL_DTYPES)
) -> dict[str, float]:
    """GFLOP/s of one square matrix product per dtype on ``device``: what the hardware gives each precision
    (the fastest of 7 products at the final size: a peak, which other processes can only lower).

    The size grows from 256 until one product takes ``budget_s`` (at most 2048 on CPU, 8192 on GPU), so a
    dtype without hardware support (bf16 at 0.1 GFLOP/s on some CPUs) costs a second, not minutes."""
    largest = largest_matmul(device)
    rates = {}
    for name in dtypes:
        dtype = MATMUL_DTYPES[name]
        size = 256
        while True:
            a = torch.randn(size, size, device=device).to(dtype)
            b = torch.randn(size, size, device=device).to(dtype)
            times = []
            for _ in range(4):
                sync(device)
                start = time.perf_counter()
                torch.mm(a, b)
                sync(device)
                times.append(time.perf_counter() - start)
            if statistics.median(times[1:]) >= budget_s or size >= largest:
                break
            size *= 2
        for _ in range(4):  # at the final size: the best of 7 products is the rate the hardware can give
            sync(device)
            start = time.perf_counter()
            torch.mm(a, b)
            sync(device)
            times.append(time.perf_counter() - start)
        rates[name] = round(2 * size**3 / min(times[1:]) / 1e9, 1)
    return rates


def memory_bandwidth(device: torch.device, mib: int = 256) -> float:
    """GB/s of one large fp32 copy on ``device`` (bytes read + written ÷ time, median of 3 after a warm-up):
    the rate that bounds memory-bound work such as Adam, norms and elementwise ops."""
    source = torch.ones(mib * 2**20 // 4, device=device)
    target = torch.empty_like(source)
    times = []
    for _ in range(4):
        sync(device)
        start = time.perf_counter()
        target.copy_(source)
        sync(device)
        times.append(time.perf_counter() - start)
    return round(2 * source.numel() * 4 / statistics.median(times[1:]) / 1e9, 1)


def machine_info(
    device: torch.device, matmul: bool = True, dtypes: tuple[str, ...] = tuple(MATMUL_DTYPES)
) -> dict:
    """The machine, versions and (unless ``matmul`` is False) the matrix-product rates of ``device`` in
    ``dtypes``."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "pix2pix_ilm": __version__,
        "commit": _git_commit(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "matmul_gflops": matmul_rates(device, dtypes=dtypes) if matmul else None,
        "copy_gbps": memory_bandwidth(device) if matmul else None,
    }
    with contextlib.suppress(OSError):
        info["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None
