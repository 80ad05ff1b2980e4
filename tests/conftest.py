"""Shared fixtures: the offline data and weights in ``../shared`` (found relative to the project root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tiny models on a busy 2-core machine run many times faster on one thread than on two competing ones;
# the variable reaches the subprocesses the tests start (torchrun, killed training runs, visdom).
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    env = os.environ.get("PIX2PIX_ILM_SHARED")
    return Path(env) if env else PROJECT_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = _shared_dir()
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent (set PIX2PIX_ILM_SHARED to point at it)")
    return path


@pytest.fixture(scope="session")
def facades_dir(shared_dir: Path) -> Path:
    path = shared_dir / "data" / "facades"
    if not (path / "train").is_dir():
        pytest.skip(f"facades data set not found at {path}")
    return path


@pytest.fixture(scope="session")
def cmp_base_dir(shared_dir: Path) -> Path:
    path = shared_dir / "data" / "cmp_facade_base" / "base"
    if not path.is_dir():
        pytest.skip(f"CMP facade base set not found at {path}")
    return path


@pytest.fixture(scope="session")
def lpips_backbone(shared_dir: Path) -> Path:
    path = shared_dir / "weights" / "alexnet_owt_features.pth"
    if not path.is_file():
        pytest.skip(f"LPIPS AlexNet backbone not found at {path}")
    return path
