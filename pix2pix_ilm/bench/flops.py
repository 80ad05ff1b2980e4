"""Convolution FLOPs of a training step, counted analytically per call (formula: docs/bench.md)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn


def conv_flops(module: nn.modules.conv._ConvNd, x: torch.Tensor, out: torch.Tensor) -> tuple[int, int]:
    """(forward, backward) FLOPs of one convolution call, counted as the direct algorithm does them.

    Forward: 2·|W|·N·P, with |W| = C_out·C_in/groups·k_h·k_w and P the output positions H_out·W_out
    (a transposed convolution: the input positions H_in·W_in, each spreads one k_h×k_w patch). Backward:
    the same again for the input's gradient when the input requires one, and again for the weight's when the
    weight requires one: G's first layer, and D's first layer in the D step (its input is detached), get no
    input gradient; D's frozen weights in the G step get none. Bias gradients (a sum) are not counted.
    """
    spatial = module.weight.dim() - 2
    batch = x.shape[0] if x.dim() == spatial + 2 else 1
    positions = math.prod((x if module.transposed else out).shape[-spatial:])
    forward = 2 * module.weight.numel() * batch * positions
    if not (torch.is_grad_enabled() and out.requires_grad):
        return forward, 0
    return forward, forward * (int(x.requires_grad) + int(module.weight.requires_grad))


def step_conv_gflop(run: Callable[[], Any], roots: Iterable[nn.Module]) -> dict[str, float]:
    """GFLOP of the convolutions of one call of ``run`` (forward and backward), by forward hooks on every
    convolution in ``roots``."""
    counted = {"fwd": 0, "bwd": 0}

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        if inputs and isinstance(output, torch.Tensor):
            forward, backward = conv_flops(module, inputs[0], output)  # type: ignore[arg-type]
            counted["fwd"] += forward
            counted["bwd"] += backward

    convs = {m for root in roots for m in root.modules() if isinstance(m, nn.modules.conv._ConvNd)}
    handles = [m.register_forward_hook(hook) for m in convs]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return {phase: flops / 1e9 for phase, flops in counted.items()}
