"""Crash-safe file writes: temp file → flush → fsync → rename, so readers see the old file or the new one."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Flush a folder's entries (its renames) to disk, where the platform allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def create_temp_file(directory: Path, prefix: str, suffix: str) -> tuple[int, str]:
    """A new, empty file in ``directory``: its descriptor (write-only) and path. Unlike ``tempfile.mkstemp``
    (always 0o600) it gets the mode ``open()`` gives, 0o666 less the umask, so results stay readable."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        name = os.path.join(directory, f"{prefix}{secrets.token_hex(4)}{suffix}")
        with contextlib.suppress(FileExistsError):
            return os.open(name, flags, 0o666), name
    raise FileExistsError(f"no unused temporary file name in {directory}")


def atomic_write_bytes(path: Path | str, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the complete new one;
    ``fsync=False`` (for many small files) leaves the flush to one :func:`sync_to_disk` after the last."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = create_temp_file(path.parent, f".{path.name}.", ".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    if fsync:
        fsync_dir(path.parent)


def atomic_write_text(path: Path | str, text: str, *, fsync: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def sync_to_disk() -> None:
    """Flush the files written with ``fsync=False`` (and their renames) to disk: one ``sync`` for all."""
    if hasattr(os, "sync"):  # POSIX; elsewhere the operating system flushes them in its own time
        os.sync()
