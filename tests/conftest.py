"""Shared fixtures: the offline data and weights in ``../shared`` (found relative to the project root)."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from PIL import Image

from pix2pix_ilm.cli import main
from tests.faults import good_pairs, train_args, write_folder
from tests.helpers import unavailable

# Tiny models on a busy 2-core machine run many times faster on one thread than on two competing ones;
# the variable reaches the subprocesses the tests start (torchrun, killed training runs, visdom).
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)
# A shell starts its background jobs with SIGINT ignored, and ignored it stays in every process they start: the
# Ctrl+C tests need Python's handler here, and in the processes the tests start.
signal.signal(signal.SIGINT, signal.default_int_handler)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    env = os.environ.get("PIX2PIX_ILM_SHARED")
    return Path(env) if env else PROJECT_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = _shared_dir()
    if not path.is_dir():
        unavailable(f"shared data folder {path} is absent (set PIX2PIX_ILM_SHARED to point at it)")
    return path


@pytest.fixture(scope="session")
def facades_dir(shared_dir: Path) -> Path:
    path = shared_dir / "data" / "facades"
    if not (path / "train").is_dir():
        unavailable(f"facades data set not found at {path}")
    return path


@pytest.fixture(scope="session")
def cmp_base_dir(shared_dir: Path) -> Path:
    path = shared_dir / "data" / "cmp_facade_base" / "base"
    if not path.is_dir():
        unavailable(f"CMP facade base set not found at {path}")
    return path


@pytest.fixture(scope="session")
def lpips_backbone(shared_dir: Path) -> Path:
    path = shared_dir / "weights" / "alexnet_owt_features.pth"
    if not path.is_file():
        unavailable(f"LPIPS AlexNet backbone not found at {path}")
    return path


# -- fault tests: real facades pairs and one trained run (see tests/faults.py) --------------------------
@pytest.fixture(scope="module")
def pairs(facades_dir: Path) -> dict[str, Image.Image]:
    """Six real facades A|B pairs at 128x64 (four from train/, two from test/)."""
    out = {}
    for key, path in (
        *((f"train{n}", facades_dir / "train" / f"{n}.jpg") for n in (1, 2, 3, 4)),
        *((f"test{n}", facades_dir / "test" / f"{n}.jpg") for n in (1, 2)),
    ):
        with Image.open(path) as img:
            out[key] = img.convert("RGB").resize((128, 64), Image.BICUBIC)
    return out


@pytest.fixture(scope="module")
def trained(pairs, tmp_path_factory) -> tuple[Path, Path]:
    """(data root, checkpoints dir) with run ``base``: 1 epoch on 2 images, epoch_1.pt and latest.pt."""
    root = tmp_path_factory.mktemp("trained")
    write_folder(root / "data", "train", good_pairs(pairs, "train1", "train2"))
    write_folder(root / "data", "test", good_pairs(pairs, "test1", "test2"))
    assert main(train_args(root / "data", root / "ckpt", "base", "--save-epoch-freq", "1")) == 0
    return root / "data", root / "ckpt"


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def five_facades(facades_dir: Path, tmp_path_factory) -> Path:
    """A data root whose train/ holds the first five facades pairs (full size, 512x256)."""
    root = tmp_path_factory.mktemp("facades5")
    (root / "train").mkdir()
    for n in range(1, 6):
        shutil.copy(facades_dir / "train" / f"{n}.jpg", root / "train" / f"{n}.jpg")
    return root
