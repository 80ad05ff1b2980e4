"""Checkpoint writing: streamed to disk and hashed as written, one serialisation per save, damage refused."""

from __future__ import annotations

import hashlib
import tracemalloc

import pytest
import torch

from pix2pix_ilm.cli import main
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.training.checkpoint import load_checkpoint, save_checkpoint
from tests.faults import good_pairs, train_args, write_folder

pytestmark = pytest.mark.usefixtures("one_thread")


def test_save_streams_to_disk_without_a_copy_in_memory(tmp_path):
    weights = {f"w{i}": torch.randn(256, 1024) for i in range(8)}  # 8 MiB of tensors
    tracemalloc.start()
    try:
        digest = save_checkpoint({"generator": weights, "counters": {"epoch": 1}}, tmp_path / "a.pt")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes of Python memory held while saving 8 MiB"
    assert (tmp_path / "a.pt.sha256").read_text() == f"{digest}  a.pt\n"
    state = load_checkpoint(tmp_path / "a.pt")
    assert all(torch.equal(state["generator"][k], v) for k, v in weights.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "a.pt.sha256"]


def test_epoch_end_serialises_the_state_once(pairs, tmp_path, monkeypatch):
    root = write_folder(tmp_path / "data", "train", good_pairs(pairs, "train1", "train2"))
    saves = []
    real_save = torch.save
    monkeypatch.setattr(
        torch, "save", lambda obj, f, *a, **k: saves.append(obj) or real_save(obj, f, *a, **k)
    )
    args = train_args(root, tmp_path / "ckpt", "run", "--n-epochs", "2", "--save-epoch-freq", "1")
    assert main(args) == 0
    assert [s["counters"]["epoch"] for s in saves] == [2, 3]  # one serialisation per epoch end
    run = tmp_path / "ckpt" / "run"
    assert load_checkpoint(run / "epoch_1.pt")["counters"] == {"epoch": 2, "batches_done": 0, "iteration": 2}
    assert (run / "epoch_2.pt").read_bytes() == (run / "latest.pt").read_bytes()
    digests = [(run / f"{name}.sha256").read_text().split()[0] for name in ("epoch_2.pt", "latest.pt")]
    assert digests[0] == digests[1] == hashlib.sha256((run / "latest.pt").read_bytes()).hexdigest()
    # A damaged file is still refused, by its checksum and, for `test`, by the generator's own digest.
    data = bytearray((run / "epoch_1.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (run / "epoch_1.pt").unlink()
    (run / "epoch_1.pt").write_bytes(bytes(data))
    with pytest.raises(UsageError, match="corrupted"):
        load_checkpoint(run / "epoch_1.pt")
