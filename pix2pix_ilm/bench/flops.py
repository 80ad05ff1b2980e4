"""Convolution FLOPs of a training step, counted analytically per call (formula: docs/bench.md), and the
distinct convolution calls of a step that they are counted on."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from pix2pix_ilm.device import autocast_dtype


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


def conv_calls(run: Callable[[], Any], networks: dict[str, nn.Module]) -> list[dict[str, Any]]:
    """One call of ``run`` with a forward hook on every convolution of ``networks`` (name → module): the
    distinct calls in the order first seen, each with its layer (``net``, ``index`` in it, ``module``), its
    input's shape, strides, dtype and device, the autocast dtype, the gradients the step takes, its FLOPs
    (``flops_fwd``, ``flops_bwd``: :func:`conv_flops`) and how often it ran. No tensor is kept."""
    calls: dict[tuple, dict[str, Any]] = {}
    layers: dict[int, tuple[str, int, nn.modules.conv._ConvNd]] = {}
    for net_name, net in networks.items():
        convs = [m for m in net.modules() if isinstance(m, nn.modules.conv._ConvNd)]
        layers |= {id(m): (net_name, index, m) for index, m in enumerate(convs, 1)}

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        if not inputs or not isinstance(output, torch.Tensor):
            return
        x = inputs[0]
        net_name, index, conv = layers[id(module)]
        graph = torch.is_grad_enabled() and output.requires_grad
        call = {
            "net": net_name,
            "index": index,
            "input_shape": list(x.shape),
            "input_stride": list(x.stride()),
            "dtype": x.dtype,
            "device": x.device,
            "autocast": autocast_dtype(x.device.type),
            "input_grad": graph and x.requires_grad,
            "weight_grad": graph and conv.weight.requires_grad,
        }
        key = tuple(tuple(v) if isinstance(v, list) else v for v in call.values())
        if key not in calls:
            forward, backward = conv_flops(conv, x, output)
            calls[key] = call | {"module": conv, "count": 0, "out_shape": list(output.shape)}
            calls[key] |= {"flops_fwd": forward, "flops_bwd": backward}
        calls[key]["count"] += 1

    handles = [m.register_forward_hook(hook) for _, _, m in layers.values()]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return list(calls.values())


def step_conv_gflop(run: Callable[[], Any], roots: Iterable[nn.Module]) -> dict[str, float]:
    """GFLOP of the convolutions of one call of ``run`` (forward and backward) in the modules ``roots``."""
    calls = conv_calls(run, {str(number): root for number, root in enumerate(roots)})
    return {
        phase: sum(call[f"flops_{phase}"] * call["count"] for call in calls) / 1e9 for phase in ("fwd", "bwd")
    }
