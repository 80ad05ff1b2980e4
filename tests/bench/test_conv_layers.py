"""The per-layer convolution account: its FLOPs add up to the step's count as the profiler's hooks take it,
each row's parts add up, timing a layer leaves it as it was, and the table's arithmetic."""

from __future__ import annotations

import pytest
import torch

from pix2pix_ilm.bench.conv_layers import layer_table, measure_layers, time_call
from pix2pix_ilm.bench.flops import conv_calls
from pix2pix_ilm.bench.profile import ModuleRanges
from pix2pix_ilm.bench.worker import bench_config, train_step

from .test_profile import TINY

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def step():
    config = bench_config(TINY, ["instance", "instance"], {})
    return train_step(TINY, config, False, CPU)


def _networks(step) -> dict[str, torch.nn.Module]:
    return {"G": step.modules[0], "D": step.modules[1]}


def test_layer_flops_add_up_to_the_step(step):
    rows = measure_layers(step.run, _networks(step), CPU, repeats=1)
    with ModuleRanges(step.modules) as ranges:  # the profiler's own per-call count, by other hooks
        step.run()
    counted = ranges.conv_flops["fwd"] + ranges.conv_flops["bwd"]
    assert sum(r["gflop"] for r in rows) == pytest.approx(counted / 1e9)
    for r in rows:
        assert r["fwd_ms"] > 0
        assert r["bwd_ms"] > 0 and (r["input_grad"] or r["weight_grad"])
        # the backward's FLOPs: one forward's per gradient
        parts = int(r["input_grad"]) + int(r["weight_grad"])
        assert r["gflop_bwd"] == pytest.approx(parts * r["gflop_fwd"])
        assert r["ms"] == pytest.approx((r["fwd_ms"] + r["bwd_ms"]) * r["count"])


def test_timing_leaves_the_layer_as_it_was(step):
    calls = conv_calls(step.run, _networks(step))
    frozen = next(c for c in calls if c["net"] == "D" and not c["weight_grad"])
    module = frozen["module"]
    assert all(p.requires_grad for p in module.parameters())  # frozen only inside the G step
    before = [p.detach().clone() for p in module.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in module.parameters()]
    timed = time_call(frozen, CPU, repeats=1)
    assert timed["fwd_ms"] > 0 and timed["bwd_ms"] > 0
    assert all(p.requires_grad for p in module.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))
    # timed with autograd.grad: nothing accumulated in .grad
    for grad, p in zip(grads, module.parameters(), strict=True):
        assert (p.grad is None) if grad is None else torch.equal(grad, p.grad)


def test_table_totals_and_peak_columns():
    rows = [
        {"layer": "G 1 conv 3→4", "count": 1, "input_grad": False, "weight_grad": True, "gflop": 2.0,
         "gflop_fwd": 1.0, "gflop_bwd": 1.0, "fwd_ms": 10.0, "bwd_ms": 20.0, "ms": 30.0},
        {"layer": "D 2 conv 4→8", "count": 2, "input_grad": True, "weight_grad": True, "gflop": 6.0,
         "gflop_fwd": 1.0, "gflop_bwd": 2.0, "fwd_ms": 10.0, "bwd_ms": 10.0, "ms": 40.0},
    ]  # fmt: skip
    table = layer_table(rows, peak_gflops=100.0)
    assert table[0][-2:] == ["at peak", "lost"]
    assert table[1][2:6] == ["weights", "2.00", "10.00 (100%)", "20.00 (50%)"]
    assert table[2][2:6] == ["input+weights", "6.00", "10.00 (100%)", "10.00 (200%)"]
    assert table[-1] == ["all convolutions", "3", "", "8.00", "", "", "70.00", "80.00", "-10.00"]
    assert layer_table(rows, None)[0][-1] == "ms/step"
