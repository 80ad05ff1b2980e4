"""``train --tensorboard``: event files that agree with ``loss_log.jsonl``, previews at the display steps, a
resume that replaces what followed its checkpoint, and a one-line refusal without the package."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from pix2pix_ilm.cli import main
from pix2pix_ilm.training import run_dir
from pix2pix_ilm.training.checkpoint import load_checkpoint, save_checkpoint
from pix2pix_ilm.training.reporting import PREVIEW_TAG
from tests.faults import cli_error, good_pairs, train_args, write_folder
from tests.helpers import require_module

LOSSES = ("G_GAN", "G_L1", "D_real", "D_fake")
# 2 epochs of 4 steps; losses at the first step, every 3rd and each epoch's end, images every 2nd.
CADENCE = ["--n-epochs-decay", "1", "--print-freq", "3", "--display-freq", "2", "--save-epoch-freq", "1"]


def _events(run: Path):
    accumulator = require_module("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def _assert_matches_loss_log(run: Path, iterations: int) -> None:
    log = [json.loads(line) for line in (run / "loss_log.jsonl").read_text().splitlines()]
    events = _events(run)
    assert set(events.Tags()["scalars"]) == {"lr", *(f"loss/{name}" for name in LOSSES)}
    for tag, key in [("lr", "lr"), *((f"loss/{name}", name) for name in LOSSES)]:
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [entry["iteration"] for entry in log], tag
        assert [s.value for s in scalars] == [np.float32(entry[key]) for entry in log], tag
    assert events.Tags()["images"] == [PREVIEW_TAG]
    images = events.Images(PREVIEW_TAG)
    assert [image.step for image in images] == list(range(2, iterations + 1, 2))
    assert all((image.width, image.height) == (3 * 32, 32) for image in images)


def test_events_follow_the_loss_log_and_the_display_steps(pairs, tmp_path, one_thread):
    data = write_folder(tmp_path / "data", "train", good_pairs(pairs, "train1", "train2", "train3", "train4"))
    ckpt = tmp_path / "ckpt"
    # --no-display (visdom off) leaves TensorBoard on.
    assert main(train_args(data, ckpt, "tb", *CADENCE, "--tensorboard")) == 0
    run = ckpt / "tb"
    assert [json.loads(line)["iteration"] for line in (run / "loss_log.jsonl").open()] == [1, 3, 4, 6, 8]
    _assert_matches_loss_log(run, 8)

    # A crash after epoch 1's checkpoint: --continue replays epoch 2, and TensorBoard hides the first replay.
    save_checkpoint(load_checkpoint(run / "epoch_1.pt"), run / "latest.pt")
    assert main(train_args(data, ckpt, "tb", "--continue", *CADENCE)) == 0
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2
    _assert_matches_loss_log(run, 8)


def test_refused_before_any_work_without_the_package(pairs, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        run_dir.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboard" else real(name, *a),
    )
    data = write_folder(tmp_path / "data", "train", good_pairs(pairs, "train1"))
    err = cli_error(capsys, *train_args(data, tmp_path / "ckpt", "tb", "--tensorboard"))
    assert err.endswith("--tensorboard needs the tensorboard package: pip install 'pix2pix-ilm[tensorboard]'")
    assert not (tmp_path / "ckpt").exists()
