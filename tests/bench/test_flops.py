"""Convolution FLOPs: one call against a hand count, and a whole step as it runs (G once, D three times)."""

from __future__ import annotations

import torch

from pix2pix_ilm.bench.flops import conv_calls, conv_flops, step_conv_gflop
from pix2pix_ilm.bench.profile import ModuleRanges
from pix2pix_ilm.bench.worker import bench_config, train_step
from pix2pix_ilm.cpu_speed import Conv2d, ConvTranspose2d

from .test_profile import CPU, D_FIRST, D_FORWARD, G_FIRST, G_FORWARD, TINY


def test_conv_flops_match_a_hand_count():
    conv, up = Conv2d(3, 4, 4, 2, 1), ConvTranspose2d(4, 3, 4, 2, 1)
    x = torch.randn(2, 3, 8, 8)
    out = conv(x)  # the matrix-product route counts as a convolution too
    assert conv_flops(conv, x, out) == (2 * 192 * 2 * 16, 2 * 192 * 2 * 16)  # weight gradient only
    x.requires_grad_(True)
    assert conv_flops(conv, x, conv(x))[1] == 2 * 2 * 192 * 2 * 16  # input and weight gradients
    up.requires_grad_(False)
    y = torch.randn(2, 4, 4, 4, requires_grad=True)
    assert conv_flops(up, y, up(y)) == (2 * 192 * 2 * 16, 2 * 192 * 2 * 16)  # input gradient only
    with torch.no_grad():
        assert conv_flops(up, y, up(y))[1] == 0


def test_module_ranges_count_the_flops_of_a_step_as_it_runs():
    """G once; D on the fake and real pairs as a batch of two, then on the fake pair with D frozen. Backward:
    weight and input gradients, but no input gradient for the first layer of G and of D in the D step (their
    inputs need none), and only input gradients for D in the G step (its weights are frozen)."""
    options = {k: TINY[k] for k in ("size", "netG", "netD", "ngf", "ndf", "batch_size", "seed", "device")}
    step = train_step(options, bench_config(options, ["instance", "instance"], {}), False, CPU)
    with ModuleRanges(step.modules) as ranges:
        step.run()
    assert ranges.conv_flops["fwd"] == G_FORWARD + 3 * D_FORWARD
    d_step = 2 * (2 * D_FORWARD - D_FIRST)  # a batch of two
    assert ranges.conv_flops["bwd"] == (2 * G_FORWARD - G_FIRST) + d_step + D_FORWARD
    # the bench's per-step count (no profiler) agrees, for the project's step and the eager baseline
    for is_baseline in (False, True):
        step = train_step(options, bench_config(options, ["instance", "instance"], {}), is_baseline, CPU)
        gflop = step_conv_gflop(step.run, step.modules)
        assert gflop == {"fwd": ranges.conv_flops["fwd"] / 1e9, "bwd": ranges.conv_flops["bwd"] / 1e9}


def test_each_call_is_found_once_with_the_gradients_the_step_needs():
    step = train_step(TINY, bench_config(TINY, ["instance", "instance"], {}), False, CPU)
    calls = conv_calls(step.run, {"G": step.modules[0], "D": step.modules[1]})
    g_convs = sum(isinstance(m, torch.nn.modules.conv._ConvNd) for m in step.modules[0].modules())
    d_convs = sum(isinstance(m, torch.nn.modules.conv._ConvNd) for m in step.modules[1].modules())
    g_calls = [c for c in calls if c["net"] == "G"]
    d_calls = [c for c in calls if c["net"] == "D"]
    assert len(g_calls) == g_convs and all(c["count"] == 1 and c["weight_grad"] for c in g_calls)
    assert not g_calls[0]["input_grad"]  # G's first layer reads the image: no input gradient
    assert all(c["input_grad"] for c in g_calls[1:])
    # D runs twice: on (fake, real) as a batch of two in the D step, on the fake pair with frozen weights
    d_step = [c for c in d_calls if c["input_shape"][0] == 2 * TINY["batch_size"]]
    g_step = [c for c in d_calls if c["input_shape"][0] == TINY["batch_size"]]
    assert len(d_step) == len(g_step) == d_convs
    assert all(c["weight_grad"] for c in d_step) and not any(c["weight_grad"] for c in g_step)
    assert not d_step[0]["input_grad"] and all(c["input_grad"] for c in d_step[1:] + g_step)
