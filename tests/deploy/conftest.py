"""Trained runs for the deploy tests: real facades pairs, an IN and an ILM+IN model."""

from __future__ import annotations

from pathlib import Path

import pytest

from pix2pix_ilm.cli import main
from tests.faults import NET, good_pairs, write_folder

TRAIN = ["--no-display", "--no-progress", "--n-epochs", "2", "--n-epochs-decay", "0", "--print-freq", "10"]


@pytest.fixture(scope="module")
def runs(pairs, tmp_path_factory) -> tuple[Path, Path]:
    """(data root, checkpoints dir) with runs ``in`` and ``ilm`` (ILM+IN in G and D) on real facades pairs."""
    root = tmp_path_factory.mktemp("export")
    write_folder(root / "data", "train", good_pairs(pairs, "train1", "train2", "train3"))
    write_folder(root / "data", "test", good_pairs(pairs, "test1", "test2"))
    for name, norm in (("in", "instance"), ("ilm", "ilm_in")):
        args = [
            "train",
            "--dataroot",
            str(root / "data"),
            "--name",
            name,
            "--checkpoints-dir",
            str(root / "ckpt"),
        ]
        assert main([*args, *NET, *TRAIN, "--netG-norm", norm, "--netD-norm", norm]) == 0
    return root / "data", root / "ckpt"
