"""Stopping a run: SIGINT finishes the step and saves; NaN stops and keeps the last good checkpoint."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from pix2pix_ilm.cli import main
from pix2pix_ilm.training.checkpoint import load_checkpoint, save_checkpoint
from pix2pix_ilm.training.stopping import DIVERGED_EXIT_CODE
from tests.faults import (
    cli_error,
    good_pairs,
    iterations,
    start_paused_training,
    temp_files,
    train_args,
    trained_run,
    wait_for_file,
    write_folder,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _interrupted_at_step_3(pairs, tmp_path: Path, *extra: str) -> tuple[Path, Path, subprocess.Popen]:
    """A training child holding still after logging step 3, which has taken one SIGINT: (checkpoints, the
    pause flag, the child)."""
    root = write_folder(tmp_path / "data", "train", good_pairs(pairs, "train1", "train2", "train3", "train4"))
    ckpt, flag = tmp_path / "ckpt", tmp_path / "pause"
    proc = start_paused_training(train_args(root, ckpt, "run", *extra), 3, flag)
    wait_for_file(flag.with_suffix(".paused"), proc)
    proc.send_signal(signal.SIGINT)
    wait_for_file(flag.with_suffix(".signalled"), proc)
    return ckpt, flag, proc


def test_sigint_finishes_the_step_saves_and_exits_cleanly(pairs, tmp_path):
    """SIGINT lands while step 3 is in progress (the child holds still after logging it): the step is finished,
    saved, and the run exits."""
    ckpt, flag, proc = _interrupted_at_step_3(pairs, tmp_path, "--n-epochs", "40")
    flag.with_suffix(".go").touch()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err  # the shell's convention for "ended by SIGINT"
    assert "SIGINT: stopped after iteration 3; saved " in err and "Traceback" not in err, err
    assert load_checkpoint(ckpt / "run" / "latest.pt")["counters"]["iteration"] == 3
    assert iterations(ckpt / "run")[-1] == 3  # the step in progress was finished and logged
    assert temp_files(ckpt) == []


def test_a_second_sigint_aborts_at_once_without_saving(pairs, tmp_path):
    """The child holds still after logging step 3, before saving it: the first SIGINT asks for a stop at the end
    of the step; the second aborts there and then, without finishing the step or saving."""
    ckpt, _, proc = _interrupted_at_step_3(pairs, tmp_path, "--save-latest-freq", "1")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)  # never told to go on: it must end by itself
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "pix2pix-ilm train: interrupted", err
    assert "Traceback" not in err
    assert load_checkpoint(ckpt / "run" / "latest.pt")["counters"]["iteration"] == 2  # step 3 was not saved
    assert iterations(ckpt / "run") == [1, 2, 3] and temp_files(ckpt) == []


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
