"""`test` outputs: every image renamed into place whole, all flushed to disk by one sync."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from pix2pix_ilm.cli import main
from tests.faults import args_for_test

pytestmark = pytest.mark.usefixtures("one_thread")


def test_outputs_are_atomic_and_flushed_once(trained, tmp_path, monkeypatch):
    data, ckpt = trained
    calls = {"fsync": 0, "sync": 0}
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        calls["fsync"] += 1
        real_fsync(fd)

    def sync() -> None:
        calls["sync"] += 1

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "sync", sync)
    assert main(args_for_test(data, ckpt, tmp_path / "results")) == 0
    assert calls == {"fsync": 0, "sync": 1}  # was one fsync per image and per folder entry
    out = tmp_path / "results" / "base" / "test_latest"
    names = sorted(p.name for p in (out / "images").iterdir())
    assert names == sorted(f"test{n}_{label}.png" for n in (1, 2) for label in ("real_A", "fake_B", "real_B"))
    for name in names:  # complete PNGs, no temp files left
        with Image.open(out / "images" / name) as image:
            image.load()
            assert image.size == (32, 32)
    assert sorted(p.name for p in out.iterdir()) == ["images", "index.html", "test.json"]
