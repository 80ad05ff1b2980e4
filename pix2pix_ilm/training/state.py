"""What a training checkpoint holds, when it is written, and how a run resumes from it.

Counters saved with every checkpoint: ``epoch`` (1-based, the epoch in progress), ``batches_done`` (batches of
that epoch already trained) and ``iteration`` (steps since the start). With the global RNG (dropout) saved too,
``--continue`` reproduces an uninterrupted run exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from pix2pix_ilm.config import (
    ARCHITECTURE_KEYS,
    TrainConfig,
    config_differences,
    config_from_dict,
    config_to_dict,
)
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.models.pix2pix import Pix2PixModel
from pix2pix_ilm.training.checkpoint import save_checkpoint
from pix2pix_ilm.training.distributed import Distributed
from pix2pix_ilm.training.stopping import TrainingDiverged

CHECKPOINT_FORMAT = 1
RESUME_KEYS = ("config", "counters", "rng_cpu", "opt_g", "opt_d")


@dataclass
class Counters:
    """Where the run is: the epoch in progress (1-based), batches done in it, steps since the start."""

    epoch: int = 1
    batches_done: int = 0
    iteration: int = 0

    def step(self) -> None:
        self.iteration += 1
        self.batches_done += 1

    def next_epoch(self) -> None:
        self.epoch += 1
        self.batches_done = 0


def training_state(model: Pix2PixModel, config: TrainConfig, counters: Counters) -> dict[str, Any]:
    """Everything ``--continue`` needs: weights, optimizers, options, counters and the RNG streams."""
    state = model.state_dict()
    state.update(
        {
            "format": CHECKPOINT_FORMAT,
            "config": config_to_dict(config),
            "counters": asdict(counters),
            "rng_cpu": torch.get_rng_state(),
        }
    )
    if torch.cuda.is_available() and model.device.type == "cuda":
        state["rng_cuda"] = torch.cuda.get_rng_state(model.device)
    return state


def restore_training_state(model: Pix2PixModel, state: dict[str, Any], config: TrainConfig) -> Counters:
    """Load ``state`` (from ``latest.pt``) into ``model`` after checking it belongs to this run."""
    path = config.run_dir / "latest.pt"
    missing = [k for k in RESUME_KEYS if k not in state]
    if missing:
        raise UsageError(
            f"{path} cannot resume training: it lacks {', '.join(missing)} "
            "(not a checkpoint written by 'pix2pix-ilm train'?)"
        )
    saved_config = config_from_dict(TrainConfig, state["config"], source="latest.pt")
    diffs = config_differences(config, saved_config, ARCHITECTURE_KEYS)
    if diffs:
        raise UsageError(
            f"{path} does not match {config.run_dir / 'config.json'} (trained with another "
            "architecture; config.json value != checkpoint value): " + "; ".join(diffs)
        )
    model.load_state_dict(state)
    return Counters(**{k: int(v) for k, v in state["counters"].items()})


def _weights_finite(state: dict[str, Any]) -> bool:
    tensors = [
        t for part in ("generator", "discriminator") for t in state[part].values() if t.is_floating_point()
    ]
    return not tensors or bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


class CheckpointSaver:
    """``latest.pt`` every ``--save-latest-freq`` steps and at each epoch's end, ``epoch_<n>.pt`` every
    ``--save-epoch-freq`` epochs and after the last; written by the main process, never with NaN weights."""

    def __init__(self, model: Pix2PixModel, config: TrainConfig, dist: Distributed) -> None:
        self.model, self.config, self.dist = model, config, dist
        self.latest_at: Counters | None = None  # what latest.pt holds, once this run wrote it

    def step(self, counters: Counters) -> None:
        if counters.iteration % self.config.save_latest_freq == 0:
            self.save_latest(counters)

    def epoch_end(self, finished_epoch: int, counters: Counters) -> None:
        self.save_latest(counters)
        if finished_epoch % self.config.save_epoch_freq == 0 or finished_epoch == self.config.total_epochs:
            self.save(counters, f"epoch_{finished_epoch}.pt")

    def save_latest(self, counters: Counters) -> None:
        """Write ``latest.pt`` unless it already holds exactly this point of the run."""
        if self.latest_at != counters:
            self.save(counters, "latest.pt")
            self.latest_at = Counters(**asdict(counters))

    def save(self, counters: Counters, name: str) -> None:
        """Save a checkpoint, unless a weight of G or D is NaN or infinite (in any process): then stop."""
        path: Path = self.config.run_dir / name
        state = training_state(self.model, self.config, counters)
        if self.dist.agreed_max(int(not _weights_finite(state))):
            raise TrainingDiverged(
                f"the weights became non-finite (NaN or inf) at iteration {counters.iteration} "
                f"(epoch {counters.epoch}); {name} was not saved and the last good checkpoint "
                f"{path.parent / 'latest.pt'} is kept — try a lower --lr or --precision fp32"
            )
        if self.dist.is_main:
            save_checkpoint(state, path)
