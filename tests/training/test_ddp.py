"""torchrun with the gloo backend: 2 processes × batch 2 equal 1 process × batch 4.

ILM norms everywhere: their convolutions have no bias. A bias right before instance norm gets a gradient of
float noise only, which Adam scales up to full steps, so it would differ by ±lr between any two summation orders.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from pix2pix_ilm.cli import main
from pix2pix_ilm.training.checkpoint import load_checkpoint

ARGS = [
    "--netG",
    "unet_32",
    "--ngf",
    "8",
    "--ndf",
    "8",
    "--load-size",
    "36",
    "--crop-size",
    "32",
    "--netG-norm",
    "ilm_in",
    "--netD-norm",
    "ilm_in",
    "--no-dropout",
    "--n-epochs",
    "1",
    "--n-epochs-decay",
    "0",
    "--no-display",
    "--no-progress",
    "--seed",
    "5",
]


def test_two_processes_match_one_process_on_the_combined_batch(facades_dir: Path, tmp_path: Path):
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    for n in ("1", "2", "3", "4"):
        shutil.copy(facades_dir / "train" / f"{n}.jpg", data / "train" / f"{n}.jpg")
    ckpt = tmp_path / "ckpt"
    assert (
        main(
            [
                "train",
                "--dataroot",
                str(data),
                "--name",
                "single",
                "--checkpoints-dir",
                str(ckpt),
                "--batch-size",
                "4",
                *ARGS,
            ]
        )
        == 0
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "pix2pix_ilm",
            "train",
            "--dataroot",
            str(data),
            "--name",
            "ddp",
            "--checkpoints-dir",
            str(ckpt),
            "--batch-size",
            "2",
            "--device",
            "cpu",
            *ARGS,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = load_checkpoint(ckpt / "single" / "latest.pt")
    ddp = load_checkpoint(ckpt / "ddp" / "latest.pt")
    assert single["counters"] == ddp["counters"] == {"epoch": 2, "batches_done": 0, "iteration": 1}
    for part in ("generator", "discriminator"):
        for key, value in single[part].items():
            assert torch.allclose(value, ddp[part][key], atol=1e-6, rtol=1e-5), (part, key)
    # rank 0 alone writes the run folder
    assert sorted(p.name for p in (ckpt / "ddp").iterdir() if p.suffix != ".sha256") == [
        "config.json",
        "epoch_1.pt",
        "latest.pt",
        "loss_log.jsonl",
        "web",
    ]
