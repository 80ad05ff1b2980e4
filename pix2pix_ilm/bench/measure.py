"""What the bench measures: the machine's fp32 peak, and one row (a speed setting × a norm pair) in the
process that runs it: the training step's time, memory and convolution FLOPs, and the inference forward."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.device import resolve_device

if TYPE_CHECKING:
    from torch.utils.benchmark import Measurement


def timed(fn: Callable[[], Any], min_time: float) -> Measurement:
    """Calls of ``fn`` for at least ``min_time`` seconds in blocks (``torch.utils.benchmark``'s
    ``blocked_autorange``: its first, calibrating call is not timed), with all of torch's threads (Timer's
    default is one); the Measurement holds the seconds per call of every block, their median and IQR."""
    # Importing torch.utils.benchmark loads cpp_extension, which warns on a CUDA build without a GPU: noise here.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils.benchmark import Timer

    timer = Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_time)


def peak_gflops(device: torch.device, min_time: float = 1.0) -> dict[str, float]:
    """The fp32 peak: the better of MKL's / cuBLAS's large square matrix product and oneDNN's / cuDNN's large
    1×1 convolution (1024→1024 at 32×32), each at its fastest block; neither alone is the peak everywhere."""
    size, batch = (2048, 1) if device.type == "cpu" else (8192, 32)
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    x = torch.randn(batch, 1024, 32, 32, device=device)
    w = torch.randn(1024, 1024, 1, 1, device=device)
    mm = 2 * size**3 / min(timed(lambda: torch.mm(a, b), min_time).times) / 1e9
    conv = 2 * 1024 * 1024 * 32 * 32 * batch / min(timed(lambda: F.conv2d(x, w), min_time).times) / 1e9
    return {
        "gflops": max(mm, conv),
        "mm_gflops": mm,
        "conv1x1_gflops": conv,
        "mm_size": size,
        "conv_batch": batch,
    }


def conv_flop(fn: Callable[[], Any]) -> int:
    """FLOPs of the convolutions (forward and backward) in one call of ``fn``, by torch's FlopCounterMode
    (its convolution formulas: 2 × output positions × weights per output, for each of the input and weight
    gradients again; bias ignored)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return sum(n for op, n in counter.get_flop_counts().get("Global", {}).items() if "conv" in str(op))


def _proc_status_mib(field: str) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return None


def _memory_start(device: torch.device) -> float | None:
    """Memory in use now (MiB), with the peak counter reset: CUDA's allocator, else the process's RSS."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # Linux: the RSS high-water mark restarts from now
    return _proc_status_mib("VmRSS")


def _memory_growth(device: torch.device, start: float | None) -> float | None:
    """How far the peak rose above ``start`` (MiB); None where the system does not tell (no /proc)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20 - start
    peak = _proc_status_mib("VmHWM")
    return None if peak is None or start is None else peak - start


def _host_syncs(fn: Callable[[], Any], device: torch.device) -> int | None:
    """How often one call of ``fn`` makes the host wait for the GPU (torch's sync debug mode); None off CUDA."""
    if device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def _kernel_seconds(fn: Callable[[], Any], device: torch.device, calls: int = 10) -> float | None:
    """The GPU's kernel time per call of ``fn`` by ``torch.profiler`` (CUPTI's kernel records, inside CUDA
    graphs too); None off CUDA."""
    if device.type != "cuda":
        return None
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize(device)
    kernel_us = sum(e.self_device_time_total for e in prof.events() if e.device_type == DeviceType.CUDA)
    return kernel_us / 1e6 / calls


def measure_row(
    config: TrainConfig, warmup: int, min_time: float, start: Any = None, streams: int = 1
) -> dict[str, Any]:
    """One row, meant for a fresh process: ``warmup`` untimed steps of the training step as ``train`` runs it
    (captured as a CUDA graph where ``config.cuda_graph`` says so), timed steps, the step memory, one step's
    convolution FLOPs, the GPU's kernel time per step, and timed inference forwards (``test``'s). The batch
    lies on the device, as ``--data-on-device`` keeps it. ``start``: a barrier all runs measured at once
    pass after their warm-up, so that their timed steps overlap. ``streams`` > 1: that many runs in this
    process (seeds ``config.seed`` + 0, 1, ...), each step of each captured and replayed on a CUDA stream of
    its own, one step of every run per timed call."""
    from pix2pix_ilm.heap import retain_freed_memory
    from pix2pix_ilm.models.pix2pix import Pix2PixModel
    from pix2pix_ilm.training.cuda_graph import WARMUP_STEPS, TrainingStep, resolve_cuda_graph
    from pix2pix_ilm.training.inference import translate

    device = resolve_device(config.device)
    if device.type == "cpu":
        retain_freed_memory()  # as the command line's train and test do
    torch.manual_seed(config.seed)
    captured = resolve_cuda_graph(config, device, 1) == "on"
    eager = dataclasses.replace(config, compile=False)
    # Counted eagerly in a model of its own: compiled code and graph replays do not pass their convolutions
    # through the dispatcher one by one.
    shape = (config.batch_size, config.input_nc, config.crop_size, config.crop_size)
    generator = torch.Generator().manual_seed(config.seed)
    real_a, real_b = ((torch.rand(shape, generator=generator) * 2 - 1).to(device) for _ in range(2))
    flop = conv_flop(lambda: Pix2PixModel(eager, device).optimize_parameters(real_a, real_b))
    steps = []
    for offset in range(streams):
        torch.manual_seed(config.seed + offset)
        steps.append(TrainingStep(Pix2PixModel(config, device), captured))
    model = steps[0].model
    step = steps[0] if streams == 1 else _on_streams(steps)
    memory = _memory_start(device)
    for _ in range(max(warmup, WARMUP_STEPS + 1) if captured else warmup):
        step(real_a, real_b)
    if start is not None:
        start.wait()
    timed_steps = timed(lambda: step(real_a, real_b), min_time)
    memory = _memory_growth(device, memory)
    infer = timed(lambda: translate(model.generator, real_a, config), min_time)
    kernel_s = _kernel_seconds(lambda: step(real_a, real_b), device)
    per_run = (
        {}
        if streams == 1
        else {
            "run_step_s": [timed_steps.median] * streams,  # each run takes one step per call
            "run_kernel_s": [None if kernel_s is None else kernel_s / streams] * streams,
        }
    )
    return per_run | {
        "step_s": timed_steps.median,
        "step_iqr_s": timed_steps.iqr,
        "step_times_s": timed_steps.times,
        "memory_mib": memory,
        "conv_gflop": flop / 1e9,
        "host_syncs_per_step": _host_syncs(lambda: step(real_a, real_b), device),
        "kernel_s": kernel_s,
        "infer_s": infer.median,
        "infer_iqr_s": infer.iqr,
    }


def _on_streams(steps: list[Any]) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One step of every run, each queued on a CUDA stream of its own: the GPU may run their kernels at once."""
    streams = [torch.cuda.Stream() for _ in steps]

    def step_all(real_a: torch.Tensor, real_b: torch.Tensor) -> None:
        main = torch.cuda.current_stream()
        for step, stream in zip(steps, streams, strict=True):
            stream.wait_stream(main)
            with torch.cuda.stream(stream):
                step(real_a, real_b)
        for stream in streams:
            main.wait_stream(stream)

    return step_all
