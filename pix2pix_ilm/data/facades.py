"""The pix2pix facades set: a local folder, a local archive or a download, verified after extraction
(docs/data.md)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.files import create_temp_file

FACADES_URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/facades.tar.gz"
FACADES_ENV = "PIX2PIX_ILM_FACADES"
FACADES_COUNTS: Mapping[str, int] = {"train": 400, "test": 106, "val": 100}  # val optional in a local folder
FACADES_IMAGE_SIZE = (512, 256)  # (width, height) of every aligned A|B image
CONNECT_TIMEOUT_S = 10.0
REQUIRED = ("train", "test")


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_facades_dir(
    root: str | Path,
    expected_counts: Mapping[str, int] = FACADES_COUNTS,
    required: Sequence[str] = REQUIRED,
    image_size: tuple[int, int] | None = FACADES_IMAGE_SIZE,
) -> dict[str, int]:
    """``{split: image count}`` of a facades folder whose splits hold ``expected_counts`` images of
    ``image_size`` (any size if None); :class:`UsageError` naming the folder or file otherwise."""
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
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if len(images) != expected:
            raise UsageError(f"{folder} holds {len(images)} images, expected {expected}")
        if image_size is not None:
            from pix2pix_ilm.data.images import image_header  # imports torch: only when checking sizes

            for path in images:
                size, _ = image_header(path)
                if size != tuple(image_size):
                    raise UsageError(
                        f"{path} is {size[0]}x{size[1]}, expected {image_size[0]}x{image_size[1]} (aligned A|B)"
                    )
        counts[split] = len(images)
    return counts


def extract_tar_safely(archive: str | Path, dest: str | Path) -> None:
    """Extract a (gzipped) tar archive into ``dest``, refusing absolute paths, ``..``, links and devices."""
    root = Path(dest).resolve()
    root.mkdir(parents=True, exist_ok=True)
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
            # The "data" filter where Python has it (3.11.4+); the members were checked above either way.
            tar.extractall(
                root, members=members, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {})
            )
    except (tarfile.TarError, EOFError, OSError) as err:
        raise UsageError(f"cannot extract {archive} (corrupted or not a tar archive?): {err}") from err


def _find_dataset_root(folder: Path) -> Path:
    """``folder`` if it holds ``train/``, else its only subfolder that does."""
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
    counts: Mapping[str, int],
    required: Sequence[str],
    size: tuple[int, int] | None,
) -> Path:
    """Extract ``archive`` next to ``dest_root/facades``, verify it, then move it into place."""
    target = dest_root / "facades"
    dest_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".facades-extract-", dir=dest_root))
    try:
        extract_tar_safely(archive, staging)
        try:
            extracted = _find_dataset_root(staging)
            found = verify_facades_dir(extracted, counts, required, size)
        except UsageError as err:
            detail = str(err).replace(str(staging), "<archive>")
            raise UsageError(f"archive {archive} is not a complete facades set: {detail}") from err
        os.replace(extracted, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary = ", ".join(f"{split} {n}" for split, n in found.items())
    print(f"facades ready in {target} ({summary}); archive sha256 {sha256_file(archive)}")
    return target


def download_file(url: str, dest: Path, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Download ``url`` to ``dest`` (temp file, then rename) with a progress bar; ``timeout`` bounds the
    connection and every read. :class:`UsageError` when the download fails."""
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = create_temp_file(dest.parent, f".{dest.name}.", ".part")
    try:
        with os.fdopen(fd, "wb") as handle, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm.wrapattr(handle, "write", total=total, desc=dest.name) as out:
                shutil.copyfileobj(response, out)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, dest)
    except OSError as err:  # URLError and socket timeouts included
        raise UsageError(f"cannot download {url}: {getattr(err, 'reason', None) or err}") from err
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)  # left only by a failed download


def _verify_existing(
    target: Path, counts: Mapping[str, int], image_size: tuple[int, int] | None, hint: str
) -> None:
    try:
        verify_facades_dir(target, counts, REQUIRED, image_size)
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
    """A verified facades folder, from the first source that exists: ``local`` or ``$PIX2PIX_ILM_FACADES``
    (a folder used in place, or a ``facades.tar.gz`` extracted to ``dest_root/facades``), an existing
    ``dest_root/facades``, or a download of ``url``. :class:`UsageError` when none works."""
    dest_root = Path(dest_root)
    target = dest_root / "facades"
    if local is None or not str(local).strip():
        local = os.environ.get(FACADES_ENV) or None
    if local is not None:
        source = Path(local).expanduser()
        if source.is_dir():
            root = _find_dataset_root(source)
            verify_facades_dir(root, expected_counts, REQUIRED, image_size)
            return root
        if not source.is_file():
            raise UsageError(
                f"local facades copy not found: {source} (give a facades folder or facades.tar.gz)"
            )
        if target.exists():
            _verify_existing(target, expected_counts, image_size, f"to extract {source} again")
            print(f"using the existing {target} (remove it to extract {source} again)")
            return target
        return _install_archive(source, dest_root, expected_counts, REQUIRED, image_size)

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
    every = tuple(expected_counts)  # a fresh official archive has every split
    return _install_archive(archive, dest_root, expected_counts, every, image_size)
