"""torchrun with the gloo backend: 2 processes × batch 2 equal 1 process × batch 4.

ILM norms everywhere: their convolutions have no bias. A bias right before instance norm gets a gradient of
float noise only, which Adam scales up to full steps, so it would differ by ±lr between any two summation orders.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_signal_to_one_process_stops_all_of_them_after_the_same_step(facades_dir: Path, tmp_path: Path):
    """torchrun may deliver SIGTERM to one worker only: the others must not wait for it forever. All stop after
    the same step, the main process saves latest.pt once, and every process exits 128 + SIGTERM."""
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    for n in ("1", "2", "3", "4"):
        shutil.copy(facades_dir / "train" / f"{n}.jpg", data / "train" / f"{n}.jpg")
    ckpt = tmp_path / "ckpt"
    args = [*ARGS, "--n-epochs", "50", "--print-freq", "1", "--batch-size", "1", "--device", "cpu"]
    args += ["--dataroot", str(data), "--name", "stop", "--checkpoints-dir", str(ckpt)]
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
        }
        cmd = [sys.executable, "-m", "pix2pix_ilm", "train", *args]
        procs.append(
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        )
    log = ckpt / "stop" / "loss_log.jsonl"
    try:
        deadline = time.time() + 240
        while time.time() < deadline and all(p.poll() is None for p in procs):
            if log.is_file() and len(log.read_text().splitlines()) >= 3:
                procs[1].send_signal(signal.SIGTERM)  # the other process gets no signal
                break
            time.sleep(0.05)
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    codes = [p.returncode for p in procs]
    assert codes == [128 + signal.SIGTERM] * 2, (codes, [err[-2000:] for _, err in outputs])
    saved = [re.search(r"SIGTERM: stopped after iteration (\d+); saved", err) for _, err in outputs]
    assert saved[0] and not saved[1], outputs  # the main process saves and says so, once
    stopped = int(saved[0].group(1))
    state = load_checkpoint(ckpt / "stop" / "latest.pt")
    assert state["counters"]["iteration"] == stopped
    logged = [json.loads(line)["iteration"] for line in log.read_text().splitlines()]
    assert logged[-1] == stopped
