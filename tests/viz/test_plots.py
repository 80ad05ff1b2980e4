"""PNG plots drawn with Pillow: loss panels per scale, log scale, per-image score strips."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from pix2pix_ilm.viz.plots import (
    PALETTE,
    Panel,
    loss_groups,
    loss_panels,
    render_panels,
    render_score_strips,
)


def _colour_rows(image: Image.Image, colour: tuple[int, int, int]) -> np.ndarray:
    """Row indices of the pixels of exactly ``colour``."""
    pixels = np.asarray(image)
    return np.nonzero((pixels == np.array(colour, dtype=np.uint8)).all(axis=2))[0]


def _entries(n: int) -> list[dict[str, float]]:
    return [
        {"iteration": i, "epoch_progress": i / 10, "G_GAN": 0.7 + 0.01 * i, "G_L1": 60.0 - i, "D_real": 0.6}
        for i in range(1, n + 1)
    ]


def test_losses_are_split_by_scale():
    assert loss_groups(["G_GAN", "G_L1", "D_real", "D_fake"]) == [
        ("GAN terms", ["G_GAN", "D_real", "D_fake"]),
        ("L1 reconstruction", ["G_L1"]),
    ]
    assert loss_groups(["G_GAN"]) == [("GAN terms", ["G_GAN"])]
    panels = loss_panels(_entries(20))
    assert [p.title for p in panels] == ["GAN terms", "L1 reconstruction"]
    assert list(panels[1].series) == ["G_L1"] and panels[1].x[0] == pytest.approx(0.1)
    assert panels[1].series["G_L1"][-1] == 40.0


def test_each_panel_draws_its_own_curves():
    image = render_panels(loss_panels(_entries(30)), width=800, panel_height=250)
    assert image.size == (800, 500)
    first = _colour_rows(image, PALETTE[0])  # G_GAN in the top panel, G_L1 in the bottom one
    assert (first < 250).sum() > 50 and (first >= 250).sum() > 50
    second = _colour_rows(image, PALETTE[1])  # D_real: top panel only
    assert second.size > 50 and second.max() < 250


def test_log_scale_skips_values_it_cannot_show():
    panel = Panel("losses", [1, 2, 3, 4], {"a": [1.0, -1.0, None, 100.0], "b": [math.nan] * 4}, log_y=True)
    image = render_panels([panel])
    assert _colour_rows(image, PALETTE[0]).size > 0  # the two positive points of "a"
    empty = render_panels([Panel("losses", [1], {"a": [None]})])
    assert _colour_rows(empty, PALETTE[0]).size == 0
    with pytest.raises(ValueError):
        render_panels([])


def test_score_strips_one_panel_per_metric():
    per_image = {str(i): {"rmse": 10.0 + i, "ssim": None if i == 3 else 0.1 * i} for i in range(8)}
    image = render_score_strips(per_image, ["rmse", "ssim"], {"ssim": True}, width=700, panel_height=120)
    assert image.size == (700, 240)
    dots = _colour_rows(image, (174, 199, 232))  # the dots' fill
    assert (dots < 120).any() and (dots >= 120).any()
    mean_line = _colour_rows(image, PALETTE[3])
    assert (mean_line < 120).any() and (mean_line >= 120).any()
