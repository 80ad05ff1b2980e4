"""Checkpoints written atomically with a SHA-256 sidecar (``X.pt.sha256``), loaded with ``weights_only=True``
after checking it, or without one the zip records' CRC-32s, which ``torch.load`` does not verify. Each flat
dict of tensors also carries its own digest (``part_sha256``), so inference can check G's weights alone.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import pickle
import re
import secrets
import shutil
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pix2pix_ilm.errors import UsageError, first_line
from pix2pix_ilm.files import atomic_write_text, create_temp_file, fsync_dir, no_space_advice


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _recorded_digests(sidecar: Path) -> list[str]:
    """The digests listed in a ``.sha256`` file (``sha256sum`` format), newest first; [] if there is none."""
    try:
        lines = sidecar.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    return [line.split()[0].lower() for line in lines if line.strip()]


def _write_sidecar(path: Path, digests: list[str]) -> None:
    atomic_write_text(
        _sidecar(path), "".join(f"{digest}  {path.name}\n" for digest in dict.fromkeys(digests))
    )


PART_DIGESTS = "part_sha256"


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a flat state dict: each key, dtype, shape and the tensor's bytes, in key order."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensors[key].shape)}\n".encode())
        if tensor.numel():
            digest.update(tensor.view(torch.uint8).numpy())
    return digest.hexdigest()


class _HashingFile:
    """A binary file that hashes what is written to it: the file is hashed in the one pass that writes it."""

    def __init__(self, handle: Any) -> None:
        self.handle, self.sha256 = handle, hashlib.sha256()
        self.error: OSError | None = None  # torch's writer reports a failed write as a RuntimeError

    def write(self, data: Any) -> int:
        self.sha256.update(data)
        try:
            return self.handle.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        self.handle.flush()


def _place(source: Path, path: Path, digest: str, *, keep_source: bool) -> None:
    """Rename ``source`` to ``path`` (``keep_source``: a hard link or copy of it) in three atomic steps, so
    that ``path`` and its sidecar agree at every moment: the sidecar lists the new and the old digests while
    ``path`` is replaced, then the new one only."""
    previous = _recorded_digests(_sidecar(path)) if path.exists() else []
    if previous:
        _write_sidecar(path, [digest, *previous])
    try:
        if keep_source:
            link = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
            try:
                try:
                    os.link(source, link)
                except OSError:  # no hard links on this file system
                    shutil.copyfile(source, link)
                    with open(link, "rb+") as handle:
                        os.fsync(handle.fileno())
                os.replace(link, path)
            finally:
                link.unlink(missing_ok=True)
        else:
            os.replace(source, path)
    except OSError:
        if previous:
            with contextlib.suppress(OSError):
                _write_sidecar(path, previous)
        raise
    _write_sidecar(path, [digest])


def save_checkpoint(state: dict[str, Any], path: Path | str, *, also: Sequence[Path | str] = ()) -> str:
    """Stream ``state`` (tensors and plain values) to ``path`` and the same file to each of ``also``, hashed as
    it is written; returns its SHA-256. A failed write is a :class:`UsageError`; the previous files stay."""
    path = Path(path)
    parts = {
        name: tensors_digest(part)
        for name, part in state.items()
        if isinstance(part, dict) and part and all(isinstance(t, torch.Tensor) for t in part.values())
    }
    if parts:
        state = {**state, PART_DIGESTS: parts}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = create_temp_file(path.parent, f".{path.name}.", ".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            stream = _HashingFile(handle)
            try:
                torch.save(state, stream)
            except RuntimeError:
                if stream.error is not None:
                    raise stream.error from None
                raise
            handle.flush()
            os.fsync(handle.fileno())
        digest = stream.sha256.hexdigest()
        for other in map(Path, also):
            _place(tmp, other, digest, keep_source=True)
        _place(tmp, path, digest, keep_source=False)
    except OSError as err:
        why = f"{err.strerror or err} (a file-size limit?)"
        if err.errno in (errno.ENOSPC, errno.EDQUOT):  # about the size of the previous one, once per file
            previous = path.stat().st_size * (1 + len(also)) if path.is_file() else None
            why = f"{err.strerror}: {no_space_advice(path, previous)}"
        raise UsageError(
            f"cannot write checkpoint {path}: {why}; the previous {path.name}, if any, is unchanged"
        ) from err
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    for folder in {path.parent, *(Path(other).parent for other in also)}:
        fsync_dir(folder)
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


def _load_part_mapped(path: Path, part: str) -> dict[str, Any] | None:
    """The checkpoint memory-mapped, ``part`` checked against its digest; None when that is not possible."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # any problem: the full load below reports it properly
        return None
    recorded = state.get(PART_DIGESTS) if isinstance(state, dict) else None
    if not isinstance(recorded, dict) or not isinstance(state.get(part), dict) or part not in recorded:
        return None
    if tensors_digest(state[part]) != recorded[part]:
        raise UsageError(
            f"checkpoint {path} is corrupted: its {part} weights do not match the digest recorded with them"
        )
    return state


def load_checkpoint(path: Path | str, *, only: str | None = None) -> dict[str, Any]:
    """A verified checkpoint on the CPU (:class:`UsageError` if missing, corrupted or holding pickled objects);
    with ``only="generator"`` just that part is verified, the rest must not be used."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint not found: {path}")
    if only is not None:
        state = _load_part_mapped(path, only)
        if state is not None:
            return state
    data = path.read_bytes()
    expected = _recorded_digests(_sidecar(path))
    if not expected:
        _check_zip_crcs(path, data)
    elif hashlib.sha256(data).hexdigest() not in expected:
        raise UsageError(
            f"checkpoint {path} is corrupted: its SHA-256 does not match {path.name}.sha256 "
            "(flipped or missing bytes; if only the .sha256 file is damaged, delete it)"
        )
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f"a pickled Python object ({found.group(1)})" if found else "pickled Python objects"
        raise UsageError(
            f"refusing to load {path}: it holds {what}, not only tensors and plain values "
            "(torch.load with weights_only=True will not run code from a checkpoint)"
        ) from err
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        raise UsageError(
            f"checkpoint {path} cannot be read (truncated or corrupted?): {first_line(err)}"
        ) from err
    if not isinstance(state, dict):
        raise UsageError(f"checkpoint {path} does not hold a state dictionary")
    return state
