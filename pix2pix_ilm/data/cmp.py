"""A converter from the original CMP Facade release to aligned A|B pairs like the pix2pix facades set (photo
left, label map coloured with :data:`FACADES_PALETTE` right). How the palette was matched to the facades set:
docs/data.md.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.files import atomic_write_bytes, sync_to_disk

CMP_CLASS_NAMES: tuple[str, ...] = (
    "unlabelled",
    "background",
    "facade",
    "window",
    "door",
    "cornice",
    "sill",
    "balcony",
    "blind",
    "deco",
    "molding",
    "pillar",
    "shop",
)
"""Index = CMP label value (``label_names.txt`` of the CMP release); 0 never occurs in the label maps."""


def _matlab_jet(m: int) -> np.ndarray:
    """MATLAB's ``jet(m)`` colour map as an ``(m, 3)`` float array in [0, 1]."""
    n = -(-m // 4)
    ramp = np.concatenate([np.arange(1, n + 1) / n, np.ones(n - 1), np.arange(n, 0, -1) / n])
    green = -(-n // 2) - int(m % 4 == 1) + np.arange(1, len(ramp) + 1)
    colours = np.zeros((m, 3))
    for channel, rows in enumerate((green + n, green, green - n)):
        keep = (rows >= 1) & (rows <= m)
        colours[rows[keep] - 1, channel] = ramp[keep]
    return colours


FACADES_PALETTE: np.ndarray = np.round(_matlab_jet(64)[5 * np.arange(13)] * 255).astype(np.uint8)
"""``(13, 3)`` uint8: colour of CMP class ``c`` in the pix2pix facades label maps (row ``5c`` of jet(64))."""
FACADES_PALETTE.setflags(write=False)


def colorize_labels(labels: np.ndarray, palette: np.ndarray = FACADES_PALETTE) -> np.ndarray:
    """CMP label values ``[H, W]`` -> RGB ``[H, W, 3]`` uint8 with ``palette`` (default: facades colours)."""
    labels = np.asarray(labels)
    if labels.size and int(labels.max()) >= len(palette):
        raise ValueError(f"label value {int(labels.max())} has no colour (palette of {len(palette)})")
    return palette[labels]


def find_cmp_pairs(base_dir: str | Path) -> list[tuple[Path, Path]]:
    """``(photo, label map)`` pairs ``cmp_*.jpg`` / ``cmp_*.png`` in ``base_dir`` (or its ``base/``)."""
    base_dir = Path(base_dir)
    if not base_dir.is_dir():
        raise UsageError(f"CMP folder not found: {base_dir}")
    photos = sorted(base_dir.glob("cmp_*.jpg"))
    if not photos and (base_dir / "base").is_dir():
        base_dir = base_dir / "base"
        photos = sorted(base_dir.glob("cmp_*.jpg"))
    if not photos:
        raise UsageError(f"no cmp_*.jpg photos in {base_dir} (expected the CMP Facade DB 'base' folder)")
    pairs = []
    for photo in photos:
        label = photo.with_suffix(".png")
        if not label.is_file():
            raise UsageError(f"{photo} has no label map: {label} is missing")
        pairs.append((photo, label))
    return pairs


def cmp_pair_to_aligned(photo_path: str | Path, label_path: str | Path, size: int = 256) -> np.ndarray:
    """One aligned ``[size, 2*size, 3]`` uint8 image: resized photo | coloured label map."""
    photo_path, label_path = Path(photo_path), Path(label_path)
    try:
        with Image.open(photo_path) as photo_file:
            photo = photo_file.convert("RGB")
        with Image.open(label_path) as label_file:
            if label_file.mode not in ("P", "L"):
                raise UsageError(f"{label_path} is not an 8-bit label map (mode {label_file.mode})")
            label = label_file.copy()
    except OSError as err:
        raise UsageError(f"cannot read {photo_path} / {label_path}: {err}") from err
    if photo.size != label.size:
        raise UsageError(f"{photo_path} is {photo.size} but its label map {label_path} is {label.size}")
    labels = np.asarray(label.resize((size, size), Image.NEAREST))
    if labels.size and int(labels.max()) >= len(FACADES_PALETTE):
        raise UsageError(f"{label_path} has label value {int(labels.max())}; CMP labels are 1-12")
    left = np.asarray(photo.resize((size, size), Image.BICUBIC))
    return np.concatenate([left, colorize_labels(labels)], axis=1)


def convert_cmp(
    base_dir: str | Path,
    out_dir: str | Path,
    size: int = 256,
    *,
    test_count: int = 0,
    image_format: str = "jpg",
    jpeg_quality: int = 95,
    limit: int | None = None,
) -> dict[str, list[Path]]:
    """Build aligned A|B pairs from the CMP release: ``<out_dir>/train/<cmp stem>.<image_format>``.

    The last ``test_count`` pairs (sorted by name) go to ``<out_dir>/test/`` instead; ``limit`` keeps only
    the first pairs (for quick trials). ``image_format`` is ``jpg`` (quality ``jpeg_quality``, like the
    facades set) or ``png`` (lossless: the right half then holds only palette colours). Files are written
    atomically. Returns ``{split: [written paths]}``.
    """
    if size < 1:
        raise UsageError(f"size must be positive, got {size}")
    fmt = image_format.lower().lstrip(".")
    if fmt not in ("jpg", "png"):
        raise UsageError(f"image format must be jpg or png, got {image_format!r}")
    pairs = find_cmp_pairs(base_dir)
    if limit is not None:
        pairs = pairs[: max(0, int(limit))]
    if not 0 <= test_count <= len(pairs):
        raise UsageError(f"test_count must be between 0 and {len(pairs)}, got {test_count}")
    out_dir = Path(out_dir)
    written: dict[str, list[Path]] = {"train": [], "test": []}
    for index, (photo, label) in enumerate(pairs):
        split = "test" if index >= len(pairs) - test_count else "train"
        aligned = Image.fromarray(cmp_pair_to_aligned(photo, label, size))
        buffer = io.BytesIO()
        if fmt == "jpg":
            aligned.save(buffer, format="JPEG", quality=jpeg_quality, subsampling=0)
        else:
            aligned.save(buffer, format="PNG")
        target = out_dir / split / f"{photo.stem}.{fmt}"
        atomic_write_bytes(target, buffer.getvalue(), fsync=False)
        written[split].append(target)
    sync_to_disk()
    return {split: paths for split, paths in written.items() if paths}
