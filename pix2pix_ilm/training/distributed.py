"""torchrun: which process this is, its device, and the few agreements the processes need."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist  # already loaded by torch itself


@dataclass
class Distributed:
    """This process's rank among ``world`` processes and its device; (0, 1) when run directly. The collective
    calls must be made by every process at the same point."""

    rank: int
    world: int
    device: torch.device

    @classmethod
    def set_up(cls, device: torch.device) -> Distributed:
        """Read torchrun's environment; with several processes, join the process group (gloo on CPU, nccl on
        CUDA, one GPU per local rank)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        if world > 1:
            if device.type == "cuda":
                device = torch.device("cuda", local_rank)
                torch.cuda.set_device(device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(rank, world, device)

    @property
    def is_main(self) -> bool:
        """The process that writes the run folder and reports."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def gather(self, value: Any) -> list[Any]:
        """``value`` of every process, by rank (collective)."""
        values: list[Any] = [value] * self.world
        if self.world > 1:
            dist.all_gather_object(values, value)
        return values

    def agreed_max(self, value: int) -> int:
        """The largest ``value`` over all processes (collective)."""
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())
