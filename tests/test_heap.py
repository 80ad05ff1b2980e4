"""Heap retention (``heap.retain_freed_memory``): a big tensor freed and allocated again is not page-faulted
in again; the library leaves the heap alone and the command line opts in."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from pix2pix_ilm.heap import RETAIN_MEMORY_ENV

PROBE = """
import json, resource, torch
{setup}
def faults_of_one_allocation():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(64 * 2**20 // 4).fill_(1.0)  # 64 MiB, above glibc's largest mmap threshold (32 MiB)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults = [faults_of_one_allocation() for _ in range(16)]
# glibc's heap settles after a few rounds (aligned blocks do not fit the hole the last one left at first)
print(json.dumps({{"applied": applied, "faults": sum(faults[-4:])}}))
"""
RETAIN = "from pix2pix_ilm.heap import retain_freed_memory\napplied = retain_freed_memory()"
GLIBC_ONLY = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the setting is glibc's mallopt"
)


def _probe(setup: str = RETAIN, **env: str) -> dict:
    """Minor page faults of four 64 MiB allocations in a fresh process, after ``setup`` ran there."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(setup=setup)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@GLIBC_ONLY
def test_retained_memory_is_reused_without_page_faults():
    retained = _probe()
    default = _probe(**{RETAIN_MEMORY_ENV: "0"})
    assert retained["applied"] is True and default["applied"] is False
    # glibc maps fresh pages for every such allocation: 4 x 16384 faults of 4 KiB (4 x 32 with huge pages)
    assert default["faults"] >= 4 * 32
    assert retained["faults"] * 10 < default["faults"]  # the freed block is reused as it is


def _tiny_data(facades_dir: Path, root: Path) -> Path:
    (root / "train").mkdir(parents=True)
    with Image.open(facades_dir / "train" / "1.jpg") as image:
        image.convert("RGB").resize((64, 32)).save(root / "train" / "1.jpg")
    return root


@GLIBC_ONLY
def test_the_library_leaves_the_heap_alone_and_the_command_line_opts_in(facades_dir: Path, tmp_path: Path):
    """Calling train from Python changes no process-wide state; the same run from the command line keeps
    freed memory in the process."""
    data = _tiny_data(facades_dir, tmp_path / "data")
    options = dict(
        dataroot=str(data),
        checkpoints_dir=str(tmp_path / "ckpt"),
        netG="unet_32",
        ngf=4,
        ndf=4,
        load_size=36,
        crop_size=32,
        n_epochs=1,
        n_epochs_decay=0,
        no_display=True,
        no_progress=True,
        no_html=True,
        device="cpu",
    )
    library = _probe(
        "from pix2pix_ilm.config import TrainConfig\n"
        "from pix2pix_ilm.training.loop import train\n"
        f"train(TrainConfig(name='library', **{options!r}))\n"
        "applied = None"
    )
    flags = [f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}") for k, v in options.items()]
    command_line = _probe(
        f"from pix2pix_ilm.cli import main\nassert main(['train', '--name=cli', *{flags!r}]) == 0\napplied = None"
    )
    assert library["faults"] >= 4 * 32  # glibc's defaults: fresh pages for every big allocation
    assert command_line["faults"] * 10 < library["faults"]
