"""Damaged, hostile and half-written checkpoints, and a disk that fails part-way."""

from __future__ import annotations

import hashlib
import io
import os
import resource
import shutil
import signal
import struct
from pathlib import Path

import pytest
import torch

from pix2pix_ilm.cli import main
from pix2pix_ilm.training.checkpoint import load_checkpoint, save_checkpoint
from tests.faults import (
    args_for_test,
    cli_error,
    copy_run,
    good_pairs,
    run_cli,
    temp_files,
    train_args,
    trained_run,
    write_folder,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# -- checkpoints ---------------------------------------------------------------------------------------
class NotATensor:
    """A custom class: pickling it into a checkpoint must make loading refuse the file."""


def _flip_byte_in(path: Path, part: str) -> None:
    """Flip one byte in the middle of the largest tensor of ``part`` (generator, discriminator, opt_g, ...)."""
    import zipfile

    state = torch.load(path, weights_only=True, mmap=True)
    tensors = state[part].values() if part in ("generator", "discriminator") else _tensors_of(state[part])
    target = max(tensors, key=lambda t: t.untyped_storage().nbytes())
    data = bytearray(path.read_bytes())
    payload = bytes(target.contiguous().view(torch.uint8).reshape(-1).numpy())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        records = [info for info in archive.infolist() if "/data/" in info.filename]
        for info in records:  # the record whose stored bytes are that tensor's
            name_len, extra_len = struct.unpack(
                "<HH", data[info.header_offset + 26 : info.header_offset + 30]
            )
            start = info.header_offset + 30 + name_len + extra_len
            if data[start : start + info.file_size] == payload:
                data[start + info.file_size // 2] ^= 0xFF
                path.write_bytes(bytes(data))
                return
    raise AssertionError(f"no record of {part} found in {path}")


def _tensors_of(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value] if value.numel() > 1 else []
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors_of(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors_of(v)]
    return []


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


@pytest.mark.parametrize(
    ("damage", "sidecar", "words"),
    [
        ("flip", True, "generator weights do not match the digest"),
        ("flip", False, "generator weights do not match the digest"),
        ("truncate", True, "SHA-256 does not match epoch_1.pt.sha256"),
        ("truncate", False, "truncated or corrupted"),
        ("object", False, "pickled Python object (tests.training.test_checkpoint_faults.NotATensor)"),
        ("function", True, "pickled Python object (posix.system)"),
    ],
)
def test_corrupted_and_unsafe_checkpoints_are_refused(trained, tmp_path, capsys, damage, sidecar, words):
    data, ckpt = copy_run(trained, tmp_path)
    path = ckpt / "base" / "epoch_1.pt"
    if damage == "flip":
        _flip_byte_in(path, "generator")
    elif damage == "truncate":
        _truncate(path)
    else:
        state = load_checkpoint(path)
        state["extra"] = NotATensor() if damage == "object" else os.system
        if sidecar:
            save_checkpoint(state, path)  # even with a matching checksum
        else:
            torch.save(state, path)
    if not sidecar:
        Path(f"{path}.sha256").unlink(missing_ok=True)
    msg = cli_error(capsys, *args_for_test(data, ckpt, tmp_path / "res", "--epoch", "1"))
    assert words in msg and "epoch_1.pt" in msg, msg
    assert not (tmp_path / "res").exists()
    if damage in ("flip", "truncate"):  # and --continue from such a latest.pt: the whole file is checked
        shutil.copy(path, ckpt / "base" / "latest.pt")
        if sidecar:
            shutil.copy(f"{path}.sha256", ckpt / "base" / "latest.pt.sha256")
        else:
            (ckpt / "base" / "latest.pt.sha256").unlink()
        msg = cli_error(capsys, *train_args(data, ckpt, "base", "--continue", "--n-epochs", "2"))
        assert "latest.pt" in msg and ("corrupted" in msg or "truncated" in msg), msg
        if damage == "flip":
            assert ("SHA-256 does not match" if sidecar else "fails its CRC-32 check") in msg, msg


@pytest.mark.parametrize("part", ["discriminator", "opt_g"])
def test_damage_outside_the_generator_does_not_stop_test_but_stops_resume(trained, tmp_path, capsys, part):
    """``test`` reads and verifies only G (memory-mapped, by G's own digest); resuming checks every byte."""
    data, ckpt = copy_run(trained, tmp_path)
    intact = tmp_path / "intact"
    assert main(args_for_test(data, ckpt, intact, "--epoch", "1")) == 0
    _flip_byte_in(ckpt / "base" / "epoch_1.pt", part)
    assert main(args_for_test(data, ckpt, tmp_path / "res", "--epoch", "1")) == 0
    outputs = sorted((intact / "base" / "test_1" / "images").glob("*.png"))
    assert outputs
    for image in outputs:
        assert (
            image.read_bytes() == (tmp_path / "res" / "base" / "test_1" / "images" / image.name).read_bytes()
        )
    shutil.copy(ckpt / "base" / "epoch_1.pt", ckpt / "base" / "latest.pt")
    shutil.copy(ckpt / "base" / "epoch_1.pt.sha256", ckpt / "base" / "latest.pt.sha256")
    msg = cli_error(capsys, *train_args(data, ckpt, "base", "--continue", "--n-epochs", "2"))
    assert "latest.pt" in msg and "SHA-256 does not match" in msg, msg


def _limit_file_size(limit: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_checkpoint_write_failing_part_way_keeps_the_previous_one(pairs, tmp_path):
    root, ckpt, run, before = trained_run(pairs, tmp_path)
    assert len(before) > 60_000  # the limit below must fall inside latest.pt, not in config/log/preview files
    limit = len(before) // 2
    done = run_cli(
        *train_args(root, ckpt, "run", "--continue", "--n-epochs", "2"), preexec_fn=_limit_file_size(limit)
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert f"cannot write checkpoint {run / 'latest.pt'}: File too large" in lines[0]
    assert "the previous latest.pt, if any, is unchanged" in lines[0]
    # 0 bytes lost: the old checkpoint, its checksum file, and no temp files left behind.
    assert (run / "latest.pt").read_bytes() == before
    assert (run / "latest.pt.sha256").read_text() == f"{hashlib.sha256(before).hexdigest()}  latest.pt\n"
    assert temp_files(tmp_path) == []
    assert load_checkpoint(run / "latest.pt")["counters"]["iteration"] == 2


def test_state_left_by_a_kill_during_a_save_resumes(pairs, tmp_path):
    """What SIGKILL between the steps of a save leaves behind: a partial temp file and a sidecar listing the
    new and the old digest. The old latest.pt still loads, and --continue removes the temp file."""
    root = write_folder(tmp_path / "data", "train", good_pairs(pairs, "train1", "train2"))
    ckpt = tmp_path / "ckpt"
    run = ckpt / "run"
    assert main(train_args(root, ckpt, "run")) == 0
    old = (run / "latest.pt").read_bytes()
    new = load_checkpoint(run / "epoch_1.pt")
    new["counters"]["iteration"] = 99
    buffer = io.BytesIO()
    torch.save(new, buffer)
    (run / ".latest.pt.k1ll3d_x.tmp").write_bytes(buffer.getvalue()[:5000])
    digests = [hashlib.sha256(buffer.getvalue()).hexdigest(), hashlib.sha256(old).hexdigest()]
    (run / "latest.pt.sha256").write_text("".join(f"{d}  latest.pt\n" for d in digests))
    assert load_checkpoint(run / "latest.pt")["counters"]["iteration"] == 2
    assert main(train_args(root, ckpt, "run", "--continue", "--n-epochs", "2")) == 0
    assert temp_files(run) == []
    assert load_checkpoint(run / "latest.pt")["counters"]["iteration"] == 4
    assert len((run / "latest.pt.sha256").read_text().splitlines()) == 1
