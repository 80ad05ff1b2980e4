"""The training loop: epochs, learning-rate schedule, progress, checkpoints, loss log, previews.

Counters saved with every checkpoint: ``epoch`` (1-based, the epoch in progress), ``batches_done`` (batches of
that epoch already trained) and ``iteration`` (steps since the start). Data order and jitter are a function of
``(seed, epoch)`` (see :mod:`pix2pix_ilm.data.aligned`), and the global RNG (dropout) is saved, so ``--continue``
reproduces an uninterrupted run exactly.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from pix2pix_ilm.config import (
    ARCHITECTURE_KEYS,
    TrainConfig,
    config_differences,
    config_from_dict,
    config_to_dict,
    parse_subset,
    save_run_config,
)
from pix2pix_ilm.data.aligned import AlignedDataset, EpochBatchSampler, TransformSpec
from pix2pix_ilm.data.images import list_images, phase_folder, select_files, validate_images
from pix2pix_ilm.device import resolve_device
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.models.networks import unet_depth
from pix2pix_ilm.models.pix2pix import Pix2PixModel
from pix2pix_ilm.training.checkpoint import save_checkpoint
from pix2pix_ilm.training.run_dir import (
    _loss_log_truncate,
    check_train_config,
    prepare_run_dir,
    remove_stale_temp_files,
    resolve_run_config,
)
from pix2pix_ilm.viz.pages import TrainingPages

CHECKPOINT_FORMAT = 1


class TrainingStopped(Exception):
    """Training was stopped by SIGINT / SIGTERM after saving ``latest.pt``; callers must not go on."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"stopped by {signal_name}")
        self.signal_name = signal_name
        self.exit_code = 128 + int(getattr(signal.Signals, signal_name))


class NonFiniteLossError(UsageError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


# -- distributed (torchrun) ----------------------------------------------------------------------------
def distributed_context() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) when run directly."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


@contextmanager
def graceful_stop():
    """SIGINT / SIGTERM set a flag so the loop can finish the current step and save; a second one aborts."""
    state = {"stop": None}

    def handler(signum, frame):
        if state["stop"] is not None:
            raise KeyboardInterrupt
        state["stop"] = signal.Signals(signum).name

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not in the main thread
            previous[sig] = signal.signal(sig, handler)
    try:
        yield state
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _training_state(model: Pix2PixModel, config: TrainConfig, counters: dict[str, int]) -> dict[str, Any]:
    state = model.state_dict()
    state.update(
        {
            "format": CHECKPOINT_FORMAT,
            "config": config_to_dict(config),
            "counters": dict(counters),
            "rng_cpu": torch.get_rng_state(),
        }
    )
    if torch.cuda.is_available() and model.device.type == "cuda":
        state["rng_cuda"] = torch.cuda.get_rng_state(model.device)
    return state


def _save(model: Pix2PixModel, config: TrainConfig, counters: dict[str, int], path: Path) -> None:
    """Save a checkpoint, unless a weight of G or D is NaN or infinite: then stop and keep the last good one."""
    state = _training_state(model, config, counters)
    tensors = [
        t for part in ("generator", "discriminator") for t in state[part].values() if t.is_floating_point()
    ]
    if tensors and not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
        raise NonFiniteLossError(
            f"the weights became non-finite (NaN or inf) at iteration {counters['iteration']} "
            f"(epoch {counters['epoch']}); {path.name} was not saved and the last good checkpoint "
            f"{path.parent / 'latest.pt'} is kept — try a lower --lr or --precision fp32"
        )
    save_checkpoint(state, path)


def _batches(loader: DataLoader):
    """The loader's batches; a :class:`UsageError` raised in a worker process keeps its one-line message."""
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except UsageError as err:
            lines = str(err).strip().splitlines()
            if len(lines) > 1 and lines[0].startswith("Caught "):  # torch's "Caught ... in DataLoader worker"
                raise UsageError(lines[-1].split("UsageError: ", 1)[-1]) from None
            raise
        yield batch


def _seed_epoch(config: TrainConfig, epoch: int, rank: int) -> None:
    torch.manual_seed(config.seed * 1_000_003 + epoch * 7_919 + rank)


# -- the loop ------------------------------------------------------------------------------------------
def train(config: TrainConfig, explicit: set[str] | None = None) -> Path:
    """Train a pix2pix model as ``config`` says; returns the run folder.

    ``explicit``: the option names given on the command line (see :func:`prepare_run_dir`).
    """
    check_train_config(config)
    config = resolve_run_config(config, explicit)  # --continue: the saved options, before data are checked
    check_train_config(config)
    rank, world, local_rank = distributed_context()
    is_main = rank == 0
    device = resolve_device(config.device)
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    folder = phase_folder(config.dataroot, config.phase)
    files = select_files(list_images(folder), parse_subset(config.subset), config.max_dataset_size)
    if not files:
        raise UsageError(f"no images in {folder} (after --subset/--max-dataset-size)")
    transform = TransformSpec(config.preprocess, config.load_size, config.crop_size, not config.no_flip, True)
    depth = unet_depth(config.netG)
    files = validate_images(
        files,
        aligned=True,
        skip_bad=config.skip_bad_images,
        mode=config.validate_images,
        transform=transform,
        size_multiple=2**depth if depth is not None else 4,
    )

    if is_main:
        config, resume_state = prepare_run_dir(config, explicit)
    else:  # other torchrun processes: the same merge, without touching the folder
        resume_state = None
        if config.continue_train:
            config, resume_state = prepare_run_dir(config, explicit)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    run_dir = config.run_dir
    torch.manual_seed(config.seed)
    model = Pix2PixModel(config, device)
    counters = {"epoch": 1, "batches_done": 0, "iteration": 0}
    if resume_state is not None:
        missing = [k for k in ("config", "counters", "rng_cpu", "opt_g", "opt_d") if k not in resume_state]
        if missing:
            raise UsageError(
                f"{run_dir / 'latest.pt'} cannot resume training: it lacks {', '.join(missing)} "
                "(not a checkpoint written by 'pix2pix-ilm train'?)"
            )
        saved_config = config_from_dict(TrainConfig, resume_state["config"], source="latest.pt")
        diffs = config_differences(config, saved_config, ARCHITECTURE_KEYS)
        if diffs:
            raise UsageError(
                f"{run_dir / 'latest.pt'} does not match {run_dir / 'config.json'} (trained with another "
                "architecture; config.json value != checkpoint value): " + "; ".join(diffs)
            )
        model.load_state_dict(resume_state)
        counters = {k: int(v) for k, v in resume_state["counters"].items()}
    if world > 1:
        model.wrap_distributed()

    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_run_config(config, run_dir / "config.json")
        if resume_state is not None:
            _loss_log_truncate(run_dir / "loss_log.jsonl", counters["iteration"])
            remove_stale_temp_files(run_dir)

    display = None
    if is_main and not config.no_display:
        from pix2pix_ilm.viz.display import VisdomDisplay

        display = VisdomDisplay(
            server=config.display_server,
            port=config.display_port,
            env=config.display_env or config.name,
        )
    pages = None
    if is_main and not config.no_html:
        pages = TrainingPages(run_dir / "web", config.name)

    dataset = AlignedDataset(
        files,
        transform,
        config.direction,
        config.input_nc,
        config.output_nc,
        bad_image="substitute" if config.skip_bad_images else "error",
    )
    batches_per_epoch = EpochBatchSampler(
        len(dataset), config.batch_size, config.seed, 1, num_replicas=world
    ).batches_per_epoch()
    if batches_per_epoch < 1:
        raise UsageError(
            f"{len(dataset)} images are fewer than one batch of {config.batch_size} x {world} processes"
        )
    total_iterations = batches_per_epoch * config.total_epochs
    log_path = run_dir / "loss_log.jsonl"

    progress = None
    if is_main and not config.no_progress:
        from tqdm import tqdm

        progress = tqdm(
            total=total_iterations,
            initial=counters["iteration"],
            unit="it",
            dynamic_ncols=True,
            desc=config.name,
            file=sys.stderr,
            disable=None,
        )
    start_time = time.time()
    stopped_by = None
    with graceful_stop() as stop_state:
        while counters["epoch"] <= config.total_epochs:
            epoch = counters["epoch"]
            lr = model.set_learning_rate(epoch)
            if counters["batches_done"] == 0:
                _seed_epoch(config, epoch, rank)
            elif resume_state is not None:  # mid-epoch resume: continue the saved dropout RNG stream
                torch.set_rng_state(resume_state["rng_cpu"])
                if "rng_cuda" in resume_state and device.type == "cuda":
                    torch.cuda.set_rng_state(resume_state["rng_cuda"], device)
                if rank > 0:  # only rank 0's stream is saved; the others restart a seeded one
                    _seed_epoch(config, epoch * 100_003 + counters["batches_done"], rank)
            resume_state = None
            sampler = EpochBatchSampler(
                len(dataset),
                config.batch_size,
                config.seed,
                epoch,
                start_batch=counters["batches_done"],
                rank=rank,
                num_replicas=world,
            )
            loader = DataLoader(
                dataset,
                batch_sampler=sampler,
                num_workers=config.num_workers,
                pin_memory=device.type == "cuda",
                persistent_workers=False,
                # Its own generator: otherwise starting the iterator draws from the global RNG (dropout's),
                # and a mid-epoch resume would shift the dropout stream.
                generator=torch.Generator().manual_seed(config.seed * 1_000_003 + epoch),
            )
            for batch in _batches(loader):
                losses = model.train_step(batch["A"], batch["B"])
                counters["iteration"] += 1
                counters["batches_done"] += 1
                values = {k: float(v) for k, v in losses.items()}
                bad = [k for k, v in values.items() if not math.isfinite(v)]
                if bad:
                    raise NonFiniteLossError(
                        f"non-finite loss {', '.join(f'{k}={values[k]}' for k in bad)} at iteration "
                        f"{counters['iteration']} (epoch {epoch}); the last good checkpoint {run_dir / 'latest.pt'} "
                        "is kept — try a lower --lr or --precision fp32"
                    )
                it = counters["iteration"]
                if is_main:
                    if progress is not None:
                        progress.update(1)
                        progress.set_postfix_str(
                            f"ep {epoch}/{config.total_epochs} "
                            + " ".join(f"{k} {v:.3f}" for k, v in values.items()),
                            refresh=False,
                        )
                    if it % config.print_freq == 0 or counters["batches_done"] == batches_per_epoch:
                        entry = {
                            "iteration": it,
                            "epoch": epoch,
                            "epoch_progress": round(
                                epoch - 1 + counters["batches_done"] / batches_per_epoch, 6
                            ),
                            "lr": lr,
                            "time": round(time.time() - start_time, 3),
                            **values,
                        }
                        with open(log_path, "a") as handle:
                            handle.write(json.dumps(entry) + "\n")
                    if display is not None and it % config.display_freq == 0:
                        display.show_images(model.last_visuals, epoch=epoch)
                        display.plot_losses(epoch - 1 + counters["batches_done"] / batches_per_epoch, values)
                    if pages is not None and it % config.display_freq == 0:
                        pages.update(epoch, model.last_visuals)
                    if it % config.save_latest_freq == 0:
                        _save(model, config, counters, run_dir / "latest.pt")
                if stop_state["stop"]:
                    stopped_by = stop_state["stop"]
                    break
            if stopped_by:
                break
            # end of epoch
            counters["epoch"] += 1
            counters["batches_done"] = 0
            if is_main:
                if pages is not None and model.last_visuals:  # empty when resumed right at an epoch's end
                    pages.update(epoch, model.last_visuals)
                if display is not None and model.last_visuals:
                    display.show_images(model.last_visuals, epoch=epoch)
                _save(model, config, counters, run_dir / "latest.pt")
                if epoch % config.save_epoch_freq == 0 or epoch == config.total_epochs:
                    _save(model, config, counters, run_dir / f"epoch_{epoch}.pt")
    if progress is not None:
        progress.close()
    if stopped_by and is_main:
        _save(model, config, counters, run_dir / "latest.pt")
        print(
            f"{stopped_by}: stopped after iteration {counters['iteration']}; saved {run_dir / 'latest.pt'} "
            f"(resume with --continue)",
            file=sys.stderr,
        )
    elif is_main:
        print(
            f"finished {counters['iteration']} iterations in {time.time() - start_time:.1f} s; run folder {run_dir}"
        )
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    if stopped_by:
        raise TrainingStopped(stopped_by)
    return run_dir
