"""Crash-safe files: atomic writes, checkpoints loaded with ``weights_only=True`` and verified by checksum.

A checkpoint file ``X.pt`` is streamed to a temp file (hashed as it is written) → fsync → rename, so a kill or
a full disk at any moment leaves the previous ``X.pt`` intact; a second name for the same state (``epoch_<n>.pt``
next to ``latest.pt``) is a hard link of that file. Its SHA-256 is recorded in ``X.pt.sha256`` and checked on load.
Replacing ``X.pt`` takes three atomic steps, so that the pair agrees at every moment: the sidecar first lists
the new digest *and* the current one(s), then ``X.pt`` is replaced, then the sidecar keeps the new digest only.
A checkpoint without a sidecar (copied alone) is checked against the CRC-32 of every record of its zip
archive, which ``torch.save`` writes but ``torch.load`` does not verify.

Each flat dictionary of tensors in a checkpoint (``generator``, ``discriminator``) also gets its own SHA-256,
stored inside the file under ``part_sha256``. Inference memory-maps the file and verifies only the generator
with it, instead of reading and hashing the whole file with D's weights and Adam's moments (3x bigger).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import re
import shutil
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pix2pix_ilm.errors import UsageError, first_line
from pix2pix_ilm.files import atomic_write_text, create_temp_file, fsync_dir


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


def _tensor_parts(state: dict[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    return {
        name: value
        for name, value in state.items()
        if isinstance(value, dict) and value and all(isinstance(t, torch.Tensor) for t in value.values())
    }


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
    """Put the complete file ``source`` at ``path`` with its sidecar, so that the pair agrees at every moment.

    ``keep_source``: hard-link it (a copy where links are not possible) instead of renaming it.
    """
    sidecar = _sidecar(path)
    previous = _recorded_digests(sidecar) if path.exists() else []
    if previous:  # valid for the old and the new file while it is being replaced
        atomic_write_text(sidecar, _sidecar_text([digest, *previous], path.name))
    try:
        if keep_source:
            fd, tmp_name = create_temp_file(path.parent, f".{path.name}.", ".tmp")
            os.close(fd)
            os.unlink(tmp_name)
            try:
                os.link(source, tmp_name)
            except OSError:
                shutil.copyfile(source, tmp_name)
                with open(tmp_name, "rb+") as handle:
                    os.fsync(handle.fileno())
            try:
                os.replace(tmp_name, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)
                raise
        else:
            os.replace(source, path)
    except OSError:
        if previous:
            with contextlib.suppress(OSError):
                atomic_write_text(sidecar, _sidecar_text(previous, path.name))
        raise
    atomic_write_text(sidecar, _sidecar_text([digest], path.name))


def save_checkpoint(state: dict[str, Any], path: Path | str, *, also: Sequence[Path | str] = ()) -> str:
    """Serialize ``state`` (tensors and plain Python values only) atomically; returns its SHA-256.

    The state is streamed to a temp file, hashed as it is written, fsynced and renamed into place; each path
    in ``also`` gets the same file (a hard link, else a copy) without serialising again. Every flat dict of
    tensors in ``state`` gets its digest recorded under ``part_sha256``. A failed write (disk full,
    file-size limit) is a :class:`UsageError`; the previous files are unchanged.
    """
    path = Path(path)
    parts = _tensor_parts(state)
    if parts:
        state = {**state, PART_DIGESTS: {name: tensors_digest(part) for name, part in parts.items()}}
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
        raise UsageError(
            f"cannot write checkpoint {path}: {err.strerror or err} (disk full or a file-size limit?); "
            f"the previous {path.name}, if any, is unchanged"
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
    """The checkpoint memory-mapped, with ``part`` verified against its recorded digest; None when the file
    cannot be read this way or records no digest for ``part`` (the caller then does the full check)."""
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


def load_checkpoint(
    path: Path | str, map_location: str | torch.device = "cpu", *, only: str | None = None
) -> dict[str, Any]:
    """Load a checkpoint safely: checksum verified, ``torch.load(..., weights_only=True)``.

    With ``only="generator"`` (inference) the file is memory-mapped and just that part is verified, by the
    digest stored with it; the rest is not checked and should not be used. Raises :class:`UsageError` for a
    missing, corrupted or unsafe (pickled-object) checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint not found: {path}")
    if only is not None:
        state = _load_part_mapped(path, only)
        if state is not None:
            return state
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
        raise UsageError(
            f"checkpoint {path} cannot be read (truncated or corrupted?): {first_line(err)}"
        ) from err
    if not isinstance(state, dict):
        raise UsageError(f"checkpoint {path} does not hold a state dictionary")
    return state
