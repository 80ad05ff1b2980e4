"""Getting the data: the pix2pix facades set (download, local copy or archive), verified after extraction;
the CMP converter is in :mod:`pix2pix_ilm.data.cmp`. Where the data come from and how they are checked:
docs/data.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.files import create_temp_file

FACADES_URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/facades.tar.gz"
FACADES_ENV = "PIX2PIX_ILM_FACADES"
FACADES_COUNTS: Mapping[str, int] = {"train": 400, "test": 106, "val": 100}
"""Images per split in the official archive. ``val`` is optional for a local folder."""
FACADES_IMAGE_SIZE = (512, 256)
"""(width, height) of every aligned A|B facades image."""
CONNECT_TIMEOUT_S = 10.0
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# ------------------------------------------------------------------------------------------ facades


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file())


def verify_facades_dir(
    root: str | Path,
    expected_counts: Mapping[str, int] = FACADES_COUNTS,
    required: Sequence[str] = ("train", "test"),
    image_size: tuple[int, int] | None = FACADES_IMAGE_SIZE,
) -> dict[str, int]:
    """Check an aligned facades folder; returns ``{split: image count}``.

    Every split in ``required`` must exist; every split that exists must hold ``expected_counts[split]``
    images, each ``image_size`` (width, height) unless that is ``None``. :class:`UsageError` naming the
    folder or file otherwise.
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"facades folder not found: {root}")
    counts: dict[str, int] = {}
    for split, expected in expected_counts.items():
        folder = root / split
        if not folder.is_dir():
            if split in required:
                raise UsageError(f"facades folder {root} has no {split}/ subfolder")
            continue
        images = _images_in(folder)
        if len(images) != expected:
            raise UsageError(f"{folder} holds {len(images)} images, expected {expected}")
        if image_size is not None:
            from pix2pix_ilm.data.images import image_header  # imports torch: only when checking sizes

            for path in images:
                size, _ = image_header(path)
                if size != tuple(image_size):
                    raise UsageError(
                        f"{path} is {size[0]}x{size[1]}, expected {image_size[0]}x{image_size[1]} "
                        "(aligned A|B)"
                    )
        counts[split] = len(images)
    return counts


def extract_tar_safely(archive: str | Path, dest: str | Path) -> None:
    """Extract a (gzipped) tar archive into ``dest``, refusing absolute paths, ``..``, links and devices."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                target = (root / member.name).resolve()
                if os.path.isabs(member.name) or (target != root and root not in target.parents):
                    raise UsageError(
                        f"refusing to extract {archive}: {member.name!r} escapes the destination"
                    )
                if not (member.isfile() or member.isdir()):
                    raise UsageError(
                        f"refusing to extract {archive}: {member.name!r} is a link or special file"
                    )
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # Python < 3.11.4; members were checked above
                tar.extractall(dest, members=members)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise UsageError(f"cannot extract {archive} (corrupted or not a tar archive?): {err}") from err


def _find_dataset_root(folder: Path) -> Path:
    if (folder / "train").is_dir():
        return folder
    subfolders = [p for p in folder.iterdir() if p.is_dir()]
    candidates = [p for p in subfolders if (p / "train").is_dir()]
    if len(candidates) == 1:
        return candidates[0]
    raise UsageError(
        f"the archive has no facades/train/ folder (found: {', '.join(p.name for p in subfolders)})"
    )


def _install_archive(
    archive: Path,
    dest_root: Path,
    expected_counts: Mapping[str, int],
    required: Sequence[str],
    image_size: tuple[int, int] | None,
) -> Path:
    """Extract ``archive`` next to ``dest_root/facades``, verify it, then move it into place."""
    target = dest_root / "facades"
    dest_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".facades-extract-", dir=dest_root))
    try:
        extract_tar_safely(archive, staging)
        try:
            extracted = _find_dataset_root(staging)
            counts = verify_facades_dir(extracted, expected_counts, required, image_size)
        except UsageError as err:
            detail = str(err).replace(str(staging), "<archive>")
            raise UsageError(f"archive {archive} is not a complete facades set: {detail}") from err
        os.replace(extracted, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary = ", ".join(f"{split} {n}" for split, n in counts.items())
    print(f"facades ready in {target} ({summary}); archive sha256 {sha256_file(archive)}")
    return target


def download_file(url: str, dest: str | Path, timeout: float = CONNECT_TIMEOUT_S) -> str:
    """Download ``url`` to ``dest`` (temp file, then rename) with a tqdm progress bar; returns its SHA-256.

    ``timeout`` bounds the connection and every read. :class:`UsageError` when the download fails.
    """
    from tqdm import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = create_temp_file(dest.parent, f".{dest.name}.", ".part")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as handle, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as progress:
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    handle.write(chunk)
                    digest.update(chunk)
                    progress.update(len(chunk))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, dest)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        if isinstance(err, (urllib.error.URLError, socket.timeout, OSError)):
            reason = getattr(err, "reason", None) or err
            raise UsageError(f"cannot download {url}: {reason}") from err
        raise
    return digest.hexdigest()


def _verify_existing(
    target: Path, expected_counts: Mapping[str, int], image_size: tuple[int, int] | None, hint: str
) -> None:
    try:
        verify_facades_dir(target, expected_counts, ("train", "test"), image_size)
    except UsageError as err:
        raise UsageError(f"{err} ({target} is incomplete: remove it {hint})") from err


def ensure_facades(
    dest_root: str | Path,
    local: str | Path | None = None,
    *,
    url: str = FACADES_URL,
    expected_counts: Mapping[str, int] = FACADES_COUNTS,
    image_size: tuple[int, int] | None = FACADES_IMAGE_SIZE,
    timeout: float = CONNECT_TIMEOUT_S,
) -> Path:
    """A verified facades folder with ``train/`` and ``test/`` (and ``val/`` when present); fetched if needed.

    Sources, in order: ``local`` or ``$PIX2PIX_ILM_FACADES`` (a folder in facades layout, used in place, or
    a ``facades.tar.gz``, extracted to ``dest_root/facades``); an existing complete ``dest_root/facades``;
    a download of ``url`` to ``dest_root/facades.tar.gz``. ``expected_counts`` and ``image_size`` define
    "complete" (defaults: the official 400/106/100 images of 512×256). :class:`UsageError` when no source
    works, naming how to give a local copy.
    """
    dest_root = Path(dest_root)
    if local is None or not str(local).strip():
        local = os.environ.get(FACADES_ENV) or None
    if local is not None:
        source = Path(local).expanduser()
        if source.is_dir():
            root = _find_dataset_root(source) if not (source / "train").is_dir() else source
            verify_facades_dir(root, expected_counts, ("train", "test"), image_size)
            return root
        if source.is_file():
            target = dest_root / "facades"
            if target.exists():
                _verify_existing(target, expected_counts, image_size, f"to extract {source} again")
                print(f"using the existing {target} (remove it to extract {source} again)")
                return target
            return _install_archive(source, dest_root, expected_counts, ("train", "test"), image_size)
        raise UsageError(f"local facades copy not found: {source} (give a facades folder or facades.tar.gz)")

    target = dest_root / "facades"
    if target.exists():
        _verify_existing(target, expected_counts, image_size, "to download it again")
        return target

    archive = dest_root / "facades.tar.gz"
    if not archive.is_file():
        print(f"downloading {url} to {archive}")
        try:
            download_file(url, archive, timeout=timeout)
        except UsageError as err:
            raise UsageError(
                f"{err}. Without internet, give a local copy of the facades folder or of facades.tar.gz: "
                f"python datasets/download_facades.py --from PATH, or set {FACADES_ENV}=PATH"
            ) from err
    required = tuple(split for split in expected_counts)  # a fresh official archive has every split
    return _install_archive(archive, dest_root, expected_counts, required, image_size)


__all__ = [
    "FACADES_COUNTS",
    "FACADES_ENV",
    "FACADES_IMAGE_SIZE",
    "FACADES_URL",
    "download_file",
    "ensure_facades",
    "extract_tar_safely",
    "sha256_file",
    "verify_facades_dir",
]
