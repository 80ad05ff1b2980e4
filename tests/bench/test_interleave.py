"""Interleaved rounds: the order rotates, disturbed rounds are made again, failures are kept apart, and the
paired ratios and their intervals are the numbers computed by hand."""

from __future__ import annotations

import math

import pytest

from pix2pix_ilm.bench import interleave
from pix2pix_ilm.bench.interleave import (
    ContestantFailed,
    RemoteContestant,
    all_resolved,
    paired_ratio,
    run_rounds,
)
from pix2pix_ilm.bench.report import roofline_lines
from pix2pix_ilm.bench.runner import MATMUL, _add_roofline, _finish_matmul, _group_pairs, _ilm_costs


class Scripted:
    """A contestant whose blocks are given in advance; it logs the order in which it was asked."""

    def __init__(self, name: str, blocks: list[dict], log: list[str]) -> None:
        self.name, self.blocks, self.log = name, list(blocks), log

    def block(self) -> dict:
        self.log.append(self.name)
        if not self.blocks:
            raise ContestantFailed(f"{self.name} died")
        return self.blocks.pop(0)

    def finish(self) -> dict:
        return {}

    def close(self) -> None:
        pass


def _blocks(*seconds: float, wait: float = 0.0) -> list[dict]:
    return [{"seconds": s, "cpu_wait": wait} for s in seconds]


def test_rounds_rotate_the_order_and_keep_blocks_per_round():
    log: list[str] = []
    contestants = {k: Scripted(k, _blocks(1, 2, 3), log) for k in "abc"}
    kept, failed, discarded = run_rounds(contestants, rounds=3, retries=0)
    assert log == list("abc" + "bca" + "cab")  # each contestant goes first once
    assert kept == {k: _blocks(1, 2, 3) for k in "abc"} and failed == {} and discarded == 0


def test_a_disturbed_round_is_made_again_up_to_the_retries():
    log: list[str] = []
    a = Scripted("a", _blocks(1) + _blocks(9, wait=0.5) + _blocks(2) + _blocks(8, wait=0.5), log)
    b = Scripted("b", _blocks(1, 9, 2, 3), log)
    kept, _, discarded = run_rounds({"a": a, "b": b}, rounds=3, retries=1)
    # round 2 waited for a CPU half of its time: dropped for both; the next disturbed one is kept (no retries left)
    assert discarded == 1
    assert [blk["seconds"] for blk in kept["a"]] == [1, 2, 8]
    assert [blk["seconds"] for blk in kept["b"]] == [1, 2, 3]


def test_a_failing_contestant_is_recorded_and_the_others_go_on():
    log: list[str] = []
    kept, failed, _ = run_rounds(
        {"ok": Scripted("ok", _blocks(1, 1, 1), log), "bad": Scripted("bad", _blocks(1), log)}, 3, 0
    )
    assert failed == {"bad": "bad died"}
    assert len(kept["ok"]) == 3 and len(kept["bad"]) == 1  # the rounds it took part in stay paired


def test_paired_ratio_is_the_geometric_mean_with_a_t_interval():
    slow, fast = _blocks(2.0, 3.3, 4.4), _blocks(1.0, 3.0, 4.0)
    logs = [math.log(2.0), math.log(1.1), math.log(1.1)]
    mean = sum(logs) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t(0.975, 2 degrees of freedom)
    out = paired_ratio(slow, fast)
    assert out["ratio"] == pytest.approx(math.exp(mean))
    assert (out["low"], out["high"]) == (
        pytest.approx(math.exp(mean - half)),
        pytest.approx(math.exp(mean + half)),
    )
    assert out["n"] == 3 and out["too_wide"]
    steady = paired_ratio(_blocks(1.01, 1.02, 1.01, 1.02), _blocks(1.0, 1.0, 1.0, 1.0))
    assert steady["low"] < steady["ratio"] < steady["high"] < 1.03 and not steady["too_wide"]
    one = paired_ratio(_blocks(2.0), _blocks(1.0))
    assert one["ratio"] == pytest.approx(2.0) and one["low"] is None and one["too_wide"]
    assert paired_ratio([], _blocks(1.0)) is None


def test_ilm_cost_pairs_the_same_rounds_and_pools_the_baseline_over_groups():
    plain, ilm = "instance/instance", "ilm_in/ilm_in"
    groups = [
        {("baseline", plain): _blocks(1.0), ("baseline", ilm): _blocks(1.2), ("x", plain): _blocks(1.0)},
        {("baseline", plain): _blocks(2.0), ("baseline", ilm): _blocks(2.4), ("y", ilm): _blocks(5.0)},
    ]
    costs = _ilm_costs(groups, [plain, ilm])
    assert set(costs) == {"baseline"}  # x and y lack the other norm pair
    assert costs["baseline"][ilm]["ratio"] == pytest.approx(1.2) and costs["baseline"][ilm]["n"] == 2


def test_rounds_go_on_until_resolved_or_the_limit():
    log: list[str] = []
    many = [1.0 + 0.01 * (i % 3) for i in range(20)]
    enough_after_5 = lambda blocks: len(blocks["a"]) >= 5  # noqa: E731
    contestants = {k: Scripted(k, _blocks(*many), log) for k in "ab"}
    kept, _, _ = run_rounds(contestants, rounds=2, retries=0, resolved=enough_after_5, max_rounds=10)
    assert len(kept["a"]) == len(kept["b"]) == 5
    contestants = {k: Scripted(k, _blocks(*many), log) for k in "ab"}
    kept, _, _ = run_rounds(contestants, rounds=2, retries=0, resolved=lambda blocks: False, max_rounds=7)
    assert len(kept["a"]) == 7  # the limit
    contestants = {k: Scripted(k, _blocks(*many), log) for k in "ab"}
    kept, _, _ = run_rounds(contestants, rounds=3, retries=0, resolved=lambda blocks: True, max_rounds=7)
    assert len(kept["a"]) == 3  # never fewer than --repeats


def test_all_resolved_needs_every_pair_narrower_than_two_percent():
    steady = {"a": _blocks(2.0, 2.02, 1.98, 2.0), "b": _blocks(1.0, 1.01, 0.99, 1.0)}
    noisy = steady | {"c": _blocks(1.0, 1.3, 0.8, 1.1)}
    assert all_resolved([("a", "b")])(steady)
    assert not all_resolved([("a", "b"), ("a", "c")])(noisy)
    assert all_resolved([("a", "b"), ("a", "gone")])(steady)  # a missing contestant holds nothing up


def test_a_group_reports_baseline_ilm_and_roofline_ratios():
    plain, ilm = "instance/instance", "ilm_in/ilm_in"
    keys = [("baseline", plain), ("baseline", ilm), ("p", plain), ("p", ilm), MATMUL]
    assert set(_group_pairs(keys)) == {
        (("baseline", ilm), ("baseline", plain)),
        (("p", ilm), ("p", plain)),
        (("baseline", plain), ("p", plain)),
        (("baseline", ilm), ("p", ilm)),
        (MATMUL, ("p", plain)),
        (MATMUL, ("p", ilm)),
    }


def test_roofline_share_pairs_each_step_block_with_the_products_of_its_round():
    """share_i = (conv GFLOP per block ÷ t_step,i) ÷ (product GFLOP per block ÷ t_matmul,i): a machine that
    runs everything half as fast in round 2 leaves the share unchanged."""
    plain = "instance/instance"
    products = [{"seconds": 1.0, "gflop": 100.0}, {"seconds": 2.0, "gflop": 100.0}]
    groups = [
        {("baseline", plain): _blocks(2.0, 4.0), ("x", plain): _blocks(1.0, 2.0), MATMUL: products},
        {("baseline", plain): _blocks(2.0), MATMUL: products[:1]},
    ]
    results = {
        "baseline": {plain: {"conv_gflop_per_step": 25.0}},
        "x": {plain: {"conv_gflop_per_step": 25.0}},
    }
    _add_roofline(results, groups, iters=2, product_gflop=100.0)  # 50 conv GFLOP per block
    x, base = results["x"][plain]["roofline"], results["baseline"][plain]["roofline"]
    assert x["ratio"] == pytest.approx(0.5) and x["low"] == pytest.approx(0.5) and x["n"] == 2
    assert base["ratio"] == pytest.approx(0.25) and base["n"] == 3  # pooled over both groups
    assert not x["too_wide"]


def test_roofline_pairs_only_the_rounds_both_have():
    """A product worker that died after one round: the step's later blocks have no partner and are left out."""
    plain = "instance/instance"
    groups = [{("x", plain): _blocks(1.0, 1.0, 1.0), MATMUL: [{"seconds": 1.0, "gflop": 100.0}]}]
    results = {"x": {plain: {"conv_gflop_per_step": 50.0}}}
    _add_roofline(results, groups, iters=1, product_gflop=100.0)
    assert results["x"][plain]["roofline"]["ratio"] == pytest.approx(0.5)
    assert results["x"][plain]["roofline"]["n"] == 1 and results["x"][plain]["roofline"]["low"] is None


def test_a_failed_matrix_product_is_reported_and_the_probe_stands_in():
    failed = _finish_matmul("RuntimeError: out of memory", [])
    assert failed == {"error": "RuntimeError: out of memory"}
    result = {"conv_gflop_per_step": 50.0, "median": 2.0, "min": 1.9, "max": 2.1}
    report = {
        "machine": {"matmul_gflops": {"fp32": 200.0}},
        "matmul_in_rounds": failed,
        "train": {"default": {"instance/instance": result}},
    }
    lines = roofline_lines(report)
    assert "the matrix product in the rounds failed: RuntimeError: out of memory" in lines[0]
    assert lines[1].endswith("= 100.0 GFLOP/s = 50% of the fp32 matrix-product rate (probe)")
    assert _finish_matmul(None, []) is None


def test_the_matrix_product_worker_answers_blocks():
    """``bench --worker`` with the matmul task: a calibrated block of products, its GFLOP, then its figures."""
    job = {"task": "matmul", "path": "matmul", "norms": ["fp32"], "options": {"device": "cpu"}}
    contestant = RemoteContestant(job)
    first, second = contestant.block(), contestant.block()
    figures = contestant.finish()
    assert figures["size"] == 2048 and figures["products_per_block"] >= 1
    assert figures["gflop_per_block"] == pytest.approx(2 * 2048**3 * figures["products_per_block"] / 1e9)
    for block in (first, second):
        assert block["seconds"] > 0 and block["gflop"] == figures["gflop_per_block"]


def test_a_worker_that_cannot_start_reports_why(monkeypatch):
    job = {"task": "train", "path": "default", "norms": ["instance", "no_such_norm"], "options": {}}
    with pytest.raises(ContestantFailed) as err:
        RemoteContestant(job)
    assert "Error" in str(err.value)
    assert interleave.measure_once(job, in_process=False)["error"] == str(err.value)


def test_any_program_that_speaks_the_protocol_is_a_contestant():
    """scripts/compare_commits.py runs another checkout's step through this: ready, then one answer a block."""
    import sys

    code = (
        "import json, sys\n"
        "print('a library says hello')\n"
        "print(json.dumps({'ready': True}), flush=True)\n"
        "for n, line in enumerate(sys.stdin, 1):\n"
        "    print(json.dumps({'seconds': float(n), 'cpu_wait': None}), flush=True)\n"
    )
    contestant = RemoteContestant({}, command=[sys.executable, "-c", code])
    kept, failed, _ = run_rounds({("x", "y"): contestant}, rounds=2, retries=0)
    contestant.close()
    assert failed == {} and [b["seconds"] for b in kept[("x", "y")]] == [1.0, 2.0]
