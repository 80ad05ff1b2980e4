"""Crash-safe files: atomic writes, checkpoints loaded with ``weights_only=True`` and verified by checksum.

A checkpoint file ``X.pt`` is written as temp file → flush → fsync → rename, so a kill or a full disk at any
moment leaves the previous ``X.pt`` intact. Its SHA-256 is recorded in ``X.pt.sha256`` and checked on load.
Replacing ``X.pt`` takes three atomic steps, so that the pair agrees at every moment: the sidecar first lists
the new digest *and* the current one(s), then ``X.pt`` is replaced, then the sidecar keeps the new digest only.
A checkpoint without a sidecar (copied alone) is checked against the CRC-32 of every record of its zip
archive, which ``torch.save`` writes but ``torch.load`` does not verify.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import re
import tempfile
import zipfile
import zlib
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


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _recorded_digests(sidecar: Path) -> list[str]:
    """The digests listed in a ``.sha256`` file (``sha256sum`` format), newest first; [] if there is none."""
    try:
        lines = sidecar.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    return [line.split()[0].lower() for line in lines if line.strip()]


def _sidecar_text(digests: list[str], name: str) -> str:
    unique = list(dict.fromkeys(digests))
    return "".join(f"{digest}  {name}\n" for digest in unique)


def save_checkpoint(state: dict[str, Any], path: Path | str) -> str:
    """Serialize ``state`` (tensors and plain Python values only) atomically; returns its SHA-256.

    A failed write (disk full, file-size limit) is a :class:`UsageError`; the previous file is unchanged.
    """
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    digest = sha256_bytes(data)
    sidecar = _sidecar(path)
    previous = _recorded_digests(sidecar) if path.exists() else []
    try:
        if previous:  # valid for the old and the new X.pt while X.pt is being replaced
            atomic_write_text(sidecar, _sidecar_text([digest, *previous], path.name))
        try:
            atomic_write_bytes(path, data)
        except OSError:
            if previous:
                with contextlib.suppress(OSError):
                    atomic_write_text(sidecar, _sidecar_text(previous, path.name))
            raise
        atomic_write_text(sidecar, _sidecar_text([digest], path.name))
    except OSError as err:
        raise UsageError(
            f"cannot write checkpoint {path}: {err.strerror or err} (disk full or a file-size limit?); "
            f"the previous {path.name}, if any, is unchanged"
        ) from err
    return digest


def _check_zip_crcs(path: Path, data: bytes) -> None:
    """Verify the CRC-32 of every record of a zip-format checkpoint (:class:`UsageError` if one fails)."""
    if not data.startswith(b"PK\x03\x04"):
        return  # torch's legacy format has no checksums; torch.load does what it can
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError) as err:
        raise UsageError(f"checkpoint {path} is truncated or corrupted: {err}") from err
    if bad is not None:
        raise UsageError(f"checkpoint {path} is corrupted: its record {bad} fails its CRC-32 check")


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely: checksum verified, ``torch.load(..., weights_only=True)``.

    Raises :class:`UsageError` for a missing, corrupted or unsafe (pickled-object) checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint not found: {path}")
    data = path.read_bytes()
    sidecar = _sidecar(path)
    expected = _recorded_digests(sidecar)
    if expected:
        if sha256_bytes(data) not in expected:
            raise UsageError(
                f"checkpoint {path} is corrupted: its SHA-256 does not match {sidecar.name} "
                "(flipped or missing bytes; if only the .sha256 file is damaged, delete it)"
            )
    else:
        _check_zip_crcs(path, data)
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f"a pickled Python object ({found.group(1)})" if found else "pickled Python objects"
        raise UsageError(
            f"refusing to load {path}: it holds {what}, not only tensors and plain values "
            "(torch.load with weights_only=True will not run code from a checkpoint)"
        ) from err
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"checkpoint {path} cannot be read (truncated or corrupted?): {first}") from err
    if not isinstance(state, dict):
        raise UsageError(f"checkpoint {path} does not hold a state dictionary")
    return state
