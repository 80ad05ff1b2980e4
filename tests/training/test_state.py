"""Checkpoint cadence: latest.pt is written once per point of the run."""

from __future__ import annotations

from pathlib import Path

import torch

from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.models.pix2pix import Pix2PixModel
from pix2pix_ilm.training.checkpoint import load_checkpoint
from pix2pix_ilm.training.distributed import Distributed
from pix2pix_ilm.training.state import CheckpointSaver, Counters


def test_a_stop_right_after_a_save_does_not_write_latest_again(tmp_path: Path):
    config = TrainConfig(
        dataroot="", name="run", checkpoints_dir=str(tmp_path), netG="unet_32", ngf=4, ndf=4, load_size=32,
        crop_size=32, save_latest_freq=2, device="cpu",
    )  # fmt: skip
    config.run_dir.mkdir(parents=True)
    saver = CheckpointSaver(
        Pix2PixModel(config, torch.device("cpu")), config, Distributed(0, 1, torch.device("cpu"))
    )
    latest = config.run_dir / "latest.pt"
    counters = Counters(epoch=1, batches_done=1, iteration=1)
    saver.step(counters)
    assert not latest.exists()  # not due at iteration 1
    counters.step()
    saver.step(counters)  # due at iteration 2
    written = latest.stat().st_ino
    saver.save_latest(counters)  # a stop after the same step: the file already holds this point
    assert latest.stat().st_ino == written
    counters.step()
    saver.save_latest(counters)
    assert latest.stat().st_ino != written
    assert load_checkpoint(latest)["counters"] == {"epoch": 1, "batches_done": 3, "iteration": 3}
