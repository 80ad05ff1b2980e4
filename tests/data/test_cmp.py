"""CMP Facade conversion: the facades palette and aligned pairs built from the CMP release."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pix2pix_ilm.data import cmp
from pix2pix_ilm.errors import UsageError


def test_palette_is_jet64_and_matches_the_facades_label_maps(facades_dir: Path, cmp_base_dir: Path) -> None:
    palette = cmp.FACADES_PALETTE
    assert palette.shape == (13, 3)
    assert palette[1].tolist() == [0, 0, 223]  # background
    assert palette[2].tolist() == [0, 48, 255]  # facade
    assert palette[3].tolist() == [0, 128, 255]  # window
    assert palette[12].tolist() == [175, 0, 0]  # shop
    assert len({tuple(c) for c in palette[1:].tolist()}) == 12

    # facades train/2.jpg is CMP cmp_b0100. Inside the large regions (eroded, away from JPEG-blurred borders)
    # the facades colours are this palette's, not the PNG's embedded one (MATLAB jet(12)).
    from scipy import ndimage

    facades_b = np.asarray(Image.open(facades_dir / "train" / "2.jpg").convert("RGB"))[:, 256:].astype(float)
    with Image.open(cmp_base_dir / "cmp_b0100.png") as label:
        embedded = np.array(label.getpalette()[: 3 * 13], dtype=float).reshape(13, 3)
        labels = np.asarray(label.resize((256, 256), Image.NEAREST))
    for cls in (1, 2, 3):  # background, facade, window
        inside = ndimage.binary_erosion(labels == cls, iterations=2)
        assert inside.sum() > 3000
        median = np.median(facades_b[inside], axis=0)
        assert np.linalg.norm(median - palette[cls]) < 6, cls
        assert np.linalg.norm(median - embedded[cls]) > 40, cls

    # Across other images, about half or more of the B pixels lie within 12 of one of our colours (few do for
    # the embedded palette); the rest are JPEG-blurred region borders.
    for name in ("1.jpg", "50.jpg", "300.jpg"):
        pixels = np.asarray(Image.open(facades_dir / "train" / name).convert("RGB"))[:, 256:].reshape(
            -1, 1, 3
        )
        for colours, low, high in ((palette, 0.4, 1.0), (embedded.astype(np.uint8), 0.0, 0.15)):
            distance = np.sqrt(((pixels.astype(int) - colours[None, 1:].astype(int)) ** 2).sum(-1)).min(1)
            assert low < np.mean(distance < 12) < high, name


def test_convert_cmp_builds_aligned_pairs(tmp_path: Path, cmp_base_dir: Path) -> None:
    size = 128
    out = tmp_path / "png"
    written = cmp.convert_cmp(cmp_base_dir, out, size, test_count=1, image_format="png", limit=3)
    assert [p.name for p in written["train"]] == ["cmp_b0001.png", "cmp_b0002.png"]
    assert [p.name for p in written["test"]] == ["cmp_b0003.png"]
    palette = {tuple(c) for c in cmp.FACADES_PALETTE[1:].tolist()}
    for path in written["train"] + written["test"]:
        aligned = np.asarray(Image.open(path).convert("RGB"))
        assert aligned.shape == (size, 2 * size, 3)
        right = aligned[:, size:].reshape(-1, 3)
        assert {tuple(c) for c in np.unique(right, axis=0).tolist()} <= palette
        stem = path.stem
        with Image.open(cmp_base_dir / f"{stem}.png") as label:
            labels = np.asarray(label.resize((size, size), Image.NEAREST))
        assert np.array_equal(aligned[:, size:], cmp.FACADES_PALETTE[labels])
        photo = np.asarray(Image.open(cmp_base_dir / f"{stem}.jpg").convert("RGB").resize((size, size)))
        assert np.abs(aligned[:, :size].astype(int) - photo).mean() < 2.0

    jpg = cmp.convert_cmp(cmp_base_dir, tmp_path / "jpg", size, limit=3)
    assert list(jpg) == ["train"] and len(jpg["train"]) == 3
    aligned = np.asarray(Image.open(jpg["train"][0]).convert("RGB")).astype(int)
    assert aligned.shape == (size, 2 * size, 3)
    with Image.open(cmp_base_dir / "cmp_b0001.jpg") as photo_file:
        photo = np.asarray(photo_file.convert("RGB").resize((size, size), Image.BICUBIC)).astype(int)
    assert np.abs(aligned[:, :size] - photo).mean() < 3.0  # JPEG at quality 95
    right = aligned[:, size:].reshape(-1, 1, 3)
    distance = np.sqrt(((right - cmp.FACADES_PALETTE[None, 1:].astype(int)) ** 2).sum(-1)).min(1)
    assert np.mean(distance < 20) > 0.9


def test_convert_cmp_errors_name_the_file(tmp_path: Path, cmp_base_dir: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    with pytest.raises(UsageError, match="no cmp_\\*.jpg photos"):
        cmp.convert_cmp(base, tmp_path / "out")
    (base / "cmp_b0001.jpg").write_bytes((cmp_base_dir / "cmp_b0001.jpg").read_bytes())
    with pytest.raises(UsageError, match=r"cmp_b0001\.jpg has no label map: .*cmp_b0001\.png is missing"):
        cmp.convert_cmp(base, tmp_path / "out")
    Image.new("P", (10, 10)).save(base / "cmp_b0001.png")
    with pytest.raises(UsageError, match=r"cmp_b0001\.jpg is .* but its label map .*cmp_b0001\.png is"):
        cmp.convert_cmp(base, tmp_path / "out")
    with pytest.raises(UsageError, match="test_count"):
        cmp.convert_cmp(cmp_base_dir, tmp_path / "out", limit=2, test_count=3)
