"""The PNG plots: loss panels per scale, log scale, per-image score strips, written as real PNGs."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from pix2pix_ilm.viz.plots import loss_groups, render_losses, render_score_strips, save_png


def _entries(n: int) -> list[dict[str, float]]:
    return [
        {"iteration": i, "epoch_progress": i / 10, "G_GAN": 0.7 + 0.01 * i, "G_L1": 60.0 - i, "D_real": 0.6}
        for i in range(1, n + 1)
    ]


def _png(figure, tmp_path) -> tuple[int, int]:
    """Save ``figure`` as a PNG (no warning allowed) and return its size in pixels."""
    path = tmp_path / "sub" / "plot.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        save_png(figure, path)
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def _legend(ax) -> list[str]:
    return [text.get_text() for text in ax.get_legend().get_texts()]


def test_losses_are_split_by_scale(tmp_path):
    assert loss_groups(["G_GAN", "G_L1", "D_real", "D_fake"]) == [
        ("GAN terms", ["G_GAN", "D_real", "D_fake"]),
        ("L1 reconstruction", ["G_L1"]),
    ]
    assert loss_groups(["G_GAN"]) == [("GAN terms", ["G_GAN"])]
    figure = render_losses(_entries(20))
    gan, l1 = figure.axes
    assert [gan.get_title("left"), l1.get_title("left")] == ["GAN terms", "L1 reconstruction"]
    assert _legend(gan) == ["G_GAN 0.9", "D_real 0.6"] and _legend(l1) == ["G_L1 40"]  # the last values
    (line,) = l1.get_lines()
    assert line.get_xdata()[0] == pytest.approx(0.1) and line.get_ydata()[-1] == 40.0  # epochs on x
    assert gan.get_xlabel() == "epoch" and gan.get_yscale() == l1.get_yscale() == "linear"
    assert _png(figure, tmp_path) == (900, 560)
    assert _png(render_losses([{"epoch_progress": 1, "G_GAN": 0.7}]), tmp_path) == (900, 280)


def test_log_scale_leaves_out_what_it_cannot_show(tmp_path):
    entries = [
        {"epoch_progress": e, "a": a, "b_L1": math.nan} for e, a in enumerate([1.0, -1.0, None, 100.0])
    ]
    figure = render_losses(entries, log_y=True)
    gan, l1 = figure.axes
    assert gan.get_yscale() == "log" and _legend(gan) == ["a 100"]
    assert np.isnan(gan.get_lines()[0].get_ydata()[1:3]).all()  # -1 and None
    # nothing positive to show: a linear axis that says so, and the legend names the loss
    assert l1.get_yscale() == "linear" and _legend(l1) == ["b_L1 (none)"]
    assert [t.get_text() for t in l1.texts] == ["no values yet"]
    assert _png(figure, tmp_path) == (900, 560)
    lone = render_losses([{"epoch_progress": 1, "G_GAN": None}, {"epoch_progress": 2, "G_GAN": 0.5}])
    assert lone.axes[0].get_lines()[0].get_marker() == "o"  # a single point is still drawn
    with pytest.raises(ValueError):
        render_losses([{"iteration": 1, "epoch_progress": 0.1}])


def test_score_strips_one_panel_per_metric(tmp_path):
    per_image = {str(i): {"rmse": 10.0 + i, "ssim": None if i == 3 else 0.1 * i} for i in range(8)}
    figure = render_score_strips(per_image, ["rmse", "ssim"], {"ssim": True})
    rmse, ssim = figure.axes
    assert rmse.get_title("left") == "rmse: mean 13.5 ± 2.291 over 8 images (lower is better)"
    assert ssim.get_title("left").endswith("(higher is better); 1 not finite, not shown")
    assert len(rmse.collections[0].get_offsets()) == 8 and len(ssim.collections[0].get_offsets()) == 7
    (mean,) = rmse.get_lines()
    assert mean.get_xdata()[0] == pytest.approx(13.5)
    assert _png(figure, tmp_path) == (900, 300)
    empty = render_score_strips({"a": {"rmse": None}}, ["rmse"], {})
    assert empty.axes[0].get_title("left") == "rmse: no finite scores"
    with pytest.raises(ValueError):
        render_score_strips(per_image, [], {})


def test_plots_leave_matplotlib_global_state_alone(tmp_path):
    code = (
        "import sys, matplotlib; backend = dict.__getitem__(matplotlib.rcParams, 'backend'); "
        "from pix2pix_ilm.viz.plots import render_losses, save_png; "
        f"save_png(render_losses([{{'G_GAN': 0.7}}]), {str(tmp_path / 'a.png')!r}); "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'; "
        "assert dict.__getitem__(matplotlib.rcParams, 'backend') is backend, 'the backend was set'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
