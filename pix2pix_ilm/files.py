"""Where and how commands write, one policy for all (docs/reliability.md): an output never replaces an input,
an existing file only with ``--overwrite``, every file goes through a temp file → flush → fsync → rename (readers
see the old file or the new one), and the place is checked before any work."""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from pix2pix_ilm.errors import UsageError


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
    """Write ``data`` to ``path`` so that readers see either the old file or the complete new one: a temp file
    beside it, renamed over it. A failed write removes the temp file, leaves ``path`` as it was and names
    ``path``. ``fsync=False`` (for many small files) leaves the flush to one :func:`sync_to_disk` after the last."""
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
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        if isinstance(err, OSError) and err.filename in (None, tmp_name):  # the user's file, not our temp one
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    if fsync:
        fsync_dir(path.parent)


def atomic_write_text(path: Path | str, text: str, *, fsync: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def sync_to_disk() -> None:
    """Flush the files written with ``fsync=False`` (and their renames) to disk: one ``sync`` for all."""
    if hasattr(os, "sync"):  # POSIX; elsewhere the operating system flushes them in its own time
        os.sync()


# -- the policy: checked before any work -----------------------------------------------------------------
def _same(a: Path, b: Path) -> bool:
    """Whether two paths name one file or folder (through links, ``..`` and, where both exist, hard links)."""
    if a.resolve() == b.resolve():
        return True
    with contextlib.suppress(OSError):
        return a.exists() and b.exists() and os.path.samefile(a, b)
    return False


def _within(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_folder(folder: Path | str, flag: str, shown: Path | None = None) -> Path:
    """``folder`` can take outputs (``shown``, what the user typed, is ``folder`` or a file to be written in it):
    a folder, or one that can be made (its nearest existing parent is a folder), and writable; else a
    :class:`UsageError` naming ``flag`` and what to do."""
    folder = Path(folder)
    shown = folder if shown is None else shown
    existing = next(p for p in (folder.absolute(), *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == shown.absolute() else f"lies below {existing}, which is a file"
        raise UsageError(
            f"{flag} {shown} {where}, not a folder; give {'a folder' if shown == folder else 'another'}"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(
            f"{flag} {shown}: {existing} is not writable for you; give a folder you can write to, or change "
            "its permissions"
        )
    return folder


def data_folders(dataroot: Path | str, phase: str) -> list[Path]:
    """The folders a command reads its data from: ``dataroot`` and its phase folders (aligned and paired)."""
    return [Path(dataroot), *(Path(dataroot) / f"{phase}{suffix}" for suffix in ("", "_A", "_B"))]


def check_output_folder(
    folder: Path | str, flag: str, inputs: Iterable[Path | str] = (), *, replaced: bool = False
) -> Path:
    """:func:`check_folder`, and ``folder`` is not an input folder (``replaced``, the command replaces it as
    a whole: it holds no input either)."""
    folder = check_folder(folder, flag)
    if replaced:  # its parent takes the new folder and the old one's removal
        check_folder(folder.parent, flag)
    for source in map(Path, inputs):
        if _same(folder, source) or (replaced and _within(source, folder)):
            what = "is" if _same(folder, source) else "holds"
            raise UsageError(
                f"{flag} {folder} {what} the input {source}; outputs never replace inputs: give another {flag}"
            )
    return folder


def check_output_files(
    files: Iterable[Path | str], flag: str, inputs: Iterable[Path | str] = (), *, overwrite: bool = False
) -> list[Path]:
    """Each of ``files`` may be written: not an input (not even with ``overwrite``), not a folder, not an
    existing file unless ``overwrite``, in a folder :func:`check_folder` accepts; returns them."""
    files, sources = [Path(f) for f in files], [Path(s) for s in inputs]
    for file in files:
        if source := next((s for s in sources if _same(file, s)), None):
            raise UsageError(
                f"{flag}: {file} is the input {source}; outputs never replace inputs: give another"
            )
        real = file.resolve()  # what the write will replace: ``a/../b`` is ``b`` even where ``a`` is missing
        if real.is_dir():
            raise UsageError(f"{flag} {file} is a folder; give a file name")
        if real.exists() and not overwrite:
            raise UsageError(f"{file} exists; use --overwrite to replace it, or give another {flag}")
    for file in files:
        check_folder(file.parent, flag, shown=file)
    return files


@contextlib.contextmanager
def replacing_folder(out_dir: Path, *, in_place: bool = False) -> Iterator[Path]:
    """A new folder that replaces ``out_dir`` when the block succeeds; on failure it is removed and the old one
    stays. Made beside ``out_dir`` and renamed to it at the end, or ``in_place`` (for files that record their
    own folder) made at ``out_dir`` with the old one set aside meanwhile."""
    token = secrets.token_hex(4)
    old = out_dir.with_name(f".{out_dir.name}.{token}.old")
    new = out_dir if in_place else out_dir.with_name(f".{out_dir.name}.{token}.tmp")
    if not in_place:
        _clear_leftovers(out_dir)
    try:
        if in_place and out_dir.exists():
            out_dir.rename(old)
        new.mkdir(parents=True)
        yield new
        sync_to_disk()  # one flush for every file instead of one per file
        if not in_place:
            if out_dir.exists():
                out_dir.rename(old)
            new.rename(out_dir)
    except BaseException as err:
        shutil.rmtree(new, ignore_errors=True)
        if old.exists() and not out_dir.exists():
            old.rename(out_dir)
        staged = isinstance(err, OSError) and str(err.filename or "").startswith(f"{new}{os.sep}")
        if staged and not in_place:  # name the file the user asked for, not its staging copy
            raise OSError(err.errno, err.strerror, str(out_dir) + str(err.filename)[len(str(new)) :]) from err
        raise
    shutil.rmtree(old, ignore_errors=True)


def _clear_leftovers(out_dir: Path) -> None:
    """What replacements of ``out_dir`` that were killed left beside it (the caller holds the folder): staging
    folders go, and an old folder set aside comes back where ``out_dir`` itself is gone."""
    pattern = f".{glob.escape(out_dir.name)}.*"
    olds = sorted(out_dir.parent.glob(pattern + ".old"), key=lambda p: p.stat().st_mtime)
    if olds and not out_dir.exists():
        olds.pop().rename(out_dir)
    for leftover in [*olds, *out_dir.parent.glob(pattern + ".tmp")]:
        shutil.rmtree(leftover, ignore_errors=True)


def no_space_advice(path: Path | str, needed_bytes: int | None = None) -> str:
    """What to say when the disk refused ``path`` for want of space (ENOSPC, EDQUOT): the space left there,
    what is needed where known, and what to do."""
    folder = next((p for p in Path(path).absolute().parents if p.exists()), Path("/"))
    free = shutil.disk_usage(folder).free / 2**20
    needed = f", about {needed_bytes / 2**20:.1f} MiB needed" if needed_bytes else ""
    return (
        f"{free:.1f} MiB free there{needed}; free some space, or write elsewhere, and run the command again"
    )
