"""Image files: listing (natural order), decoding to RGB, and checking a folder before any work."""

from __future__ import annotations

import re
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image
from PIL.Image import DecompressionBombError

from pix2pix_ilm.config import VALIDATION_MODES
from pix2pix_ilm.data.transforms import TransformSpec
from pix2pix_ilm.errors import UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")

# What PIL may raise on a damaged or hostile file (OSError: unidentified, truncated, broken data stream;
# DecompressionBombError: a header claiming a gigantic size).
_UNDECODABLE = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, DecompressionBombError)
_GREY_MODES = ("1", "L", "I", "I;16", "I;16B", "I;16L", "F")

Item = Path | tuple[Path, Path]
"""One sample's files: an aligned A|B image, or the A and B images of a pair."""
T = TypeVar("T")


def natural_key(name: str) -> list:
    """Sort key that orders ``2.jpg`` before ``10.jpg`` (digits compare as numbers, letters ignore case)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def phase_folder(dataroot: Path | str, phase: str, suffix: str = "") -> Path:
    """``<dataroot>/<phase><suffix>`` (suffix ``_A`` / ``_B``: paired folders), or a :class:`UsageError` saying
    what is wrong and which subfolders exist."""
    root, name = Path(dataroot), f"{phase}{suffix}"
    if root.is_file():
        raise UsageError(f"--dataroot {root} is a file; it must be a folder holding {name}/")
    if not root.is_dir():
        raise UsageError(f"--dataroot {root} is not a folder")
    folder = root / name
    if not folder.is_dir():
        subfolders = sorted(p.name + "/" for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        found = f"it has {', '.join(subfolders)}" if subfolders else "it has no subfolders"
        what = "is a file, not a folder" if folder.exists() else "not found"
        raise UsageError(f"{folder} {what}: --phase {phase} needs {root}/{name}/ ({found})")
    return folder


def list_images(folder: Path | str) -> list[Path]:
    """Image files directly in ``folder``, naturally sorted; hidden files and other extensions are ignored."""
    folder = Path(folder)
    if folder.is_file():
        raise UsageError(f"{folder} is a file, not a folder of images")
    if not folder.is_dir():
        raise UsageError(f"image folder not found: {folder}")
    files = [p for p in folder.glob("[!.]*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    return sorted(files, key=lambda path: natural_key(path.name))


def _image_error(path: Path, err: BaseException) -> UsageError:
    if isinstance(err, PermissionError):
        return UsageError(f"cannot read image {path}: permission denied (check the file's permissions)")
    return UsageError(f"cannot decode image {path}: {err}")


def to_8bit(img: Image.Image, channels: int = 3) -> Image.Image:
    """An image as 8-bit RGB (or L for 1 channel), the one conversion of every input, from a file or from
    Python: alpha dropped, palette and CMYK converted, 16- and 32-bit integer images scaled to 8 bits (their
    top 8 bits), not clipped; float images clipped to [0, 255]."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(img, dtype=np.int64)
        shift = 8 if img.mode.startswith("I;16") or array.max() < 65536 else 24
        img = Image.fromarray(np.clip(array >> shift, 0, 255).astype(np.uint8), mode="L")
    elif img.mode == "F":
        array = np.asarray(img, dtype=np.float32)
        img = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), mode="L")
    return img.convert("L" if channels == 1 else "RGB")


def load_rgb(path: Path, channels: int = 3) -> Image.Image:
    """Decode an image file fully, converted by :func:`to_8bit`."""
    try:
        with Image.open(path) as img:
            img.load()
            return to_8bit(img, channels)
    except _UNDECODABLE as err:
        raise _image_error(path, err) from err


def is_grey(path: Path) -> bool:
    """Whether the file holds a single-channel (grey) image, from its header."""
    try:
        with Image.open(path) as img:
            return img.mode in _GREY_MODES
    except _UNDECODABLE as err:
        raise _image_error(path, err) from err


def image_header(path: Path) -> tuple[tuple[int, int], str]:
    """((width, height), PIL format name) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as img:
            return img.size, img.format or ""
    except _UNDECODABLE as err:
        raise _image_error(path, err) from err


def _ends_with_trailer(path: Path, image_format: str) -> bool:
    """Whether a JPEG ends with its EOI marker or a PNG with its IEND chunk (then maybe zeros or whitespace);
    False for other formats and other endings, which the caller then decodes to decide."""
    trailer = {"JPEG": b"\xff\xd9", "MPO": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}.get(image_format)
    if trailer is None:
        return False
    with open(path, "rb") as handle:
        handle.seek(max(0, handle.seek(0, 2) - 1024))
        return handle.read().rstrip(b"\x00 \t\r\n").endswith(trailer)


def select_files(files: list[T], subset: slice | None, max_size: int | None) -> list[T]:
    """Apply ``--subset`` (a slice of the naturally sorted list of files or pairs) then ``--max-dataset-size``."""
    if subset is not None:
        files = files[subset]
    if max_size is not None:
        if max_size < 1:
            raise UsageError(f"--max-dataset-size must be >= 1, got {max_size}")
        files = files[:max_size]
    return files


def check_image(
    path: Path,
    *,
    aligned: bool,
    mode: str = "header",
    transform: TransformSpec | None = None,
    size_multiple: int = 1,
) -> tuple[int, int]:
    """Its (width, height), or a :class:`UsageError` naming ``path`` if it cannot be used: unreadable, not 2:1
    when ``aligned``, too small for ``transform``; ``mode="header"`` decodes only files that lack their end marker."""
    (width, height), image_format = image_header(path)
    if width < 1 or height < 1:
        raise UsageError(f"image {path} is empty ({width}x{height})")
    if aligned and width != 2 * height:
        raise UsageError(
            f"aligned image {path} is {width}x{height}: its width must be twice its height (A|B side by side)"
        )
    if mode == "full" or not _ends_with_trailer(path, image_format):
        load_rgb(path)  # a truncated JPEG/PNG (or another format) fails here
    if transform is not None:
        part_w = width // 2 if aligned else width
        problem = transform.problem(part_w, height, size_multiple)
        if problem:
            what = f"each half ({part_w}x{height})" if aligned else "it"
            raise UsageError(f"image {path} is {width}x{height}: {what} {problem}")
    return width, height


def check_item(
    item: Item, *, aligned: bool, mode: str, transform: TransformSpec | None, size_multiple: int
) -> None:
    """:func:`check_image` of one image, or of both images of a pair, which must then be the same size."""
    paths, aligned = ([item], aligned) if isinstance(item, Path) else (list(item), False)
    sizes = [
        check_image(p, aligned=aligned, mode=mode, transform=transform, size_multiple=size_multiple)
        for p in paths
    ]
    if len(paths) == 2:
        check_same_size(paths, sizes)


def check_same_size(pair: Sequence[Path], sizes: Sequence[tuple[int, int]]) -> None:
    """:class:`UsageError` naming both files of a pair whose images differ in size."""
    if sizes[0] != sizes[1]:
        (a_w, a_h), (b_w, b_h) = sizes
        raise UsageError(f"paired images differ in size: {pair[0]} is {a_w}x{a_h}, {pair[1]} is {b_w}x{b_h}")


NAMED_BAD_IMAGES = 20
"""Bad files named one by one in the error or warning; the rest are counted."""

BAD_IMAGES_FILE = "bad_images.txt"
"""Every file skipped as bad, one reason per line, in the folder of the run (or test) that skipped it."""


def record_bad_images(path: Path | None, reasons: Sequence[str]) -> None:
    """Append ``reasons`` to the bad-image list ``path`` (nothing when ``path`` is None)."""
    if path is not None and reasons:
        with open(path, "a", encoding="utf-8") as f:
            f.writelines(f"{reason}\n" for reason in reasons)


def named(reasons: Sequence[str]) -> str:
    """The first :data:`NAMED_BAD_IMAGES` reasons joined by ``; ``, then how many more there are."""
    more = len(reasons) - NAMED_BAD_IMAGES
    return "; ".join(reasons[:NAMED_BAD_IMAGES]) + (f"; and {more} more" if more > 0 else "")


def validate_images(
    paths: Sequence[T],
    *,
    aligned: bool,
    skip_bad: bool,
    mode: str = "header",
    transform: TransformSpec | None = None,
    size_multiple: int = 1,
    listed_in_file: bool = True,
) -> tuple[list[T], list[str]]:
    """The usable ``paths`` (files, or pairs of files) and the reasons the others were skipped, checked before any
    work as ``--validate-images`` asks; a bad file is an error naming it, or with ``skip_bad`` skipped with one
    warning (that points to :data:`BAD_IMAGES_FILE` where ``listed_in_file``)."""
    if mode not in VALIDATION_MODES:
        raise UsageError(f"--validate-images must be one of {', '.join(VALIDATION_MODES)}, got {mode!r}")
    good: list[T] = []
    bad: list[str] = []
    for path in paths:
        try:
            check_item(path, aligned=aligned, mode=mode, transform=transform, size_multiple=size_multiple)
            good.append(path)
        except UsageError as err:
            bad.append(str(err))
    if bad and not skip_bad:
        raise UsageError(
            f"{len(bad)} bad image(s) of {len(paths)}: {named(bad)} (use --skip-bad-images to skip such files)"
        )
    if bad:
        listed = f" (all listed in {BAD_IMAGES_FILE})" if listed_in_file else ""
        warnings.warn(
            f"skipped {len(bad)} bad image(s) of {len(paths)}: {named(bad)}{listed}",
            stacklevel=2,
        )
    if not good:
        raise UsageError(f"no usable images: all {len(paths)} were skipped as bad")
    return good, bad
