"""Atomic writes give files the mode any other file of the process gets: 0o666 less the umask."""

from __future__ import annotations

import os
import stat

import pytest

from pix2pix_ilm.files import atomic_write_bytes, atomic_write_text


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        atomic_write_text(tmp_path / "a.bin", "replaced")  # replacing keeps the rule
        atomic_write_text(tmp_path / "sub" / "b.txt", "y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "sub" / "b.txt").stat().st_mode) == mode
    assert (tmp_path / "a.bin").read_text() == "replaced"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "sub"]  # no temp file left
