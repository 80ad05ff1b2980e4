"""The original CMP Facade release as aligned A|B pairs like the pix2pix facades set: photo left, label map
coloured with :data:`FACADES_PALETTE` right (how the palette was matched: docs/data.md)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.files import atomic_write_bytes, sync_to_disk


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


# (13, 3) uint8: the colour of CMP class c in the pix2pix facades label maps is row 5c of jet(64).
FACADES_PALETTE: np.ndarray = np.round(_matlab_jet(64)[5 * np.arange(13)] * 255).astype(np.uint8)
FACADES_PALETTE.setflags(write=False)


def find_cmp_pairs(base_dir: str | Path) -> list[tuple[Path, Path]]:
    """``(photo, label map)`` pairs ``cmp_*.jpg`` / ``cmp_*.png`` in ``base_dir`` (or its ``base/``)."""
    base_dir = Path(base_dir)
    if not base_dir.is_dir():
        raise UsageError(f"CMP folder not found: {base_dir}")
    if not any(base_dir.glob("cmp_*.jpg")) and (base_dir / "base").is_dir():
        base_dir = base_dir / "base"
    photos = sorted(base_dir.glob("cmp_*.jpg"))
    if not photos:
        raise UsageError(f"no cmp_*.jpg photos in {base_dir} (expected the CMP Facade DB 'base' folder)")
    for photo in photos:
        if not photo.with_suffix(".png").is_file():
            raise UsageError(f"{photo} has no label map: {photo.with_suffix('.png')} is missing")
    return [(photo, photo.with_suffix(".png")) for photo in photos]


def cmp_pair_to_aligned(photo_path: Path, label_path: Path, size: int = 256) -> np.ndarray:
    """One aligned ``[size, 2*size, 3]`` uint8 image: resized photo | coloured label map."""
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
    return np.concatenate([left, FACADES_PALETTE[labels]], axis=1)


def convert_cmp(
    base_dir: str | Path,
    out_dir: str | Path,
    size: int = 256,
    *,
    test_count: int = 0,
    image_format: str = "jpg",
    limit: int | None = None,
) -> dict[str, list[Path]]:
    """Write aligned pairs of the first ``limit`` CMP pairs to ``<out_dir>/train/<cmp stem>.<image_format>``,
    the last ``test_count`` to ``test/``; returns ``{split: [written paths]}``. ``jpg`` (quality 95, like the
    facades set) or lossless ``png`` (the right half then holds only palette colours)."""
    if size < 1:
        raise UsageError(f"size must be positive, got {size}")
    fmt = image_format.lower().lstrip(".")
    if fmt not in ("jpg", "png"):
        raise UsageError(f"image format must be jpg or png, got {image_format!r}")
    pairs = find_cmp_pairs(base_dir)[: None if limit is None else max(0, limit)]
    if not 0 <= test_count <= len(pairs):
        raise UsageError(f"test_count must be between 0 and {len(pairs)}, got {test_count}")
    written: dict[str, list[Path]] = {"train": [], "test": []}
    for index, (photo, label) in enumerate(pairs):
        split = "test" if index >= len(pairs) - test_count else "train"
        buffer = io.BytesIO()
        options = {"format": "JPEG", "quality": 95, "subsampling": 0} if fmt == "jpg" else {"format": "PNG"}
        Image.fromarray(cmp_pair_to_aligned(photo, label, size)).save(buffer, **options)
        target = Path(out_dir) / split / f"{photo.stem}.{fmt}"
        atomic_write_bytes(target, buffer.getvalue(), fsync=False)
        written[split].append(target)
    sync_to_disk()
    return {split: paths for split, paths in written.items() if paths}
