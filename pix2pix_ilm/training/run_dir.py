"""The run folder and its options, checked once before any work: new, overwritten or resumed (``--continue``)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from pix2pix_ilm.config import (
    ARCHITECTURE_KEYS,
    TrainConfig,
    config_differences,
    config_to_dict,
    load_run_config,
    parse_subset,
    plain_name_problem,
    save_run_config,
)
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.files import atomic_write_text, check_folder, check_output_folder, data_folders
from pix2pix_ilm.locks import held
from pix2pix_ilm.models.networks import discriminator_from_config, generator_from_config, unet_depth
from pix2pix_ilm.training.checkpoint import load_checkpoint
from pix2pix_ilm.viz.pages import read_loss_log


@contextlib.contextmanager
def run_lock(config: TrainConfig) -> Iterator[None]:
    """Hold the run folder for this process's life (main process only): a second ``train`` of it stops.

    A ``flock`` on ``<checkpoints-dir>/.<name>.lock``, beside the folder that ``--overwrite`` deletes."""
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    path = Path(config.checkpoints_dir) / f".{config.name}.lock"
    in_use = f"run folder {config.run_dir} is in use by another training process"
    with held(path, in_use, "wait for it to end, or use another --name"):
        yield


def checked_run_config(config: TrainConfig, explicit: set[str] | None = None) -> TrainConfig:
    """The options the run will use: its name checked first (``--continue`` reads its folder), then merged
    with the saved options (:func:`resolve_run_config`), then checked."""
    _raise_problems(_identity_problems(config))
    check_folder(config.checkpoints_dir, "--checkpoints-dir")  # before --continue reads the run folder
    config = resolve_run_config(config, explicit)
    _raise_problems(_option_problems(config))
    inputs = data_folders(config.dataroot, config.phase)
    check_output_folder(config.run_dir, "--checkpoints-dir", inputs, replaced=True)
    return config


def check_train_config(config: TrainConfig) -> None:
    """Reject impossible or contradictory options before any work, showing the offending values."""
    _raise_problems(_identity_problems(config) + _option_problems(config))


def _raise_problems(problems: list[str]) -> None:
    if problems:
        raise UsageError("; ".join(problems))


def _identity_problems(config: TrainConfig) -> list[str]:
    """What must hold before the run folder is even looked at."""
    problems = [p for p in [plain_name_problem("--name", config.name)] if p]
    if config.continue_train and config.overwrite:
        problems.append("--continue and --overwrite contradict each other")
    return problems


# The smallest value each counting option may take (the flag is the name with dashes).
_COUNTS = [
    "batch_size",
    "load_size",
    "crop_size",
    "ngf",
    "ndf",
    "ilm_group_size",
    "print_freq",
    "display_freq",
]
_MINIMUMS = dict.fromkeys(
    ["n_epochs", "n_epochs_decay", "num_workers", "save_epoch_freq"], 0
) | dict.fromkeys([*_COUNTS, "save_latest_freq"], 1)


def _option_problems(config: TrainConfig) -> list[str]:
    problems = [] if config.dataroot else ["--dataroot is required (a folder with <phase>/ subfolders)"]
    for name, minimum in _MINIMUMS.items():
        value = getattr(config, name)
        if value is not None and value < minimum:
            problems.append(f"--{name.replace('_', '-')} must be >= {minimum}, got {value}")
    if config.n_epochs + config.n_epochs_decay < 1:
        problems.append(
            f"--n-epochs + --n-epochs-decay must be >= 1, got {config.n_epochs} + {config.n_epochs_decay}"
        )
    if not config.progress_interval > 0:
        problems.append(f"--progress-interval must be > 0 seconds, got {config.progress_interval}")
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        problems.append("--tensorboard needs the tensorboard package: pip install 'pix2pix-ilm[tensorboard]'")
    if not config.save_latest_minutes >= 0:
        problems.append(f"--save-latest-minutes must be >= 0, got {config.save_latest_minutes}")
    if not (config.lr > 0 and math.isfinite(config.lr)):
        problems.append(f"--lr must be a positive number, got {config.lr}")
    if not 0 <= config.beta1 < 1:
        problems.append(f"--beta1 must be in [0, 1), got {config.beta1}")
    elif config.lr / (1 - config.beta1) > torch.finfo(torch.float32).max:
        problems.append(
            f"--lr {config.lr} is too large: Adam's first step, lr / (1 - beta1) = "
            f"{config.lr / (1 - config.beta1):g}, does not fit in a 32-bit float"
        )
    if (
        config.preprocess in ("resize_and_crop", "scale_width_and_crop")
        and config.crop_size > config.load_size
    ):
        problems.append(f"--crop-size {config.crop_size} is larger than --load-size {config.load_size}")
    try:
        depth = unet_depth(config.netG)
    except UsageError as err:
        problems.append(str(err))
        depth = None
    fixed_size = config.preprocess not in ("none", "scale_width")
    if depth is not None and fixed_size and config.crop_size % (2**depth):
        problems.append(
            f"--netG {config.netG} downsamples {depth} times, so --crop-size must be a multiple of {2**depth}; "
            f"got {config.crop_size} (use unet_{config.crop_size} if it is a power of two)"
        )
    if not problems:  # the layers themselves refuse what they cannot divide (e.g. ILM's K); no memory used
        try:
            with torch.device("meta"):
                generator_from_config(config), discriminator_from_config(config)
        except UsageError as err:
            problems.append(str(err))
    parse_subset(config.subset)
    return problems


def resolve_run_config(config: TrainConfig, explicit: set[str] | None = None) -> TrainConfig:
    """The options the run will use, checked against its folder. With ``--continue`` the saved ``config.json``
    is the base, overridden by the options in ``explicit`` (all when None) but never in its architecture."""
    run_dir = config.run_dir
    existing = (run_dir / "config.json").exists() or (run_dir / "latest.pt").exists()
    if config.continue_train:
        if not (run_dir / "latest.pt").is_file():
            raise UsageError(f"--continue: no checkpoint to resume at {run_dir / 'latest.pt'}")
        saved = load_run_config(run_dir)
        if explicit is not None:
            merged = config_to_dict(saved)
            merged.update({k: v for k, v in config_to_dict(config).items() if k in explicit})
            merged.update(continue_train=True, overwrite=False)
            config = TrainConfig(**merged)
        diffs = config_differences(saved, config, ARCHITECTURE_KEYS)
        if diffs:
            raise UsageError(
                f"--continue with a different architecture than {run_dir / 'config.json'}: "
                + "; ".join(diffs)
            )
        return config
    if existing and not config.overwrite:
        raise UsageError(
            f"run folder {run_dir} already holds a run; use --continue to resume it, --overwrite to start "
            "again, or another --name"
        )
    return config


def prepare_run_dir(config: TrainConfig, *, may_change_folder: bool = True) -> dict[str, Any] | None:
    """The state to resume (``--continue``) or None; with ``--overwrite`` the old run is removed first
    (only where ``may_change_folder``: the other torchrun processes read, they do not write)."""
    run_dir = config.run_dir
    if config.continue_train:
        return load_checkpoint(run_dir / "latest.pt")
    existing = (run_dir / "config.json").exists() or (run_dir / "latest.pt").exists()
    if may_change_folder and config.overwrite and existing:
        shutil.rmtree(run_dir)
    return None


def start_run_folder(config: TrainConfig, resumed_at: int | None) -> None:
    """Write ``config.json``; on resume, drop what the killed run wrote after ``latest.pt`` was saved."""
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    save_run_config(config, run_dir / "config.json")
    if resumed_at is not None:
        _loss_log_truncate(run_dir / "loss_log.jsonl", resumed_at)
        remove_stale_temp_files(run_dir)


def _loss_log_truncate(path: Path, iteration: int) -> None:
    """On resume, drop loss-log lines written after the checkpoint (and a half-written last line)."""
    if path.is_file():
        kept = [entry for entry in read_loss_log(path) if entry.get("iteration", 0) <= iteration]
        atomic_write_text(path, "".join(json.dumps(entry) + "\n" for entry in kept))


def remove_stale_temp_files(run_dir: Path) -> None:
    """Delete the temp files of atomic writes that a killed run left behind (``.<name>.<random>.tmp``)."""
    for path in run_dir.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            path.unlink()
