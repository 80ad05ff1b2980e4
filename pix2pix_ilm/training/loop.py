"""The training loop: ``train()`` reads like the algorithm; set-up, reporting, checkpoints and stopping live in
``run_dir``, ``distributed``, ``reporting``, ``state`` and ``stopping``.

Data order and jitter are a function of ``(seed, epoch)`` (see :mod:`pix2pix_ilm.data.aligned`) and the
dropout RNG is saved with every checkpoint, so ``--continue`` reproduces an uninterrupted run exactly.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from pix2pix_ilm.config import TrainConfig, parse_subset
from pix2pix_ilm.data.aligned import (
    EPOCH_SEED_STRIDE,
    AlignedDataset,
    EpochBatchSampler,
)
from pix2pix_ilm.data.device_data import DeviceImages, device_images
from pix2pix_ilm.data.images import BAD_IMAGES_FILE, record_bad_images, select_files, validate_images
from pix2pix_ilm.data.paired import PairedDataset, phase_items
from pix2pix_ilm.data.transforms import TransformSpec
from pix2pix_ilm.device import resolve_device, with_device_defaults
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.models.networks import unet_depth
from pix2pix_ilm.models.pix2pix import Pix2PixModel
from pix2pix_ilm.training.cuda_graph import TrainingStep, resolve_cuda_graph
from pix2pix_ilm.training.distributed import Distributed
from pix2pix_ilm.training.reporting import Reporter
from pix2pix_ilm.training.run_dir import checked_run_config, prepare_run_dir, run_lock, start_run_folder
from pix2pix_ilm.training.state import CheckpointSaver, Counters, restore_rng_state, restore_training_state
from pix2pix_ilm.training.stopping import StopRequest, TrainingStopped

# Dropout seeds: an epoch's stream is seeded from (seed, epoch, rank); a process that cannot restore its
# saved stream mid-epoch (a checkpoint of an older version, rank > 0) seeds one from (epoch, batches done).
DROPOUT_EPOCH_STRIDE = 7_919
MID_EPOCH_STRIDE = 100_003


def train(config: TrainConfig, explicit: set[str] | None = None) -> Path:
    """Train a pix2pix model as ``config`` says; returns the run folder. One process at a time per run.

    ``explicit``: the option names typed on the command line (``--continue`` keeps the saved values of the others).
    """
    checked_run_config(config, explicit)  # a bad option is reported before the lock's file is made
    with run_lock(config):
        return _train(config, explicit)  # checks the folder again, now that no other process can change it


def _train(config: TrainConfig, explicit: set[str] | None) -> Path:
    # -- set-up: options, processes, data, run folder
    config = checked_run_config(config, explicit)
    dist = Distributed.set_up(resolve_device(config.device))
    # precision, channels_last, cuda_graph, data_on_device as they run: config.json saves these
    config = with_device_defaults(config, dist.device)
    config = dataclasses.replace(config, cuda_graph=resolve_cuda_graph(config, dist.device, dist.world))
    dataset, skipped = training_dataset(config)
    resume_state = prepare_run_dir(config, may_change_folder=dist.is_main)
    dist.barrier()
    on_device = device_images(dataset, config.data_on_device, dist.device)
    config = dataclasses.replace(config, data_on_device="on" if on_device else "off")

    # -- model, resumed where the last checkpoint left it
    torch.manual_seed(config.seed)
    model = Pix2PixModel(config, dist.device)
    counters = restore_training_state(model, resume_state, config) if resume_state else Counters()
    if dist.world > 1:
        model.wrap_distributed()
    if dist.is_main:
        start_run_folder(config, resumed_at=counters.iteration if resume_state else None)
        if config.skip_bad_images:
            dataset.bad_list = config.run_dir / BAD_IMAGES_FILE
            dataset.bad_list.unlink(missing_ok=True)
            record_bad_images(dataset.bad_list, skipped)
        if resume_state:
            _say_where_it_resumes(config, counters)
    if counters.epoch > config.total_epochs:
        return config.run_dir  # a finished run: nothing left to train
    batches = TrainingBatches(dataset, config, dist, on_device)
    report = Reporter(config, dist, batches_per_epoch(len(dataset), config, dist.world), counters)
    saver = CheckpointSaver(model, config, dist)
    training_step = TrainingStep(model, captured=config.cuda_graph == "on")

    # -- the loop: epochs of GAN steps (D then G, see Pix2PixModel.optimize_parameters)
    with StopRequest(dist) as stop:
        while counters.epoch <= config.total_epochs and not stop.signal_name:
            lr = model.set_learning_rate(counters.epoch)
            seed_dropout(config, counters, dist, resume_state)
            resume_state = None
            for batch in batches.epoch(counters):
                losses = training_step(batch["A"], batch["B"])
                counters.step()
                report.step(counters, lr, losses, model.last_visuals)
                saver.step(counters)
                if stop.requested():
                    break
            else:
                finished = counters.epoch
                counters.next_epoch()
                report.epoch_end(finished, model.last_visuals)
                saver.epoch_end(finished, counters)
    report.close()

    # -- the end: stopped (saved, exit 128 + signal) or finished
    if stop.signal_name:
        saver.save_latest(counters)
    _say_how_it_ended(config, dist, counters, stop.signal_name, report.start_time)
    dist.barrier()
    if stop.signal_name:
        raise TrainingStopped(stop.signal_name)
    return config.run_dir


def training_dataset(config: TrainConfig) -> tuple[AlignedDataset, list[str]]:
    """The checked images of ``--phase`` in the ``--dataset-mode`` layout (every file validated before any
    work), and the reasons for the files skipped as bad."""
    paired = config.dataset_mode == "paired"
    source, items = phase_items(config.dataroot, config.phase, paired)
    files = select_files(items, parse_subset(config.subset), config.max_dataset_size)
    if not files:
        raise UsageError(f"no images in {source} (after --subset/--max-dataset-size)")
    transform = TransformSpec(config.preprocess, config.load_size, config.crop_size, not config.no_flip, True)
    depth = unet_depth(config.netG)
    files, skipped = validate_images(
        files,
        aligned=True,
        skip_bad=config.skip_bad_images,
        mode=config.validate_images,
        transform=transform,
        size_multiple=2**depth if depth is not None else 4,
    )
    bad_image = "substitute" if config.skip_bad_images else "error"
    dataset = (PairedDataset if paired else AlignedDataset)(
        files, transform, config.direction, config.input_nc, config.output_nc, bad_image=bad_image
    )
    return dataset, skipped


def batches_per_epoch(num_images: int, config: TrainConfig, world: int) -> int:
    count = EpochBatchSampler(
        num_images, config.batch_size, config.seed, 1, num_replicas=world
    ).batches_per_epoch()
    if count < 1:
        raise UsageError(
            f"{num_images} images are fewer than one batch of {config.batch_size} x {world} processes"
        )
    return count


def seed_dropout(
    config: TrainConfig, counters: Counters, dist: Distributed, resume_state: dict[str, Any] | None
) -> None:
    """Seed the dropout stream at an epoch's start; a mid-epoch resume continues each process's saved stream."""
    if counters.batches_done == 0:
        _seed(config, counters.epoch, dist.rank)
    elif resume_state is not None and not restore_rng_state(resume_state, dist):
        _seed(config, counters.epoch * MID_EPOCH_STRIDE + counters.batches_done, dist.rank)


def _seed(config: TrainConfig, epoch: int, rank: int) -> None:
    torch.manual_seed(config.seed * EPOCH_SEED_STRIDE + epoch * DROPOUT_EPOCH_STRIDE + rank)


class TrainingBatches:
    """This process's batches, epoch after epoch: from the set kept on the device (``--data-on-device``), or
    from one DataLoader, so its workers (persistent where there are any) outlive epochs. Batches do not depend
    on where they are made: each item carries its own seed."""

    def __init__(
        self, dataset: AlignedDataset, config: TrainConfig, dist: Distributed, on_device: DeviceImages | None
    ) -> None:
        self.sampler = EpochBatchSampler(
            len(dataset), config.batch_size, config.seed, 1, rank=dist.rank, num_replicas=dist.world
        )
        self.on_device = on_device
        if on_device is not None:
            return
        workers = data_workers(config.num_workers, dist.device)
        self.loader = DataLoader(
            dataset,
            batch_sampler=self.sampler,
            num_workers=workers,
            pin_memory=dist.device.type == "cuda",
            persistent_workers=workers > 0,
            # Its own generator: otherwise starting an epoch would draw from the global RNG (dropout's), and a
            # mid-epoch resume would shift the dropout stream.
            generator=torch.Generator().manual_seed(config.seed),
        )

    def epoch(self, counters: Counters) -> Iterator[dict[str, Any]]:
        """The batches of the epoch in progress, from the first one not trained yet."""
        self.sampler.epoch, self.sampler.start_batch = counters.epoch, counters.batches_done
        if self.on_device is not None:
            yield from map(self.on_device.batch, self.sampler)
            return
        iterator = iter(self.loader)
        while True:
            try:
                yield next(iterator)
            except StopIteration:
                return
            except UsageError as err:  # raised in a worker process: keep its one-line message
                lines = str(err).strip().splitlines()
                if len(lines) > 1 and lines[0].startswith("Caught "):  # "Caught ... in DataLoader worker"
                    raise UsageError(lines[-1].split("UsageError: ", 1)[-1]) from None
                raise


def data_workers(num_workers: int | None, device: torch.device) -> int:
    """``--num-workers``, or by default: on CUDA, worker processes to decode in front of the GPU (one core
    left to the training process); on the CPU none, since the training process uses every core."""
    if num_workers is not None:
        return num_workers
    return min(4, max(0, (os.cpu_count() or 1) - 1)) if device.type == "cuda" else 0


def _say_where_it_resumes(config: TrainConfig, counters: Counters) -> None:
    latest = config.run_dir / "latest.pt"
    if counters.epoch > config.total_epochs:
        print(
            f"nothing left to train: {latest} finished all {config.total_epochs} epochs (iteration "
            f"{counters.iteration}); to train longer, --continue with a larger --n-epochs or --n-epochs-decay"
        )
        return
    print(
        f"resuming {latest} at epoch {counters.epoch}/{config.total_epochs}, batch {counters.batches_done + 1} "
        f"(iteration {counters.iteration})"
    )


def _say_how_it_ended(
    config: TrainConfig, dist: Distributed, counters: Counters, stopped_by: str | None, start_time: float
) -> None:
    if not dist.is_main:
        return
    latest = config.run_dir / "latest.pt"
    if stopped_by:
        print(
            f"{stopped_by}: stopped after iteration {counters.iteration}; saved {latest} (resume with --continue)",
            file=sys.stderr,
        )
    else:
        print(
            f"finished {counters.iteration} iterations in {time.time() - start_time:.1f} s; run folder {config.run_dir}"
        )
