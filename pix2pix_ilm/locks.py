"""Folders a command owns while it runs: one ``flock`` on a small file, which the kernel releases when the
process ends, however it ends (``kill -9`` included)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from pix2pix_ilm.errors import UsageError


@contextlib.contextmanager
def held(path: Path, busy: str) -> Iterator[None]:
    """Hold the lock file ``path`` for the ``with`` block, writing this process's pid into it;
    :class:`UsageError` with ``busy`` (``{pid}``: the holder's) if another process holds it. A folder made
    for it is removed again, with the file, when the block fails (if nothing else was put there)."""
    made = not path.parent.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                raise UsageError(busy.replace("{pid}", handle.read().strip() or "?")) from None
            handle.truncate(0)
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield
    except BaseException:
        if made:
            with contextlib.suppress(OSError):
                path.unlink()
                path.parent.rmdir()
        raise
