"""The training step as one CUDA graph (``--cuda-graph``): ``Pix2PixModel.optimize_parameters`` itself, run
eagerly for a few steps, then captured once and replayed with the batch copied into its static inputs.
Why it works and what it needs (capturable Adam, a learning-rate tensor, the CUDA RNG): docs/gpu.md."""

from __future__ import annotations

from collections.abc import Callable

import torch

from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.models.pix2pix import Pix2PixModel

WARMUP_STEPS = 3  # eager steps before the capture: Adam's state, cuDNN's choices and the allocator settle


def cuda_graph_problem(config: TrainConfig, device: torch.device, world: int) -> str | None:
    """Why this run's step cannot be captured, or None."""
    if device.type != "cuda":
        return "it needs a CUDA device"
    if config.compile:
        return "--compile compiles the step instead"
    if config.gan_mode == "wgangp":
        return "--gan-mode wgangp differentiates twice"
    if world > 1:
        return "under torchrun the gradients are averaged between processes"
    return None


def resolve_cuda_graph(config: TrainConfig, device: torch.device, world: int) -> str:
    """``--cuda-graph`` as it will run: on or off (``on`` where it cannot apply is a usage error)."""
    problem = cuda_graph_problem(config, device, world)
    if config.cuda_graph == "on" and problem:
        raise UsageError(f"--cuda-graph on: {problem}; use --cuda-graph auto or off")
    return "off" if config.cuda_graph == "off" or problem else "on"


class TrainingStep:
    """One training step as the loop calls it: ``model.optimize_parameters``, or with ``captured`` the same
    eagerly for :data:`WARMUP_STEPS` steps, then one CUDA graph of it, replayed. Replayed, the losses and
    ``model.last_visuals`` are the graph's output tensors, overwritten by the next step: read them (as the
    reporter does) only when needed."""

    def __init__(self, model: Pix2PixModel, captured: bool, warmup: int = WARMUP_STEPS) -> None:
        self.model, self.captured, self.warmup = model, captured, warmup
        self.eager_steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: tuple[torch.Tensor, torch.Tensor] = ()  # type: ignore[assignment]
        self.losses: dict[str, torch.Tensor] = {}

    def __call__(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.captured:
            return self.model.optimize_parameters(real_a, real_b)
        if self.graph is None and self.eager_steps < self.warmup:
            self.eager_steps += 1
            return _on_side_stream(lambda: self.model.optimize_parameters(real_a, real_b))
        if self.graph is None:
            self._capture(real_a, real_b)
        for static, batch in zip(self.inputs, (real_a, real_b), strict=True):
            static.copy_(batch, non_blocking=True)
        self.graph.replay()
        return self.losses

    def _capture(self, real_a: torch.Tensor, real_b: torch.Tensor) -> None:
        """Record one step on the static inputs; it runs nothing (the replay after it takes the step)."""
        self.inputs = (self.model.prepare(real_a).clone(), self.model.prepare(real_b).clone())
        torch.cuda.synchronize(self.model.device)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: a DataLoader's pin-memory thread may allocate while this thread captures.
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.losses = self.model.optimize_parameters(*self.inputs)


def _on_side_stream(step: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``step()`` on a side stream, as warm-up before a capture must run (torch's CUDA graph notes)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        losses = step()
    torch.cuda.current_stream().wait_stream(stream)
    return losses
