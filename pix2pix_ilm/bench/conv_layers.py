"""``bench --profile``'s per-layer account of the convolutions: every distinct convolution call of one training
step, timed alone (forward; backward with the gradients the step takes) against the fp32 matrix-product peak,
so that the time the convolutions lose against the roofline has an address. Method: docs/bench.md
("Convolution layers").
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from pix2pix_ilm.bench.flops import conv_calls
from pix2pix_ilm.bench.probes import sync

Conv = nn.modules.conv._ConvNd
#: each part of a call is the best of this many runs (after one warm-up)
LAYER_REPEATS = 5


@contextlib.contextmanager
def _weight_grad(module: nn.Module, enabled: bool) -> Iterator[None]:
    """The layer's parameters require gradients as in the recorded call (D's are frozen in the G step)."""
    previous = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in previous:
        p.requires_grad_(enabled)
    try:
        yield
    finally:
        for p, flag in previous:
            p.requires_grad_(flag)


def _best_ms(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    fn()  # warm-up: kernel selection, weight layout caches
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 1000 * best


def time_call(call: dict[str, Any], device: torch.device, repeats: int) -> dict[str, Any]:
    """ms of the call's forward and of its backward (the gradients the step takes: input, weights or both,
    in one call, as the step's backward does; each the best of ``repeats``)."""
    module: Conv = call["module"]
    x = torch.empty_strided(call["input_shape"], call["input_stride"], dtype=call["dtype"], device=device)
    x.normal_().requires_grad_(call["input_grad"])
    amp = torch.autocast(device.type, dtype=call["autocast"], enabled=call["autocast"] is not None)
    wanted = ([x] if call["input_grad"] else []) + (list(module.parameters()) if call["weight_grad"] else [])
    with _weight_grad(module, call["weight_grad"]), amp, torch.set_grad_enabled(bool(wanted)):
        out = module(x)
        timings = {"fwd_ms": _best_ms(lambda: module(x), device, repeats), "bwd_ms": 0.0}
        if wanted:
            grad = functools.partial(
                torch.autograd.grad, out, wanted, torch.randn_like(out), retain_graph=True
            )
            timings["bwd_ms"] = _best_ms(grad, device, repeats)
    return timings


def layer_label(call: dict[str, Any]) -> str:
    """E.g. ``G 3 conv 128→256 1×64² → 32²`` (network, index of the layer in it, kind, channels, batch×input
    → output size)."""
    module: Conv = call["module"]
    kind = "convT" if module.transposed else "conv"
    shape, out = call["input_shape"], call["out_shape"]
    size = f"{shape[2]}²" if shape[2] == shape[3] else f"{shape[2]}×{shape[3]}"
    out_size = f"{out[2]}²" if out[2] == out[3] else f"{out[2]}×{out[3]}"
    return (
        f"{call['net']} {call['index']} {kind} {module.in_channels}→{module.out_channels} "
        f"{shape[0]}×{size} → {out_size}"
    )


def measure_layers(
    run: Callable[[], Any],
    networks: dict[str, nn.Module],
    device: torch.device,
    repeats: int = LAYER_REPEATS,
) -> list[dict[str, Any]]:
    """Per distinct convolution call of one ``run``: label, count per step, gradients, FLOPs and ms."""
    rows = []
    for call in conv_calls(run, networks):
        timed = time_call(call, device, repeats)
        count = call["count"]
        rows.append(
            {
                "layer": layer_label(call),
                "count": count,
                "input_grad": call["input_grad"],
                "weight_grad": call["weight_grad"],
                "gflop_fwd": call["flops_fwd"] / 1e9,
                "gflop_bwd": call["flops_bwd"] / 1e9,
                "gflop": (call["flops_fwd"] + call["flops_bwd"]) * count / 1e9,
                "ms": (timed["fwd_ms"] + timed["bwd_ms"]) * count,
            }
            | timed
        )
    return rows


def layer_table(rows: list[dict[str, Any]], peak_gflops: float | None) -> list[list[str]]:
    """Header and rows: forward and backward ms with % of the peak, ms per step, ms at the peak and ms
    lost; a totals row."""

    def timed(ms: float, gflop: float) -> str:
        share = f" ({1000 * gflop / ms / peak_gflops:.0%})" if peak_gflops and ms > 0 else ""
        return f"{ms:.2f}{share}"

    header = ["layer", "calls", "gradients", "GFLOP", "fwd ms", "bwd ms", "ms/step"]
    header += ["at peak", "lost"] if peak_gflops else []
    table = [header]
    for r in rows:
        grads = [
            name for name, needed in (("input", r["input_grad"]), ("weights", r["weight_grad"])) if needed
        ]
        at_peak = 1000 * r["gflop"] / peak_gflops if peak_gflops else 0.0
        line = [
            r["layer"],
            str(r["count"]),
            "+".join(grads) or "none",
            f"{r['gflop']:.2f}",
            timed(r["fwd_ms"], r["gflop_fwd"]),
            timed(r["bwd_ms"], r["gflop_bwd"]) if grads else "-",
            f"{r['ms']:.2f}",
        ]
        table.append(line + ([f"{at_peak:.2f}", f"{r['ms'] - at_peak:.2f}"] if peak_gflops else []))
    total_ms, total_gflop = sum(r["ms"] for r in rows), sum(r["gflop"] for r in rows)
    total = ["all convolutions", str(sum(r["count"] for r in rows)), "", f"{total_gflop:.2f}", "", ""]
    total.append(f"{total_ms:.2f}")
    if peak_gflops:
        at_peak = 1000 * total_gflop / peak_gflops
        total += [f"{at_peak:.2f}", f"{total_ms - at_peak:.2f}"]
    table.append(total)
    return table
