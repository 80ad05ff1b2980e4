"""``table6 --budget-min`` and the disk check: the projection by hand, a real table finished inside its budget,
and refusals before (disk) or after (budget) the first minute, with their numbers."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from pix2pix_ilm.cli import main
from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.evaluation import table6, table6_budget
from pix2pix_ilm.evaluation.table6_budget import BudgetPlanner, Measured, measure, project
from pix2pix_ilm.training.checkpoint import load_checkpoint
from tests.evaluation.test_table6 import LONG, children, tiny_facades  # noqa: F401 (fixture)


def test_projection_by_hand():
    # Two runs at 100 and 40 of 3 x 20 steps, 2 steps/s; two more wait, each 5 s of start-up and 30 s of steps.
    active = [Measured(100, 20.0, 2.0, 5.0), Measured(40, 20.0, 2.0, 5.0)]
    assert project(active, 0, 2, 10, 2.0, 5.0, restart=False) == pytest.approx((200 - 40) / 2)
    # slots free at 50 s and 80 s: the pending runs end at 50 + 5 + 100 and 80 + 5 + 100
    assert project(active, 2, 2, 10, 2.0, 5.0, restart=False) == pytest.approx(185)
    assert project(active, 2, 2, 10, 2.0, 5.0, restart=True) == pytest.approx(190)  # + a new start-up
    assert project(active, 1, 3, 10, 2.0, 5.0, restart=False) == pytest.approx(105)  # a free third slot


def _running(
    tmp_path: Path, name: str, entries: list[tuple[int, float]], steps_per_epoch: int
) -> TrainConfig:
    run = TrainConfig(name=name, checkpoints_dir=str(tmp_path), n_epochs=30, n_epochs_decay=30)
    run.run_dir.mkdir(parents=True)
    lines = [
        json.dumps({"iteration": i, "time": t, "epoch_progress": i / steps_per_epoch, "G_L1": 1.0})
        for i, t in entries
    ]
    (run.run_dir / "loss_log.jsonl").write_text("\n".join(lines) + "\n")
    return run


def test_the_planner_keeps_fits_or_refuses_from_the_logs(tmp_path, capsys):
    now = time.time()
    # 10 steps/s from the log (steps 1 and 101, 10 s apart), 100 steps per epoch, 60 epochs: 6,000 steps;
    # started 70 s ago, its last entry 12 s into training: 58 s of start-up.
    run = _running(tmp_path, "a", [(1, 2.0), (101, 12.0)], 100)
    started = now - 70
    assert measure(run, started).rate == pytest.approx(10.0)
    assert measure(run, started).steps_per_epoch == pytest.approx(100)
    assert measure(run, started).startup == pytest.approx(58, abs=2)
    assert BudgetPlanner(60, started, [run], 1, 0.0)([(run, started)], now) is None  # 590 s of 54 min: kept
    planner = BudgetPlanner(5, started, [run], 1, 30.0)  # 300 s - 30 reserve - 70 elapsed - 30 scoring
    fitted = planner([(run, started)], now)
    # 170 s: a new start-up (58 s), then 112 s at 10 steps/s: 12 epochs, split as 30 : 30
    assert (fitted[0].n_epochs, fitted[0].n_epochs_decay) == (6, 6)
    assert planner.plan["epochs"] == [6, 6] and planner.plan["requested_epochs"] == [30, 30]
    assert planner([(run, started)], now + 1) is None  # it decides once
    with pytest.raises(UsageError, match=r"--budget-min 0\.5 is too short: 60 epochs project .* min"):
        BudgetPlanner(0.5, started, [run], 1, 10.0)([(run, started)], now)
    assert "steps/s per run" in capsys.readouterr().err
    # Before the window has passed, or before two log entries, it waits.
    assert BudgetPlanner(5, now, [run], 1, 0.0)([(run, now)], now + 5) is None
    young = _running(tmp_path, "b", [(1, 2.0)], 100)
    assert BudgetPlanner(5, started, [young], 1, 0.0)([(young, started)], now) is None


def test_a_table_finishes_inside_its_budget(facades_dir, lpips_backbone, tmp_path, capsys, children):  # noqa: F811
    data = tiny_facades(facades_dir, tmp_path / "facades")
    out = tmp_path / "table6"
    args = ["table6", "--dataroot", str(data), "--out", str(out), "--eval-limit", "2"]
    args += ["--lpips-backbone", str(lpips_backbone), "--jobs", "2", "--seeds", "0", "1"]
    args += ["--configs", "in_in", "ilmin_in", *LONG, "--budget-min", "2"]  # 2000 epochs: 10 h
    assert main(args) == 0
    # The plan fits the budget less its reserve (the wall time itself depends on other work on the machine).
    plan = json.loads((out / table6_budget.PLAN_FILE).read_text())
    assert plan["projected_min"] <= 0.9 * 2
    err = capsys.readouterr().err
    assert re.search(r"budget: [\d.]+ steps/s per run with 2 at a time, .* 2000 epochs project", err), err
    fitted = re.search(r"budget: fitted to (\d+) \+ 0 epochs instead of 2000 \+ 0", err)
    assert fitted, err
    table = (out / "table6.md").read_text()
    assert f"Budget 2 min: 2000 + 0 epochs fitted to {fitted.group(1)} + 0 epochs" in table
    assert f"n_epochs={fitted.group(1)}" in table.splitlines()[0]
    summary = json.loads((out / "table6.json").read_text())
    assert len(summary["runs"]) == 4 and not summary["missing"]
    # Every run trained the fitted epochs, not the 2000 asked for.
    for run in (out / "checkpoints" / entry["name"] for entry in summary["runs"]):
        assert json.loads((run / "config.json").read_text())["config"]["n_epochs"] == int(fitted.group(1))
        assert load_checkpoint(run / "latest.pt")["counters"]["epoch"] == int(fitted.group(1)) + 1, run.name
    # The same command again: the plan stands, nothing is trained again.
    count = len(children)
    assert main(args) == 0
    assert len(children) == count and "trained already" in capsys.readouterr().err


def test_checkpoints_that_do_not_fit_on_the_disk_are_refused_before_training(
    facades_dir,
    lpips_backbone,
    tmp_path,
    monkeypatch,
    children,  # noqa: F811
):
    data = tiny_facades(facades_dir, tmp_path / "facades")
    real = shutil.disk_usage
    monkeypatch.setattr(table6_budget.shutil, "disk_usage", lambda p: real(p)._replace(free=10_000))
    args = ["table6", "--dataroot", str(data), "--out", str(tmp_path / "t6"), *LONG]
    args += ["--lpips-backbone", str(lpips_backbone), "--set", "save_epoch_freq=100"]
    with pytest.raises(UsageError, match=r"checkpoints need about \d+ MiB and .* has 0\.0095 MiB free"):
        table6.run_table6(_config(args))
    assert children == []


def _config(args: list[str]):
    from pix2pix_ilm.cli import build_parser
    from pix2pix_ilm.evaluation.options import Table6Config
    from pix2pix_ilm.flags import dataclass_from_args

    return dataclass_from_args(Table6Config, build_parser().parse_args(args))
