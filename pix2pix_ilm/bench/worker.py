"""One measurement job (one path x one norm pair), normally in its own ``bench --worker`` process."""

from __future__ import annotations

import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import nn

from pix2pix_ilm.bench.baseline import BaselinePix2Pix, baseline_test, baseline_train_step
from pix2pix_ilm.bench.options import BASELINE, parse_path
from pix2pix_ilm.bench.probes import MemoryProbe, summarize, sync, time_steps, undisturbed_repeats
from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.cpu_speed import RETAIN_MEMORY_ENV, retain_freed_memory
from pix2pix_ilm.errors import first_line


class TrainStep(NamedTuple):
    """One training step to call, and the modules it runs (for hooks: G, D and the loss modules)."""

    run: Callable[[], Any]
    modules: list[nn.Module]


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
    from pix2pix_ilm.device import resolve_device

    is_baseline = job["path"] == BASELINE
    overrides, threads = ({}, None) if is_baseline else parse_path(job["path"])
    device = resolve_device(job["options"]["device"])
    return job["options"], device, is_baseline, overrides, threads


def _retain_heap_like_the_cli(is_baseline: bool, device: torch.device) -> None:
    """The project's paths on CPU measure what ``train`` / ``test`` run from the command line get: the retained
    heap (the eager baseline keeps glibc's defaults; the system_malloc path's environment turns it off)."""
    if not is_baseline and device.type == "cpu":
        retain_freed_memory()


def train_step(options: dict, config: TrainConfig, is_baseline: bool, device: torch.device) -> TrainStep:
    """The step a training job times: seeded inputs and a fresh model; also the modules it runs (G, D, losses)."""
    from pix2pix_ilm.models.pix2pix import Pix2PixModel

    generator = torch.Generator().manual_seed(options["seed"])
    shape = (options["batch_size"], 3, options["size"], options["size"])
    real_a = torch.rand(shape, generator=generator) * 2 - 1
    real_b = torch.rand(shape, generator=generator) * 2 - 1
    torch.manual_seed(options["seed"])
    if is_baseline:
        nets = BaselinePix2Pix(config, device)
        modules = [nets.generator, nets.discriminator, nets.criterion_gan, nets.criterion_l1]
        return TrainStep(lambda: baseline_train_step(nets, real_a, real_b), modules)
    model = Pix2PixModel(config, device)
    return TrainStep(
        lambda: model.optimize_parameters(real_a, real_b),
        [model.generator, model.discriminator, model.gan_loss],
    )


def measure_train(job: dict) -> dict:
    """it/s of one training path for one norm pair (plus peak memory and the warm-up time)."""
    options, device, is_baseline, overrides, threads = _job_settings(job)
    _retain_heap_like_the_cli(is_baseline, device)
    previous_threads = _set_threads(threads)
    try:
        config = bench_config(options, job["norms"], overrides)
        memory = MemoryProbe(device)
        step = train_step(options, config, is_baseline, device).run
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
    from pix2pix_ilm.config import config_to_dict, save_run_config
    from pix2pix_ilm.models.pix2pix import Pix2PixModel
    from pix2pix_ilm.training.checkpoint import save_checkpoint

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
    from pix2pix_ilm.training.inference import run_test

    options, device, is_baseline, overrides, threads = _job_settings(job)
    previous_threads = _set_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="pix2pix-ilm-bench-") as tmp:
            root = Path(tmp)
            config = bench_config(options, job["norms"], overrides)
            files = _write_inference_inputs(root / "data" / "test", options["images"], options["size"])
            torch.manual_seed(options["seed"])
            checkpoint = _write_run(root / "checkpoints" / "bench", config, torch.device("cpu"))
            _retain_heap_like_the_cli(is_baseline, device)
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
                sync(device)
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
    if job["task"] == "profile":
        from pix2pix_ilm.bench.profile import measure_profile  # it builds on this module

        return measure_profile(job)
    measure = measure_train if job["task"] == "train" else measure_inference
    return measure(job)


def run_job(job: dict, in_process: bool) -> dict:
    """Run one job in a fresh ``python -m pix2pix_ilm bench --worker`` process (or here); errors are recorded."""
    if in_process:
        try:
            return run_worker(job)
        except Exception as err:  # a failing path (e.g. compile without a compiler) must not stop the others
            return {"error": f"{type(err).__name__}: {first_line(err)}"}
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
