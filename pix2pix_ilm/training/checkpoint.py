"""Crash-safe files: atomic writes, checkpoints loaded with ``weights_only=True`` and verified by checksum.

A checkpoint file ``X.pt`` is written as temp file → flush → fsync → rename, so a kill or a full disk at any
moment leaves the previous ``X.pt`` intact. Its SHA-256 is recorded in ``X.pt.sha256`` and checked on load.
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
import pickle
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from pix2pix_ilm.errors import UsageError, first_line
from pix2pix_ilm.files import atomic_write_bytes, atomic_write_text


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


def save_checkpoint(state: dict[str, Any], path: Path | str) -> str:
    """Serialize ``state`` (tensors and plain Python values only) atomically; returns its SHA-256.

    Every flat dict of tensors in ``state`` gets its digest recorded under ``part_sha256``.
    A failed write (disk full, file-size limit) is a :class:`UsageError`; the previous file is unchanged.
    """
    path = Path(path)
    parts = _tensor_parts(state)
    if parts:
        state = {**state, PART_DIGESTS: {name: tensors_digest(part) for name, part in parts.items()}}
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
