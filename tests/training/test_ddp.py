"""torchrun with the gloo backend: 2 processes × batch 2 equal 1 process × batch 4 (vanilla and wgangp), and
2 processes stopped mid-epoch and resumed equal an uninterrupted 2-process run bit for bit.

ILM norms everywhere: their convolutions have no bias. A bias right before instance norm gets a gradient of
float noise only, which Adam scales up to full steps, so it would differ by ±lr between any two summation orders.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from pix2pix_ilm.cli import main
from pix2pix_ilm.data.aligned import EpochBatchSampler
from pix2pix_ilm.training.checkpoint import load_checkpoint
from tests.faults import png_broken_inside, start_paused_training, wait_for_file
from tests.helpers import free_port

NET = [
    "--ngf",
    "8",
    "--ndf",
    "8",
    "--netG-norm",
    "ilm_in",
    "--netD-norm",
    "ilm_in",
    "--no-display",
    "--no-progress",
    "--seed",
    "5",
    "--device",
    "cpu",
]
ARGS = [
    *NET,
    "--netG",
    "unet_32",
    "--load-size",
    "36",
    "--crop-size",
    "32",
    "--no-dropout",
    "--n-epochs",
    "1",
    "--n-epochs-decay",
    "0",
]


def _torchrun(*args: str) -> None:
    """``pix2pix-ilm train ARGS`` in 2 gloo processes; it must succeed."""
    proc = _torchrun_process(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _torchrun_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "pix2pix_ilm",
            "train",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.parametrize(
    ("gan_mode", "atol"),
    # wgangp: D's last bias gets a gradient of float noise only (it cancels in mean(D(fake)) - mean(D(real))),
    # and a few weights get gradients near Adam's eps, so the first step's size there depends on the summation
    # order; 1e-5 is 1/20 of a step (lr 2e-4), while a penalty computed on other samples moves weights by
    # whole steps.
    [("vanilla", 1e-6), ("wgangp", 1e-5)],
)
def test_two_processes_match_one_process_on_the_combined_batch(
    facades_dir: Path, tmp_path: Path, gan_mode, atol
):
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    for n in ("1", "2", "3", "4"):
        shutil.copy(facades_dir / "train" / f"{n}.jpg", data / "train" / f"{n}.jpg")
    ckpt = tmp_path / "ckpt"
    common = ["--dataroot", str(data), "--checkpoints-dir", str(ckpt), "--gan-mode", gan_mode, *ARGS]
    assert main(["train", *common, "--name", "single", "--batch-size", "4"]) == 0
    _torchrun(*common, "--name", "ddp", "--batch-size", "2")
    single = load_checkpoint(ckpt / "single" / "latest.pt")
    ddp = load_checkpoint(ckpt / "ddp" / "latest.pt")
    assert single["counters"] == ddp["counters"] == {"epoch": 2, "batches_done": 0, "iteration": 1}
    for part in ("generator", "discriminator"):
        for key, value in single[part].items():
            assert torch.allclose(value, ddp[part][key], atol=atol, rtol=1e-5), (part, key)
    # rank 0 alone writes the run folder
    assert sorted(p.name for p in (ckpt / "ddp").iterdir() if p.suffix != ".sha256") == [
        "config.json",
        "epoch_1.pt",
        "latest.pt",
        "loss_log.jsonl",
        "web",
    ]


def test_two_processes_resume_mid_epoch_exactly(facades_dir: Path, tmp_path: Path):
    """Every rank continues its own dropout stream: 2 processes stopped after step 2 of 4 and resumed with
    --continue end with the weights of an uninterrupted 2-process run, bit for bit."""
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    good = {}
    for n in range(1, 9):
        buffer = io.BytesIO()
        with Image.open(facades_dir / "train" / f"{n}.jpg") as image:
            image.convert("RGB").resize((144, 72)).save(buffer, format="PNG")
        good[n] = buffer.getvalue()
        (data / "train" / f"{n}.png").write_bytes(good[n])
    ckpt = tmp_path / "ckpt"
    # unet_64 has dropout (unet_32 has none), so the ranks' RNG streams matter.
    common = ["--dataroot", str(data), "--checkpoints-dir", str(ckpt), *NET, "--netG", "unet_64"]
    common += ["--load-size", "72", "--crop-size", "64", "--no-html", "--batch-size", "1"]
    common += ["--n-epochs", "2", "--n-epochs-decay", "0", "--save-latest-freq", "1"]
    _torchrun(*common, "--name", "straight")

    # Rank 0's third image of epoch 1 decodes badly: the run stops there, after latest.pt of step 2.
    third = list(EpochBatchSampler(8, 1, 5, 1, rank=0, num_replicas=2))[2][0][0] + 1
    bad = data / "train" / f"{third}.png"
    bad.write_bytes(png_broken_inside(good[third]))
    proc = _torchrun_process(*common, "--name", "resumed")
    assert proc.returncode != 0 and bad.name in proc.stderr, proc.stderr[-3000:]
    stopped = load_checkpoint(ckpt / "resumed" / "latest.pt")
    assert stopped["counters"] == {"epoch": 1, "batches_done": 2, "iteration": 2}
    bad.write_bytes(good[third])
    _torchrun("--dataroot", str(data), "--checkpoints-dir", str(ckpt), "--name", "resumed", "--continue")

    straight = load_checkpoint(ckpt / "straight" / "latest.pt")
    resumed = load_checkpoint(ckpt / "resumed" / "latest.pt")
    assert straight["counters"] == resumed["counters"] == {"epoch": 3, "batches_done": 0, "iteration": 8}
    for part in ("generator", "discriminator"):
        for key, value in straight[part].items():
            assert torch.equal(value, resumed[part][key]), (part, key)
    assert len(stopped["rng_cpu_ranks"]) == 2  # each rank's dropout stream, saved by rank 0


def test_a_signal_to_one_process_stops_all_of_them_after_the_same_step(facades_dir: Path, tmp_path: Path):
    """torchrun may deliver SIGTERM to one worker only: the others must not wait for it forever. All stop after
    the same step, the main process saves latest.pt once, and every process exits 128 + SIGTERM."""
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    for n in ("1", "2", "3", "4"):
        shutil.copy(facades_dir / "train" / f"{n}.jpg", data / "train" / f"{n}.jpg")
    ckpt = tmp_path / "ckpt"
    args = [*ARGS, "--n-epochs", "3", "--print-freq", "1", "--batch-size", "1", "--device", "cpu"]
    args += ["--dataroot", str(data), "--name", "stop", "--checkpoints-dir", str(ckpt)]
    port, flag = str(free_port()), tmp_path / "pause"
    world = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    # The main process holds still after logging step 3; the other waits for it in a collective, where the
    # signal is pending until the main process goes on: it is seen after step 3 or, if the other process had
    # already agreed to go on, after step 4.
    procs = [
        start_paused_training(["train", *args], 3, flag, RANK=str(rank), LOCAL_RANK=str(rank), **world)
        for rank in (0, 1)
    ]
    log = ckpt / "stop" / "loss_log.jsonl"
    try:
        wait_for_file(flag.with_suffix(".paused"), procs[0], timeout=240)
        procs[1].send_signal(signal.SIGTERM)  # the other process gets no signal
        flag.with_suffix(".go").touch()
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
    assert stopped in (3, 4)
    state = load_checkpoint(ckpt / "stop" / "latest.pt")
    assert state["counters"]["iteration"] == stopped
    logged = [json.loads(line)["iteration"] for line in log.read_text().splitlines()]
    assert logged[-1] == stopped
