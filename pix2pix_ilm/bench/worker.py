"""One contestant of the benchmark (one path × one norm pair), normally served by its own ``bench --worker``
process: set up and warmed up once, then timing one block at a time when the runner asks (interleave.py)."""

from __future__ import annotations

import abc
import contextlib
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import nn

from pix2pix_ilm.bench.baseline import BaselinePix2Pix, baseline_test, baseline_train_step
from pix2pix_ilm.bench.flops import step_conv_gflop
from pix2pix_ilm.bench.options import BASELINE, parse_path
from pix2pix_ilm.bench.probes import (
    MemoryProbe,
    host_syncs,
    largest_matmul,
    runqueue_wait_s,
    sync,
    wait_share,
)
from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.cpu_speed import retain_freed_memory
from pix2pix_ilm.errors import first_line


class TrainStep(NamedTuple):
    """One training step to call, and the modules it runs (for hooks: G, D and the loss modules)."""

    run: Callable[[], Any]
    modules: list[nn.Module]


def bench_config(options: dict, norms: list[str], overrides: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of a job: the benchmark's architecture, one norm pair, one path's overrides, and
    train's automatic settings for the device where the path leaves them open (the default path)."""
    from pix2pix_ilm.device import resolve_device, with_device_defaults

    config = TrainConfig(
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
    return with_device_defaults(config, resolve_device(options["device"]))


def path_settings(config: TrainConfig) -> dict[str, Any]:
    """What a path ran with: the report says it, since "default" depends on the device."""
    return {"precision": config.precision, "channels_last": config.channels_last, "compile": config.compile}


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


class Contestant(abc.ABC):
    """One path × norm pair, set up and warmed up, timing one block at a time when asked.

    ``block()`` returns ``{"seconds": wall time of the block, "cpu_wait": share of it this process's threads
    waited for a CPU, ...}``; ``finish()`` returns the figures measured once (peak memory, warm-up time).
    """

    def __init__(self, job: dict) -> None:
        self.options, self.device, self.is_baseline, self.overrides, self.threads = _job_settings(job)
        self.config = bench_config(self.options, job["norms"], self.overrides)
        # the eager baseline is fp32, contiguous, uncompiled by construction
        self.extra: dict[str, Any] = {} if self.is_baseline else {"path_settings": path_settings(self.config)}

    @contextlib.contextmanager
    def _threads(self) -> Iterator[None]:
        previous = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    memory: MemoryProbe  # set by each kind once its set-up is done, so the peak is the measurement's

    @abc.abstractmethod
    def _timed(self) -> dict[str, float]:
        """One block: ``{"seconds": ...}`` and whatever else the kind measures per block."""

    def block(self) -> dict:
        with self._threads():
            waited_before, start = runqueue_wait_s(), time.perf_counter()
            result = self._timed()
            result["cpu_wait"] = wait_share(waited_before, time.perf_counter() - start)
            return result

    def finish(self) -> dict:
        return self.memory.report() | self.extra | {"threads": self.threads or torch.get_num_threads()}

    def close(self) -> None:  # noqa: B027 (optional: only kinds that made temporary files override it)
        """Free what the set-up made (temporary files)."""


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


class TrainContestant(Contestant):
    """Blocks of ``iters`` training steps of one path (the project's step, or the eager baseline)."""

    def __init__(self, job: dict) -> None:
        super().__init__(job)
        _retain_heap_like_the_cli(self.is_baseline, self.device)
        with self._threads():
            self.memory = MemoryProbe(self.device)
            self.step = train_step(self.options, self.config, self.is_baseline, self.device)
            start = time.perf_counter()
            for _ in range(self.options["warmup"]):
                self.step.run()
            sync(self.device)
            self.extra["warmup_s"] = round(time.perf_counter() - start, 3)
            self.extra["host_syncs_per_step"] = host_syncs(self.step.run, self.device)
            flops = step_conv_gflop(self.step.run, self.step.modules)
            self.extra["conv_gflop_per_step"] = round(flops["fwd"] + flops["bwd"], 4)

    def _timed(self) -> dict[str, float]:
        start = time.perf_counter()
        for _ in range(self.options["iters"]):
            self.step.run()
        sync(self.device)
        return {"seconds": time.perf_counter() - start}


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


class InferenceContestant(Contestant):
    """Blocks of two whole ``test`` runs (the real run_test, or the plain baseline), checkpoint loading included.

    One run over all ``--images`` synthetic images and one over a single image: their difference gives the
    per-image rate without the fixed cost (``img_s_steady``) and the fixed cost itself (``startup_s``: loading
    the checkpoint, building the networks). Warm-up is one run over ``--warmup`` images.
    """

    def __init__(self, job: dict) -> None:
        super().__init__(job)
        self._tmp = tempfile.TemporaryDirectory(prefix="pix2pix-ilm-bench-")
        self.root = Path(self._tmp.name)
        with self._threads():
            self.files = _write_inference_inputs(
                self.root / "data" / "test", self.options["images"], self.options["size"]
            )
            torch.manual_seed(self.options["seed"])
            self.checkpoint = _write_run(
                self.root / "checkpoints" / "bench", self.config, torch.device("cpu")
            )
            _retain_heap_like_the_cli(self.is_baseline, self.device)
            self.memory = MemoryProbe(self.device)
            if self.options["warmup"] > 0:
                self._test_run(min(self.options["warmup"], len(self.files)))
        self.extra |= {
            "images": len(self.files),
            "checkpoint_mib": round(self.checkpoint.stat().st_size / 2**20, 1),
        }

    def _test_run(self, count: int) -> float:
        from pix2pix_ilm.config import TestConfig
        from pix2pix_ilm.training.inference import run_test

        start = time.perf_counter()
        if self.is_baseline:
            baseline_test(
                self.checkpoint, self.config, self.files[:count], self.root / "results" / "base", self.device
            )
        else:
            test_options = TestConfig(
                name="bench",
                dataroot=str(self.root / "data"),
                checkpoints_dir=str(self.root / "checkpoints"),
                results_dir=str(self.root / "results"),
                num_test=count,
                device=self.options["device"],
            )
            with contextlib.redirect_stdout(io.StringIO()):
                run_test(test_options)
        sync(self.device)
        return time.perf_counter() - start

    def _timed(self) -> dict[str, float]:
        one, whole = self._test_run(1), self._test_run(len(self.files))
        count = len(self.files)
        return {"one_s": one, "seconds": whole, "per_image_s": (whole - one) / max(count - 1, 1)}

    def close(self) -> None:
        self._tmp.cleanup()


class MatmulContestant(Contestant):
    """The fp32 square matrix product, the roofline's rate, as a contestant: it takes its turn in the training
    rounds, so each path's share of the rate is a ratio of two times from the same rounds (docs/bench.md).

    A block is as many products as take about ``BLOCK_S`` (counted once after a warm-up), at the probe's size
    (``largest_matmul``)."""

    BLOCK_S = 0.25

    def __init__(self, job: dict) -> None:  # no network: Contestant's config is not needed
        from pix2pix_ilm.device import resolve_device

        self.device, self.threads = resolve_device(job["options"]["device"]), None
        size = largest_matmul(self.device)
        self.a = torch.randn(size, size, device=self.device)
        self.b = torch.randn(size, size, device=self.device)
        self.products = 1
        self._timed()  # warm-up
        self.products = max(1, round(self.BLOCK_S / max(self._timed()["seconds"], 1e-9)))
        self.gflop = 2 * size**3 * self.products / 1e9
        self.extra = {"gflop_per_block": self.gflop, "products_per_block": self.products, "size": size}

    def _timed(self) -> dict[str, float]:
        sync(self.device)
        start = time.perf_counter()
        for _ in range(self.products):
            torch.mm(self.a, self.b)
        sync(self.device)
        return {"seconds": time.perf_counter() - start}

    def block(self) -> dict:
        return super().block() | {"gflop": self.gflop}  # the runner prints each group's GFLOP/s

    def finish(self) -> dict:
        return self.extra


def make_contestant(job: dict) -> Contestant:
    """The contestant of a job's task: ``train``, ``inference``, ``matmul`` or ``profile`` (bench/profile.py)."""
    if job["task"] == "profile":
        from pix2pix_ilm.bench.profile import ProfileContestant  # it builds on this module

        return ProfileContestant(job)
    if job["task"] == "matmul":
        return MatmulContestant(job)
    return TrainContestant(job) if job["task"] == "train" else InferenceContestant(job)


def serve(job: dict) -> None:
    """``bench --worker JOB``: set up one contestant, then answer ``block`` / ``finish`` lines on stdin with one
    JSON line each on stdout (the first line says it is ready, or why it failed)."""
    try:
        contestant = make_contestant(job)
    except Exception as err:  # reported to the runner, which records the path as failed
        print(json.dumps({"error": f"{type(err).__name__}: {first_line(err)}"}), flush=True)
        return
    print(json.dumps({"ready": True}), flush=True)
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "block":
                print(json.dumps(contestant.block()), flush=True)
            elif command == "finish":
                print(json.dumps(contestant.finish()), flush=True)
                return
    finally:
        contestant.close()
