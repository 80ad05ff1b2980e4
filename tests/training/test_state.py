"""Checkpoint cadence: latest.pt is written once per point of the run, and at the first epoch end
``--save-latest-minutes`` after the last save."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.models.pix2pix import Pix2PixModel
from pix2pix_ilm.training import state
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


def test_latest_is_saved_at_the_first_epoch_end_m_minutes_after_the_last_save(tmp_path: Path, monkeypatch):
    clock = [0.0]  # seconds: the saver's time.monotonic
    monkeypatch.setattr(state, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    config = TrainConfig(
        dataroot="", name="run", checkpoints_dir=str(tmp_path), netG="unet_32", ngf=4, ndf=4, load_size=32,
        crop_size=32, n_epochs=20, save_epoch_freq=0, save_latest_minutes=3, device="cpu",
    )  # fmt: skip
    config.run_dir.mkdir(parents=True)
    saver = CheckpointSaver(
        Pix2PixModel(config, torch.device("cpu")), config, Distributed(0, 1, torch.device("cpu"))
    )
    latest = config.run_dir / "latest.pt"
    held = []  # the iteration latest.pt holds after each epoch end
    epoch = 0
    for minutes in (2, 4, 6, 7.5, "save", 10.5, 12):
        if minutes == "save":  # a save mid-epoch (--save-latest-freq, at minute 9) restarts the count
            clock[0] = 60 * 9
            saver.save_latest(Counters(epoch=epoch + 1, batches_done=5, iteration=10 * epoch + 5))
            continue
        clock[0], epoch = 60 * minutes, epoch + 1
        saver.epoch_end(epoch, Counters(epoch=epoch + 1, batches_done=0, iteration=10 * epoch))
        held.append(load_checkpoint(latest)["counters"]["iteration"] if latest.exists() else None)
    # 2 min: not yet; 4: saved; 6 (2 after): no; 7.5 (3.5 after): saved; 10.5 (1.5 after the save at 9): no;
    # 12 (3 after it): saved
    assert held == [None, 20, 20, 40, 45, 60]
