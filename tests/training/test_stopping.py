"""Stopping a run: SIGINT finishes the step and saves; NaN stops and keeps the last good checkpoint."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from pix2pix_ilm.cli import main
from pix2pix_ilm.training.checkpoint import load_checkpoint, save_checkpoint
from pix2pix_ilm.training.stopping import DIVERGED_EXIT_CODE
from tests.faults import (
    CHILD_ENV,
    cli_error,
    good_pairs,
    iterations,
    temp_files,
    train_args,
    trained_run,
    write_folder,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sigint_finishes_the_step_saves_and_exits_cleanly(pairs, tmp_path):
    root = write_folder(tmp_path / "data", "train", good_pairs(pairs, "train1", "train2", "train3", "train4"))
    ckpt = tmp_path / "ckpt"
    log = ckpt / "run" / "loss_log.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pix2pix_ilm", *train_args(root, ckpt, "run", "--n-epochs", "40")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=CHILD_ENV,
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 3:
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.02)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err  # the shell's convention for "ended by SIGINT"
    match = re.search(r"SIGINT: stopped after iteration (\d+); saved (.*latest\.pt)", err)
    assert match and "Traceback" not in err, err
    stopped = int(match.group(1))
    assert 3 <= stopped < 160
    state = load_checkpoint(ckpt / "run" / "latest.pt")
    assert state["counters"]["iteration"] == stopped
    assert iterations(ckpt / "run")[-1] == stopped  # the step in progress was finished and logged
    assert temp_files(ckpt) == []


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(pairs, tmp_path, capsys):
    root, ckpt, run, before = trained_run(pairs, tmp_path)
    msg = cli_error(
        capsys,
        *train_args(root, ckpt, "run", "--continue", "--n-epochs", "5", "--lr", "1e30"),
        exit_code=DIVERGED_EXIT_CODE,
    )
    assert msg.startswith("pix2pix-ilm train: diverged: ") and DIVERGED_EXIT_CODE != 2  # not a usage error
    match = re.search(r"non-finite loss .*=(nan|inf) at iteration (\d+) \(epoch \d+\)", msg)
    assert match and int(match.group(2)) > 2, msg
    assert "latest.pt is kept" in msg
    assert (run / "latest.pt").read_bytes() == before
    state = load_checkpoint(run / "latest.pt")
    for part in ("generator", "discriminator"):
        assert all(bool(torch.isfinite(t).all()) for t in state[part].values() if t.is_floating_point())


def test_non_finite_weights_are_never_saved_or_used(pairs, tmp_path, capsys):
    """Batch norm's running variance is not used by a training step, so an infinite one leaves the losses
    finite; it would ruin every test output. Neither training nor test may save or use it."""
    root = write_folder(tmp_path / "data", "train", good_pairs(pairs, "train1", "train2"))
    write_folder(root, "test", good_pairs(pairs, "test1"))
    ckpt = tmp_path / "ckpt"
    run = ckpt / "run"
    assert main(train_args(root, ckpt, "run", "--netG-norm", "batch")) == 0
    state = load_checkpoint(run / "latest.pt")
    key = next(k for k in state["generator"] if k.endswith("running_var"))
    state["generator"][key].fill_(float("inf"))
    save_checkpoint(state, run / "latest.pt")
    before = (run / "latest.pt").read_bytes()
    msg = cli_error(
        capsys,
        "test",
        "--name",
        "run",
        "--dataroot",
        str(root),
        "--checkpoints-dir",
        str(ckpt),
        "--results-dir",
        str(tmp_path / "res"),
    )
    assert "NaN or infinite values" in msg and key in msg
    msg = cli_error(
        capsys,
        *train_args(root, ckpt, "run", "--continue", "--n-epochs", "2", "--save-latest-freq", "1"),
        exit_code=DIVERGED_EXIT_CODE,
    )
    assert "the weights became non-finite (NaN or inf) at iteration 3" in msg and "latest.pt" in msg
    assert (run / "latest.pt").read_bytes() == before
    assert temp_files(ckpt) == []
