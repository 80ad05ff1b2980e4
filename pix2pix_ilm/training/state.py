"""What a training checkpoint holds, when it is written, and how a run resumes from it: the counters and
every process's RNG stream (``rng_cpu_ranks``; ``rng_cpu``, rank 0's, is what older versions read) make
``--continue`` reproduce an uninterrupted run exactly, also under torchrun."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
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


def rng_states(dist: Distributed) -> dict[str, list[torch.Tensor]]:
    """Every process's global RNG state, by rank: ``rng_cpu_ranks`` (and ``rng_cuda_ranks``); a collective."""
    own = {"rng_cpu_ranks": torch.get_rng_state()}
    if dist.device.type == "cuda":
        own["rng_cuda_ranks"] = torch.cuda.get_rng_state(dist.device)
    states = dist.gather(own)
    return {key: [s[key] for s in states] for key in own}


def restore_rng_state(state: dict[str, Any], dist: Distributed) -> bool:
    """Continue this process's saved RNG stream; False when the checkpoint lacks it (an older checkpoint of
    rank 0's only, or another number of processes)."""
    ranks = state.get("rng_cpu_ranks")
    if isinstance(ranks, list) and len(ranks) == dist.world:
        cpu, cuda = ranks[dist.rank], (state.get("rng_cuda_ranks") or [None] * dist.world)[dist.rank]
    elif dist.rank == 0:
        cpu, cuda = state["rng_cpu"], state.get("rng_cuda")
    else:
        return False
    torch.set_rng_state(cpu)
    if cuda is not None and dist.device.type == "cuda":
        torch.cuda.set_rng_state(cuda, dist.device)
    return True


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
    """``latest.pt`` every ``--save-latest-freq`` steps, at the first epoch end ``--save-latest-minutes`` after
    the last save, and at the end; ``epoch_<n>.pt`` every ``--save-epoch-freq`` epochs and after the last;
    written by the main process, never with NaN weights."""

    def __init__(self, model: Pix2PixModel, config: TrainConfig, dist: Distributed) -> None:
        self.model, self.config, self.dist = model, config, dist
        self.latest_at: Counters | None = None  # what latest.pt holds, once this run wrote it
        self.saved_time = time.monotonic()  # of the last save (or the start)

    def step(self, counters: Counters) -> None:
        if counters.iteration % self.config.save_latest_freq == 0:
            self.save_latest(counters)

    def epoch_end(self, finished_epoch: int, counters: Counters) -> None:
        """``latest.pt`` when due, and when this epoch is kept the same file as ``epoch_<n>.pt`` (serialised
        once). Processes agree on "due" (the clock of the main process decides)."""
        freq, total = self.config.save_epoch_freq, self.config.total_epochs
        keep = (freq > 0 and finished_epoch % freq == 0) or finished_epoch == total
        overdue = time.monotonic() - self.saved_time >= 60 * self.config.save_latest_minutes
        if keep or self.dist.agreed_max(int(overdue and self.dist.is_main)):
            self.save_latest(counters, also=(f"epoch_{finished_epoch}.pt",) if keep else ())

    def save_latest(self, counters: Counters, also: tuple[str, ...] = ()) -> None:
        """Write ``latest.pt`` (and ``also``) with everything ``--continue`` needs, unless it already holds this
        point of the run; a NaN or infinite weight of G or D (in any process) stops the run instead."""
        if self.latest_at == counters and not also:
            return
        rng = rng_states(self.dist)
        state = self.model.state_dict() | {
            "format": CHECKPOINT_FORMAT,
            "config": config_to_dict(self.config),
            "counters": asdict(counters),
            **rng,
            **{key.removesuffix("_ranks"): ranks[0] for key, ranks in rng.items()},  # rng_cpu: rank 0's
        }
        path = self.config.run_dir / "latest.pt"
        if self.dist.agreed_max(int(not _weights_finite(state))):
            raise TrainingDiverged(
                f"the weights became non-finite (NaN or inf) at iteration {counters.iteration} "
                f"(epoch {counters.epoch}); it was not saved and the last good checkpoint {path} is kept — "
                "try a lower --lr or --precision fp32"
            )
        if self.dist.is_main:
            save_checkpoint(state, path, also=[path.parent / other for other in also])
        self.latest_at = Counters(**asdict(counters))
        self.saved_time = time.monotonic()
