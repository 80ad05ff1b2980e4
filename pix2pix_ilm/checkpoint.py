"""Crash-safe files: atomic writes, checkpoints loaded with ``weights_only=True`` and verified by checksum.

A checkpoint file ``X.pt`` is written as temp file → flush → fsync → rename, so a kill or a full disk at any
moment leaves the previous ``X.pt`` intact. Its SHA-256 is recorded in ``X.pt.sha256`` (written after the
checkpoint itself) and checked on load.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from pix2pix_ilm.errors import UsageError


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(state: dict[str, Any], path: Path | str) -> str:
    """Serialize ``state`` (tensors and plain Python values only) atomically; returns its SHA-256."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    digest = sha256_bytes(data)
    atomic_write_bytes(path, data)
    atomic_write_text(path.with_name(path.name + ".sha256"), f"{digest}  {path.name}\n")
    return digest


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely: checksum verified, ``torch.load(..., weights_only=True)``.

    Raises :class:`UsageError` for a missing, corrupted or unsafe (pickled-object) checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint not found: {path}")
    data = path.read_bytes()
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.is_file():
        expected = sidecar.read_text().split()[0] if sidecar.read_text().strip() else ""
        if expected and expected != sha256_bytes(data):
            raise UsageError(f"checkpoint {path} is corrupted: its SHA-256 does not match {sidecar.name}")
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UsageError(
            f"refusing to load {path}: it is not a plain-tensor checkpoint (weights_only=True rejected it: "
            f"{str(err).splitlines()[0]})"
        ) from err
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        raise UsageError(f"checkpoint {path} cannot be read (truncated or corrupted?): {err}") from err
    if not isinstance(state, dict):
        raise UsageError(f"checkpoint {path} does not hold a state dictionary")
    return state
