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
def held(path: Path, in_use: str, advice: str) -> Iterator[None]:
    """Hold the lock file ``path`` for the ``with`` block, writing this process's pid into it; if another
    process holds it, :class:`UsageError` "``in_use`` (pid of the holder); ``advice``". A folder made
    for it (and its parents) is removed again, with the file, when the block fails (if nothing else was put
    there)."""
    made = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
                raise UsageError(f"{in_use} (pid {holder}); {advice}") from None
            # The pid only informs a second process: a full disk may refuse it.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            os.close(fd)
    except BaseException:
        if made:
            with contextlib.suppress(OSError):
                path.unlink()
                for folder in made:  # innermost first, each only if nothing else was put there
                    folder.rmdir()
        raise


def results_folder(folder: Path | str) -> contextlib.AbstractContextManager:
    """One ``test`` or ``eval`` at a time in a results folder: ``test`` holds it while it writes the new folder
    and swaps it in, ``eval`` while it reads the images and writes the scores, so scores never mix two tests.
    The lock lies beside the folder (``test`` replaces the folder itself); where that parent is not writable,
    no ``test`` of this user can replace the folder, and ``eval`` reads it without one."""
    folder = Path(folder)
    parent = folder.absolute().parent
    if parent.is_dir() and not os.access(parent, os.W_OK):
        return contextlib.nullcontext()
    in_use = f"results folder {folder} is in use by another test or eval"
    return held(parent / f".{folder.name}.lock", in_use, "wait for it to end")
