"""``pix2pix-ilm bench``: this project's training step and ``test`` path against a plain eager baseline.

What is measured, side by side in one run on one machine:

* **Training step, baseline** (:func:`baseline_train_step`): the textbook pix2pix step, written as plainly
  as junyanz's ``pix2pix_model.py`` (``optimize_parameters``, ``backward_D``, ``backward_G``): G(A); D step
  with D called twice, on (A, fake.detach()) and on (A, B), loss ½(fake + real); G step with D frozen by
  ``requires_grad_(False)`` (junyanz's ``set_requires_grad``, which is part of the reference step, not an
  optimisation of this project), loss GAN(D(A, fake), real) + 100·L1. Vanilla GAN loss (BCE with logits),
  Adam lr 2e-4, β = (0.5, 0.999). It uses :func:`~pix2pix_ilm.networks.networks_from_config`, so the
  architecture and initial weights are exactly the project's; the step itself is its own code.
* **Training step, this project** (:meth:`~pix2pix_ilm.model.Pix2PixModel.train_step`) with its defaults and
  with each fast path: a path is ``default`` or features joined by ``+`` (:data:`PATH_FEATURES`: channels
  last, bf16 autocast, ``torch.compile``) plus an optional ``threads=N`` (``torch.set_num_threads``).
  The :data:`ABLATIONS` ``native_conv`` and ``system_malloc`` are the default path less one of its CPU
  settings (the matrix-product route of ``layers.py``, the retained heap of ``allocator.py``).
* **Inference** (``test``): the real :func:`~pix2pix_ilm.test.run_test` on synthetic aligned JPEGs against
  :func:`baseline_test` (PIL decode, to tensor, G in eval mode, to uint8, PNG, one image at a time). Both
  load the same checkpoint and write real_A, fake_B and real_B PNGs, as junyanz's ``test.py`` does.

Every measurement runs in its own subprocess (``python -m pix2pix_ilm bench --worker JOB``), so peak memory
is per path: the peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs`` before the networks are built)
on CPU, ``torch.cuda.max_memory_allocated`` on CUDA. Warm-up steps are excluded; each repeat times ``--iters``
steps; the report gives the median over repeats with min and max. The ILM cost is
time(ILM+X / ILM+X) ÷ time(X / X) for the same path, i.e. it/s of the plain norms ÷ it/s of the ILM norms.
Each result also records ``cpu_wait``, the share of the timed wall time its threads spent runnable but
waiting for a CPU (Linux schedstat): a repeat above 5 % was disturbed by other processes and is made again
(``--retries`` times at most); a figure that still includes such a repeat is marked * in the table.

The output is a readable table followed by one line of JSON with every figure (the last line).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from pix2pix_ilm import __version__
from pix2pix_ilm.allocator import RETAIN_MEMORY_ENV, retain_freed_memory
from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.layers import set_small_input_matmul
from pix2pix_ilm.networks import networks_from_config, unet_depth
from pix2pix_ilm.norms import NORM_NAMES

# ----------------------------------------------------------------------------------------------------
# Paths and norms
# ----------------------------------------------------------------------------------------------------

BASELINE = "baseline"
#: Fast-path features → the TrainConfig fields they set. A path is "default" or features joined by "+",
#: optionally with a "threads=N" part, e.g. "bf16+channels_last" or "compile+threads=1".
PATH_FEATURES: dict[str, dict[str, Any]] = {
    "channels_last": {"channels_last": True},
    "bf16": {"precision": "bf16"},
    "compile": {"compile": True},
}
#: CPU ablations: the default path less one of its CPU settings, to show what each is worth.
#: native_conv: torch's convolution kernels everywhere (no matrix-product route, see layers.py);
#: system_malloc: glibc's default allocator settings (see allocator.py), set through the worker's environment.
ABLATIONS: dict[str, dict[str, Any]] = {"native_conv": {"native_conv": True}, "system_malloc": {}}
#: Paths measured when --paths is not given (those not applicable on the device are left out).
DEFAULT_PATHS = (
    "default",
    "native_conv",
    "system_malloc",
    "channels_last",
    "bf16",
    "bf16+channels_last",
    "compile",
    "compile+bf16",
    "threads=1",
)
NORM_ALIASES = {
    "in": "instance",
    "bn": "batch",
    "gn": "group",
    "ln": "layer",
    "ilm+in": "ilm_in",
    "ilm+gn": "ilm_gn",
    "ilm+ln": "ilm_ln",
}
NORM_LABELS = {v: k.upper() for k, v in NORM_ALIASES.items()}
ILM_BASE = {"ilm_in": "instance", "ilm_gn": "group", "ilm_ln": "layer"}
#: cpu_wait above this marks a figure as taken while other processes competed for the CPU
CONTENDED = 0.05


def parse_path(name: str) -> tuple[dict[str, Any], int | None]:
    """``"bf16+channels_last+threads=1"`` → (TrainConfig overrides, thread count or None)."""
    if name == "default":
        return {}, None
    overrides: dict[str, Any] = {}
    threads = None
    for part in name.split("+"):
        if part.startswith("threads="):
            value = part[len("threads=") :]
            if not value.isdigit() or int(value) < 1:
                raise UsageError(f"--paths: {part!r} needs a positive thread count, e.g. threads=1")
            threads = int(value)
        elif part in PATH_FEATURES or part in ABLATIONS:
            overrides.update(PATH_FEATURES.get(part) or ABLATIONS[part])
        else:
            valid = ", ".join(["default", *PATH_FEATURES, *ABLATIONS, "threads=N", "all"])
            raise UsageError(f"--paths: unknown path part {part!r} in {name!r}; valid parts: {valid}")
    return overrides, threads


def all_paths() -> list[str]:
    """Every combination of the fast-path features, the ablations, and the default path on one thread."""
    names = ["default"]
    features = list(PATH_FEATURES)
    for count in range(1, len(features) + 1):
        names += ["+".join(combo) for combo in itertools.combinations(features, count)]
    return [*names, *ABLATIONS, "threads=1"]


def path_unavailable(name: str, device: torch.device) -> str | None:
    """Why path ``name`` cannot run on ``device`` (None when it can)."""
    overrides, threads = parse_path(name)
    if device.type != "cpu" and any(part in ABLATIONS for part in name.split("+")):
        return "a CPU setting (the same as default on this device)"
    if overrides.get("precision") == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return "this GPU has no bf16"
        if device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return "this CPU has no native bf16 (avx512_bf16 / amx)"
    if overrides.get("compile"):
        if device.type == "cpu" and not any(shutil.which(cc) for cc in (os.environ.get("CXX", "g++"), "c++")):
            return "torch.compile on CPU needs a C++ compiler"
        if device.type == "cuda":
            try:
                import triton  # noqa: F401
            except ImportError:
                return "torch.compile on CUDA needs triton"
    if threads is not None:
        if device.type == "cuda":
            return "CPU thread settings are not a CUDA fast path"
        if threads == torch.get_num_threads():
            return f"torch already uses {threads} thread(s)"
    return None


def parse_norms(text: str) -> list[tuple[str, str]]:
    """``"IN/IN,ILM+IN/ILM+IN"`` → ``[("instance", "instance"), ("ilm_in", "ilm_in")]`` (a lone X is X/X)."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        names = item.split("/")
        if len(names) == 1:
            names = names * 2
        if len(names) != 2:
            raise UsageError(f"--norms: {item!r} is not a G/D pair such as IN/IN or ilm_in/instance")
        resolved = tuple(NORM_ALIASES.get(n.strip().lower(), n.strip().lower()) for n in names)
        for name in resolved:
            if name not in NORM_NAMES:
                valid = ", ".join([*NORM_NAMES, *(k.upper() for k in NORM_ALIASES)])
                raise UsageError(f"--norms: unknown norm {name!r}; valid: {valid}")
        pairs.append(resolved)
    if not pairs:
        raise UsageError("--norms: give at least one G/D pair, e.g. IN/IN")
    return pairs


def norm_key(pair: tuple[str, str] | list[str]) -> str:
    return f"{pair[0]}/{pair[1]}"


def norm_label(key: str) -> str:
    return "/".join(NORM_LABELS.get(n, n) for n in key.split("/"))


# ----------------------------------------------------------------------------------------------------
# The eager baseline (junyanz pix2pix_model.py, written out plainly)
# ----------------------------------------------------------------------------------------------------


class BaselinePix2Pix:
    """G, D and their Adam optimizers, as junyanz's ``Pix2PixModel.__init__`` sets them up."""

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        self.device = device
        self.generator, self.discriminator = networks_from_config(config)  # same architecture and init
        for net in (self.generator, self.discriminator):  # torch's own convolution kernels everywhere
            set_small_input_matmul(net, False)
        self.generator.to(device)
        self.discriminator.to(device)
        self.criterion_gan = nn.BCEWithLogitsLoss()
        self.criterion_l1 = nn.L1Loss()
        self.lambda_l1 = 100.0
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def gan_loss(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        target = torch.tensor(1.0 if target_is_real else 0.0, device=prediction.device).expand_as(prediction)
        return self.criterion_gan(prediction, target)


def baseline_train_step(nets: BaselinePix2Pix, real_a: torch.Tensor, real_b: torch.Tensor) -> dict:
    """One textbook pix2pix step (junyanz ``optimize_parameters``); returns the detached losses."""
    real_a, real_b = real_a.to(nets.device), real_b.to(nets.device)
    fake_b = nets.generator(real_a)

    # update D
    for p in nets.discriminator.parameters():
        p.requires_grad = True
    nets.opt_d.zero_grad()
    fake_ab = torch.cat((real_a, fake_b), 1)
    loss_d_fake = nets.gan_loss(nets.discriminator(fake_ab.detach()), False)
    real_ab = torch.cat((real_a, real_b), 1)
    loss_d_real = nets.gan_loss(nets.discriminator(real_ab), True)
    loss_d = (loss_d_fake + loss_d_real) * 0.5
    loss_d.backward()
    nets.opt_d.step()

    # update G (D requires no gradients when optimizing G)
    for p in nets.discriminator.parameters():
        p.requires_grad = False
    nets.opt_g.zero_grad()
    fake_ab = torch.cat((real_a, fake_b), 1)
    loss_g_gan = nets.gan_loss(nets.discriminator(fake_ab), True)
    loss_g_l1 = nets.criterion_l1(fake_b, real_b) * nets.lambda_l1
    loss_g = loss_g_gan + loss_g_l1
    loss_g.backward()
    nets.opt_g.step()
    losses = {"G_GAN": loss_g_gan, "G_L1": loss_g_l1, "D_real": loss_d_real, "D_fake": loss_d_fake}
    return {name: value.detach() for name, value in losses.items()}


def baseline_test(
    checkpoint: Path, config: TrainConfig, files: list[Path], out_dir: Path, device: torch.device
) -> None:
    """Plain inference: load G, then per image PIL decode → tensor → G (eval) → uint8 → PNG (3 per image)."""
    state = torch.load(checkpoint, map_location=device, weights_only=True)
    generator, _ = networks_from_config(config)
    set_small_input_matmul(generator, False)
    generator.load_state_dict(state["generator"])
    generator.to(device).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in files:
        image = Image.open(path).convert("RGB")
        width, height = image.size
        halves = image.crop((0, 0, width // 2, height)), image.crop((width // 2, 0, width, height))
        real_a, real_b = (
            torch.from_numpy(np.array(h)).permute(2, 0, 1).float() / 127.5 - 1.0 for h in halves
        )
        with torch.no_grad():
            fake_b = generator(real_a.unsqueeze(0).to(device))[0].cpu()
        for label, tensor in (("real_A", real_a), ("fake_B", fake_b), ("real_B", real_b)):
            array = ((tensor.clamp(-1, 1).permute(1, 2, 0).numpy() + 1) / 2 * 255).round().astype(np.uint8)
            Image.fromarray(array).save(out_dir / f"{path.stem}_{label}.png")


# ----------------------------------------------------------------------------------------------------
# Measurement (one job = one path × one norm pair, normally in its own process)
# ----------------------------------------------------------------------------------------------------


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def undisturbed_repeats(measure: Callable[[], Any], repeats: int, retries: int) -> tuple[list, dict]:
    """Call ``measure`` until it has ``repeats`` results; a call disturbed by other processes (its threads
    waited for a CPU more than ``CONTENDED`` of the time) is discarded and made again, at most ``retries`` times.

    Returns the results and ``{"cpu_wait": worst kept share, "cpu_wait_repeats": [...], "discarded": n}``.
    """
    kept, waits, discarded = [], [], 0
    while len(kept) < repeats:
        waited_before, start = runqueue_wait_s(), time.perf_counter()
        value = measure()
        wait = _wait_share(waited_before, time.perf_counter() - start)
        if wait is not None and wait > CONTENDED and discarded < retries:
            discarded += 1
            continue
        kept.append(value)
        waits.append(wait)
    known = [w for w in waits if w is not None]
    return kept, {
        "cpu_wait": max(known) if known else None,
        "cpu_wait_repeats": waits,
        "discarded": discarded,
    }


def _wait_share(waited_before: float | None, elapsed_s: float) -> float | None:
    """Share of ``elapsed_s`` (wall time since ``waited_before`` was read) that the threads waited for a CPU."""
    waited_after = runqueue_wait_s()
    if waited_before is None or waited_after is None or elapsed_s <= 0:
        return None
    return round((waited_after - waited_before) / (elapsed_s * torch.get_num_threads()), 4)


def time_steps(
    run: Callable[[], Any], *, iters: int, warmup: int, repeats: int, retries: int, device: torch.device
) -> dict:
    """Call ``run`` ``warmup`` times, then ``repeats`` × ``iters`` times; calls/s per repeat."""
    start = time.perf_counter()
    for _ in range(warmup):
        run()
    _sync(device)
    warmup_s = time.perf_counter() - start

    def one_repeat() -> float:
        start = time.perf_counter()
        for _ in range(iters):
            run()
        _sync(device)
        return iters / (time.perf_counter() - start)

    rates, contention = undisturbed_repeats(one_repeat, repeats, retries)
    return summarize(rates) | {"warmup_s": round(warmup_s, 3)} | contention


def summarize(rates: list[float]) -> dict:
    return {
        "median": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "repeats": [round(r, 4) for r in rates],
    }


def bench_config(options: dict, norms: list[str], overrides: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of a job: the benchmark's architecture, one norm pair, one path's overrides."""
    return TrainConfig(
        dataroot="",
        name="bench",
        netG=options["netG"],
        netD=options["netD"],
        ngf=options["ngf"],
        ndf=options["ndf"],
        netG_norm=norms[0],
        netD_norm=norms[1],
        load_size=options["size"],
        crop_size=options["size"],
        batch_size=options["batch_size"],
        seed=options["seed"],
        device=options["device"],
        **overrides,
    )


def _set_threads(threads: int | None) -> int:
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    return previous


def _job_settings(job: dict) -> tuple[dict, torch.device, bool, dict, int | None]:
    """(options, device, is the eager baseline, TrainConfig overrides, threads) of one measurement job."""
    from pix2pix_ilm.model import resolve_device

    is_baseline = job["path"] == BASELINE
    overrides, threads = ({}, None) if is_baseline else parse_path(job["path"])
    device = resolve_device(job["options"]["device"])
    if not is_baseline and device.type == "cpu" and job["task"] == "train":
        # as train does (test does it itself, after the benchmark has written its checkpoint); the
        # system_malloc path's environment turns it off
        retain_freed_memory()
    return job["options"], device, is_baseline, overrides, threads


def measure_train(job: dict) -> dict:
    """it/s of one training path for one norm pair (plus peak memory and the warm-up time)."""
    from pix2pix_ilm.model import Pix2PixModel

    options, device, is_baseline, overrides, threads = _job_settings(job)
    previous_threads = _set_threads(threads)
    try:
        config = bench_config(options, job["norms"], overrides)
        generator = torch.Generator().manual_seed(options["seed"])
        shape = (options["batch_size"], 3, options["size"], options["size"])
        real_a = torch.rand(shape, generator=generator) * 2 - 1
        real_b = torch.rand(shape, generator=generator) * 2 - 1
        memory = MemoryProbe(device)
        torch.manual_seed(options["seed"])
        if is_baseline:
            nets = BaselinePix2Pix(config, device)

            def step() -> Any:
                return baseline_train_step(nets, real_a, real_b)
        else:
            model = Pix2PixModel(config, device)

            def step() -> Any:
                return model.train_step(real_a, real_b)

        timing = time_steps(
            step,
            iters=options["iters"],
            warmup=options["warmup"],
            repeats=options["repeats"],
            retries=options["retries"],
            device=device,
        )
        return timing | memory.report() | {"threads": torch.get_num_threads()}
    finally:
        torch.set_num_threads(previous_threads)


def _write_inference_inputs(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` smooth synthetic aligned A|B JPEGs of ``2·size × size`` (like the facades files)."""
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:size, 0 : 2 * size].astype(np.float32)
    files = []
    for i in range(count):
        channels = [np.sin(x / (9 + 4 * c + i) + y / (13 + c)) + np.cos((x + y) / (21 + i)) for c in range(3)]
        array = np.stack(channels, axis=2)
        array = ((array - array.min()) / (array.max() - array.min()) * 255).astype(np.uint8)
        path = folder / f"{i + 1}.jpg"
        Image.fromarray(array).save(path, quality=95)
        files.append(path)
    return files


def _write_run(run_dir: Path, config: TrainConfig, device: torch.device) -> Path:
    """A run folder as ``train`` leaves it: config.json and latest.pt with G, D and (filled) Adam states."""
    from pix2pix_ilm.checkpoint import save_checkpoint
    from pix2pix_ilm.config import config_to_dict, save_run_config
    from pix2pix_ilm.model import Pix2PixModel

    run_dir.mkdir(parents=True, exist_ok=True)
    model = Pix2PixModel(config, device)
    for opt in (model.opt_g, model.opt_d):  # zero gradients: Adam's moments exist, weights do not move
        for group in opt.param_groups:
            for p in group["params"]:
                p.grad = torch.zeros_like(p)
        opt.step()
    save_run_config(config, run_dir / "config.json")
    save_checkpoint(model.state_dict() | {"config": config_to_dict(config)}, run_dir / "latest.pt")
    return run_dir / "latest.pt"


def measure_inference(job: dict) -> dict:
    """img/s of ``test`` (the real run_test, or the plain baseline) on ``--images`` synthetic images.

    A repeat is two whole ``test`` runs, checkpoint loading included: one over all images (``median`` etc.:
    img/s end to end) and one over a single image. Their difference gives the per-image rate without the
    fixed cost (``img_s_steady``) and the fixed cost itself (``startup_s``: loading the checkpoint, building
    the networks). Warm-up is one run over ``--warmup`` images.
    """
    from pix2pix_ilm.config import TestConfig
    from pix2pix_ilm.test import run_test

    options, device, is_baseline, overrides, threads = _job_settings(job)
    previous_threads = _set_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="pix2pix-ilm-bench-") as tmp:
            root = Path(tmp)
            config = bench_config(options, job["norms"], overrides)
            files = _write_inference_inputs(root / "data" / "test", options["images"], options["size"])
            torch.manual_seed(options["seed"])
            checkpoint = _write_run(root / "checkpoints" / "bench", config, torch.device("cpu"))
            memory = MemoryProbe(device)

            def timed_run(count: int) -> float:
                start = time.perf_counter()
                if is_baseline:
                    baseline_test(checkpoint, config, files[:count], root / "results" / "baseline", device)
                else:
                    test_options = TestConfig(
                        name="bench",
                        dataroot=str(root / "data"),
                        checkpoints_dir=str(root / "checkpoints"),
                        results_dir=str(root / "results"),
                        num_test=count,
                        device=options["device"],
                    )
                    with contextlib.redirect_stdout(io.StringIO()):
                        run_test(test_options)
                _sync(device)
                return time.perf_counter() - start

            count = len(files)
            if options["warmup"] > 0:
                timed_run(min(options["warmup"], count))

            def one_repeat() -> tuple[float, float]:
                return timed_run(1), timed_run(count)

            pairs, contention = undisturbed_repeats(one_repeat, options["repeats"], options["retries"])
            result = summarize([count / whole for _, whole in pairs]) | contention
            result |= {
                "images": count,
                "checkpoint_mib": round(checkpoint.stat().st_size / 2**20, 1),
                "threads": torch.get_num_threads(),
            }
            if count > 1:
                # per repeat: (time per image, fixed cost of a test run)
                split = [
                    ((whole - one) / (count - 1), one - (whole - one) / (count - 1)) for one, whole in pairs
                ]
                result["img_s_steady"] = statistics.median(
                    1.0 / max(per_image, 1e-9) for per_image, _ in split
                )
                result["startup_s"] = statistics.median(fixed for _, fixed in split)
            return result | memory.report()
    finally:
        torch.set_num_threads(previous_threads)


def run_worker(job: dict) -> dict:
    measure = measure_train if job["task"] == "train" else measure_inference
    return measure(job)


def run_job(job: dict, in_process: bool) -> dict:
    """Run one job in a fresh ``python -m pix2pix_ilm bench --worker`` process (or here); errors are recorded."""
    if in_process:
        try:
            return run_worker(job)
        except Exception as err:  # a failing path (e.g. compile without a compiler) must not stop the others
            return {"error": f"{type(err).__name__}: {err}".splitlines()[0]}
    cmd = [sys.executable, "-m", "pix2pix_ilm", "bench", "--worker", json.dumps(job)]
    env = dict(os.environ)
    if "system_malloc" in job["path"].split("+"):
        env[RETAIN_MEMORY_ENV] = "0"
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    errors = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    reason = errors[-1] if errors else f"exit code {proc.returncode}"
    return {"error": reason[:300]}


# ----------------------------------------------------------------------------------------------------
# The whole benchmark and its report
# ----------------------------------------------------------------------------------------------------


def matmul_rates(device: torch.device) -> dict[str, float]:
    """GFLOP/s of one square matrix product per dtype on ``device``: what the hardware gives each precision
    (on this project's CPU machine bf16 runs at half the fp32 rate, which is why bf16 autocast is slower)."""
    size = 2048 if device.type == "cpu" else 8192
    rates = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        a = torch.randn(size, size, device=device).to(dtype)
        b = torch.randn(size, size, device=device).to(dtype)
        times = []
        for _ in range(4):
            _sync(device)
            start = time.perf_counter()
            torch.mm(a, b)
            _sync(device)
            times.append(time.perf_counter() - start)
        rates[name] = round(2 * size**3 / statistics.median(times[1:]) / 1e9, 1)
    return rates


def machine_info(device: torch.device) -> dict:
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
        "matmul_gflops": matmul_rates(device),
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


def _options_from_args(args: argparse.Namespace, device: torch.device) -> dict:
    for name in ("size", "ngf", "ndf", "iters", "repeats", "batch_size", "images"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0 or args.retries < 0:
        name = "--warmup" if args.warmup < 0 else "--retries"
        raise UsageError(f"{name} must be >= 0, got {min(args.warmup, args.retries)}")
    depth = unet_depth(args.netG)
    if depth is not None and args.size % 2**depth:
        raise UsageError(
            f"--size {args.size} does not fit --netG {args.netG}: it must be a multiple of {2**depth}"
        )
    return {
        "size": args.size,
        "netG": args.netG,
        "netD": args.netD,
        "ngf": args.ngf,
        "ndf": args.ndf,
        "device": str(device),
        "iters": args.iters,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "batch_size": args.batch_size,
        "images": args.images,
        "retries": args.retries,
        "seed": args.seed,
    }


def _select_paths(text: str | None, device: torch.device) -> tuple[list[str], dict[str, str]]:
    """The requested paths (validated) and the default ones skipped on this device, with the reason."""
    if text is None:
        candidates, explicit = list(DEFAULT_PATHS), False
    elif text.strip() == "all":
        candidates, explicit = all_paths(), False
    elif text.strip() in ("", "none"):
        return [], {}
    else:
        candidates, explicit = [p.strip() for p in text.split(",") if p.strip()], True
    paths, skipped = [], {}
    for name in candidates:
        if name == BASELINE:
            continue  # always measured
        parse_path(name)
        reason = None if explicit else path_unavailable(name, device)
        if reason:
            skipped[name] = reason
        elif name not in paths:
            paths.append(name)
    return paths, skipped


def _ratios(section: dict, value: str) -> None:
    """Add ``ratio`` = this path's median ÷ the baseline's, per norm pair."""
    for per_norm in section.values():
        for key, result in per_norm.items():
            base = section.get(BASELINE, {}).get(key, {})
            if "median" in result and "median" in base:
                result["ratio"] = result["median"] / base["median"]
            if value != "median" and value in result and value in base:
                result[f"ratio_{value}"] = result[value] / base[value]


def ilm_costs(section: dict) -> dict:
    """Per path: time(ILM pair) ÷ time(plain pair) = plain median rate ÷ ILM median rate."""
    costs: dict[str, dict[str, float]] = {}
    for path, per_norm in section.items():
        for key, result in per_norm.items():
            g, d = key.split("/")
            plain = f"{ILM_BASE.get(g, g)}/{ILM_BASE.get(d, d)}"
            if plain != key and "median" in result and "median" in per_norm.get(plain, {}):
                costs.setdefault(path, {})[key] = per_norm[plain]["median"] / result["median"]
    return costs


def run_bench(args: argparse.Namespace) -> dict:
    """Entry point of ``pix2pix-ilm bench``; returns the JSON report (also printed as the last line)."""
    if getattr(args, "worker", None):
        result = run_worker(json.loads(args.worker))
        print(json.dumps(result))
        return result
    from pix2pix_ilm.model import resolve_device

    device = resolve_device(args.device)
    options = _options_from_args(args, device)
    norms = parse_norms(args.norms)
    train_paths, skipped = _select_paths(args.paths, device)
    infer_paths, _ = _select_paths(args.infer_paths, device)
    infer_paths = [p for p in infer_paths if "compile" not in p.split("+")]  # test does not use compile
    report: dict[str, Any] = {
        "bench": "pix2pix-ilm",
        "machine": machine_info(device),
        "settings": options | {"norms": [norm_key(p) for p in norms], "paths": train_paths},
        "skipped_paths": skipped,
        "train": {},
        "inference": {},
    }
    report["settings"]["infer_paths"] = infer_paths
    jobs = [("train", path) for path in [BASELINE, *train_paths]]
    if infer_paths:
        jobs += [("inference", path) for path in [BASELINE, *infer_paths]]
    total = len(jobs) * len(norms)
    done = 0
    for task, path in jobs:
        for pair in norms:  # the norm pairs of one path back to back: their ratio suffers least from drift
            done += 1
            job = {"task": task, "path": path, "norms": list(pair), "options": options}
            started = time.perf_counter()
            result = run_job(job, args.in_process)
            report[task].setdefault(path, {})[norm_key(pair)] = result
            unit = "it/s" if task == "train" else "img/s"
            status = (
                f"{result['median']:.3f} {unit}" if "median" in result else f"failed: {result.get('error')}"
            )
            elapsed = time.perf_counter() - started
            print(
                f"[{done}/{total}] {task} {path} {norm_label(norm_key(pair))}: {status} ({elapsed:.0f} s)",
                file=sys.stderr,
            )
    _ratios(report["train"], "median")
    _ratios(report["inference"], "img_s_steady")
    report["ilm_cost"] = ilm_costs(report["train"])
    report["inference_ilm_cost"] = ilm_costs(report["inference"])
    with contextlib.suppress(OSError):
        report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(format_report(report))
    line = json.dumps(report, sort_keys=False)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(line + "\n")
    print(line)
    return report


def _cell(result: dict | None, digits: int = 3) -> str:
    if not result:
        return "-"
    if "error" in result:
        return "failed"
    ratio = f" x{result['ratio']:.2f}" if "ratio" in result else ""
    contended = "*" if (result.get("cpu_wait") or 0) > CONTENDED else ""
    return f"{result['median']:.{digits}f} [{result['min']:.{digits}f}-{result['max']:.{digits}f}]{ratio}{contended}"


def _memory(result: dict | None) -> str:
    if not result or "error" in result:
        return "-"
    if "peak_cuda_mib" in result:
        return f"{result['peak_cuda_mib']:.0f}"
    return f"{result['peak_rss_mib']:.0f}"


def _table(title: str, section: dict, costs: dict, norm_keys: list[str], unit: str) -> list[str]:
    header = ["path"]
    for key in norm_keys:
        header += [f"{norm_label(key)} {unit} [min-max] xbase", "peak MiB"]
    if costs:
        header.append("ILM cost")
    rows = [header]
    for path, per_norm in section.items():
        row = [path + (" (eager)" if path == BASELINE else "")]
        for key in norm_keys:
            row += [_cell(per_norm.get(key)), _memory(per_norm.get(key))]
        if costs:
            row.append(", ".join(f"{v:.2f}x" for v in costs.get(path, {}).values()) or "-")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [title]
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in range(1, len(row))]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    errors = [
        f"  {path} {norm_label(key)}: {result['error']}"
        for path, per_norm in section.items()
        for key, result in per_norm.items()
        if "error" in result
    ]
    return lines + (["failures:", *errors] if errors else [])


def format_report(report: dict) -> str:
    machine, settings = report["machine"], report["settings"]
    norm_keys = settings["norms"]
    memory = (
        "peak CUDA allocated" if machine["device"].startswith("cuda") else "peak RSS of the path's process"
    )
    lines = [
        f"pix2pix-ilm bench: G {settings['netG']} (ngf {settings['ngf']}), D {settings['netD']} "
        f"(ndf {settings['ndf']}), {settings['size']}x{settings['size']}, batch {settings['batch_size']}",
        f"machine: {machine['cpu']} ({machine['cpu_count']} CPUs, {machine['threads']} torch threads, "
        f"{machine['cpu_capability']}), device {machine['device']}"
        + (f" ({machine['gpu']})" if machine.get("gpu") else "")
        + f", torch {machine['torch']}, load average {machine.get('loadavg_start')} -> {machine.get('loadavg_end')}",
        "matrix product GFLOP/s: "
        + ", ".join(f"{k} {v:g}" for k, v in (machine.get("matmul_gflops") or {}).items()),
        f"{settings['warmup']} warm-up, then {settings['repeats']} repeats of {settings['iters']} steps; "
        f"median [min-max] over repeats; xbase = median / baseline's median (same norms); memory: {memory}",
        f"* = a repeat's threads waited for a CPU more than {CONTENDED:.0%} of the time even after "
        f"{settings['retries']} retries (other processes were running): that figure is unreliable",
        "",
    ]
    lines += _table("training step", report["train"], report["ilm_cost"], norm_keys, "it/s")
    if report["skipped_paths"]:
        lines.append(
            "not applicable here: " + "; ".join(f"{k} ({v})" for k, v in report["skipped_paths"].items())
        )
    if report["inference"]:
        lines += ["", f"inference (test: load checkpoint, {settings['images']} images, 3 PNGs each; batch 1)"]
        lines += _table(
            "img/s end to end (a whole test run: checkpoint load, then every image)",
            report["inference"],
            report["inference_ilm_cost"],
            norm_keys,
            "img/s",
        )
        details = []
        for path, per_norm in report["inference"].items():
            for key, result in per_norm.items():
                if "img_s_steady" in result:
                    ratio = f" x{result['ratio_img_s_steady']:.2f}" if "ratio_img_s_steady" in result else ""
                    details.append(
                        f"  {path} {norm_label(key)}: {result['img_s_steady']:.2f} img/s without the fixed cost"
                        f"{ratio}; fixed cost per test run {result['startup_s']:.2f} s "
                        f"(checkpoint {result['checkpoint_mib']:.0f} MiB)"
                    )
        lines += details
    return "\n".join(lines)


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=256, help="image size (default: 256)")
    parser.add_argument("--netG", default="unet_256", help="generator (default: unet_256)")
    parser.add_argument("--netD", default="basic", help="discriminator (default: basic)")
    parser.add_argument("--ngf", type=int, default=64, help="generator width (default: 64)")
    parser.add_argument("--ndf", type=int, default=64, help="discriminator width (default: 64)")
    parser.add_argument(
        "--norms",
        default="IN/IN,ILM+IN/ILM+IN",
        help="comma-separated G/D norm pairs (IN, ILM+IN, BN, GN, LN, ILM+GN, ILM+LN or norm names) "
        "(default: IN/IN,ILM+IN/ILM+IN)",
    )
    parser.add_argument(
        "--paths",
        default=None,
        help="comma-separated training paths: default, or features joined by + ("
        + ", ".join(PATH_FEATURES)
        + ", threads=N), e.g. bf16+channels_last; 'all' for every combination; the eager baseline is always "
        f"measured (default: {','.join(DEFAULT_PATHS)}, less those not applicable on the device)",
    )
    parser.add_argument(
        "--infer-paths",
        default="default",
        help="paths for the inference (test) benchmark, or 'none'; compile paths are ignored because test "
        "does not compile (default: default)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    parser.add_argument("--iters", type=int, default=10, help="timed steps per repeat (default: 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (default: 3)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed repeats; the median is reported (default: 3)"
    )
    parser.add_argument("--batch-size", type=int, default=1, help="training batch size (default: 1)")
    parser.add_argument("--images", type=int, default=16, help="images per inference repeat (default: 16)")
    parser.add_argument(
        "--retries",
        type=int,
        default=3,
        help=f"re-run a repeat disturbed by other processes (threads waited for a CPU > {CONTENDED:.0%}% of "
        "the time), at most this many times per measurement (default: 3)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and inputs (default: 0)")
    parser.add_argument("--json", default=None, help="also write the JSON report to this file")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every measurement in this process (faster start; peak memory, compile caches and the allocator "
        "setting are shared, so the baseline and system_malloc figures are not clean)",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
