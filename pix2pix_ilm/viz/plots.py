"""PNG plots drawn with Pillow: loss curves of a training run and per-image scores of an evaluation.

Pillow is already a dependency, so the plots need no plotting library. Losses of different scales get
separate panels (:func:`loss_groups`): the GAN terms (around 0.7) would be flat lines on an axis that also
holds the L1 term (tens).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pix2pix_ilm.files import atomic_write_bytes

# matplotlib's "tab10" colours: distinct, readable on white.
PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)
_GRID = (225, 225, 225)
_AXIS = (90, 90, 90)
_TEXT = (20, 20, 20)


@dataclass
class Panel:
    """One plot: a title, x values and named series of y values (NaN or None where a series has no value)."""

    title: str
    x: Sequence[float]
    series: Mapping[str, Sequence[float | None]]
    x_label: str = "epoch"
    log_y: bool = False
    notes: list[str] = field(default_factory=list)


GAN_GROUP = "GAN terms"
L1_GROUP = "L1 reconstruction"


def loss_groups(names: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Split loss names by scale: the GAN terms (``G_GAN``, ``D_real``, ``D_fake``, ...) and the L1 terms."""
    l1 = [n for n in names if "L1" in n.upper()]
    gan = [n for n in names if n not in l1]
    groups = [(GAN_GROUP, gan), (L1_GROUP, l1)]
    return [(title, members) for title, members in groups if members]


def loss_panels(entries: Sequence[Mapping[str, float]], log_y: bool = False) -> list[Panel]:
    """Panels of :func:`loss_groups` from loss-log entries (``epoch_progress`` plus one value per loss)."""
    meta = {"iteration", "epoch", "epoch_progress", "lr", "time"}
    names = list(dict.fromkeys(k for e in entries for k in e if k not in meta))
    x = [float(e.get("epoch_progress", i + 1)) for i, e in enumerate(entries)]
    return [
        Panel(title, x, {n: [e.get(n) for e in entries] for n in members}, log_y=log_y)
        for title, members in loss_groups(names)
    ]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size)
    except TypeError:  # Pillow < 10.1: one bitmap size only
        return ImageFont.load_default()


def _nice_step(span: float, count: int) -> float:
    raw = span / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if factor * magnitude >= raw:
            return factor * magnitude
    return 10 * magnitude


def _linear_ticks(low: float, high: float, count: int = 5) -> list[float]:
    step = _nice_step(high - low, count)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _log_ticks(low: float, high: float) -> list[float]:
    lo, hi = math.floor(math.log10(low)), math.ceil(math.log10(high))
    decades = [10.0**k for k in range(lo, hi + 1)]
    if hi - lo <= 2:
        decades = sorted({d * m for d in decades for m in (1, 2, 5)})
    return [t for t in decades if low <= t <= high] or [low, high]


def _label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.0e}"
    return f"{value:.4g}"


def _limits(values: np.ndarray, log_y: bool) -> tuple[float, float]:
    low, high = float(values.min()), float(values.max())
    if log_y:
        if low == high:
            return low / 2, high * 2
        return low, high
    if low == high:
        pad = abs(low) * 0.1 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.05
    return low - pad, high + pad


def _draw_panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], panel: Panel) -> None:
    left, top, right, bottom = box
    small, normal = _font(12), _font(14)
    x = np.asarray(panel.x, dtype=np.float64)
    series = {
        n: np.array([np.nan if v is None else v for v in ys], dtype=np.float64)
        for n, ys in panel.series.items()
    }
    title = panel.title + (" (log scale)" if panel.log_y else "")
    draw.text((left, top - 22), title, fill=_TEXT, font=normal)
    plot = (left + 62, top, right - 150, bottom - 34)
    draw.rectangle(plot, outline=_AXIS)
    shown = {
        n: np.where(np.isfinite(ys) & ((ys > 0) if panel.log_y else True), ys, np.nan)
        for n, ys in series.items()
    }
    values = np.concatenate([ys[np.isfinite(ys)] for ys in shown.values()] or [np.array([])])
    finite_x = x[np.isfinite(x)]
    if values.size == 0 or finite_x.size == 0:
        draw.text((plot[0] + 10, plot[1] + 10), "no values yet", fill=_AXIS, font=normal)
        return
    y_low, y_high = _limits(values, panel.log_y)
    x_low, x_high = float(finite_x.min()), float(finite_x.max())
    if x_low == x_high:
        x_low, x_high = x_low - 0.5, x_high + 0.5

    def to_px(xv: float, yv: float) -> tuple[float, float]:
        fx = (xv - x_low) / (x_high - x_low)
        if panel.log_y:
            fy = (math.log10(yv) - math.log10(y_low)) / (math.log10(y_high) - math.log10(y_low))
        else:
            fy = (yv - y_low) / (y_high - y_low)
        return plot[0] + fx * (plot[2] - plot[0]), plot[3] - fy * (plot[3] - plot[1])

    y_ticks = _log_ticks(y_low, y_high) if panel.log_y else _linear_ticks(y_low, y_high)
    for tick in y_ticks:
        _, py = to_px(x_low, tick)
        draw.line((plot[0] + 1, py, plot[2] - 1, py), fill=_GRID)
        text = _label(tick)
        width = draw.textlength(text, font=small)
        draw.text((plot[0] - 6 - width, py - 7), text, fill=_TEXT, font=small)
    for tick in _linear_ticks(x_low, x_high, 6):
        px, _ = to_px(tick, y_low)
        draw.line((px, plot[3], px, plot[3] + 4), fill=_AXIS)
        text = _label(tick)
        draw.text((px - draw.textlength(text, font=small) / 2, plot[3] + 6), text, fill=_TEXT, font=small)
    label_width = draw.textlength(panel.x_label, font=small)
    draw.text(((plot[0] + plot[2] - label_width) / 2, plot[3] + 20), panel.x_label, fill=_TEXT, font=small)

    for index, (name, ys) in enumerate(shown.items()):
        colour = PALETTE[index % len(PALETTE)]
        run: list[tuple[float, float]] = []
        for xv, yv in [*zip(x, ys, strict=True), (math.nan, math.nan)]:
            if math.isfinite(xv) and math.isfinite(yv):
                run.append(to_px(xv, yv))
                continue
            if len(run) == 1:
                px, py = run[0]
                draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=colour)
            elif run:
                draw.line(run, fill=colour, width=2)
            run = []
        legend_y = plot[1] + 4 + 18 * index
        draw.line((plot[2] + 10, legend_y + 7, plot[2] + 30, legend_y + 7), fill=colour, width=3)
        last = ys[np.isfinite(ys)]
        text = f"{name} {_label(float(last[-1]))}" if last.size else f"{name} (none)"
        draw.text((plot[2] + 36, legend_y), text, fill=_TEXT, font=small)
    for offset, note in enumerate(panel.notes):
        draw.text((plot[2] + 10, plot[3] - 16 * (len(panel.notes) - offset)), note, fill=_AXIS, font=small)


def render_panels(panels: Sequence[Panel], width: int = 900, panel_height: int = 280) -> Image.Image:
    """Draw ``panels`` one above the other on a white image."""
    if not panels:
        raise ValueError("render_panels needs at least one panel")
    image = Image.new("RGB", (width, panel_height * len(panels)), "white")
    draw = ImageDraw.Draw(image)
    for index, panel in enumerate(panels):
        top = index * panel_height
        _draw_panel(draw, (10, top + 30, width - 10, top + panel_height - 6), panel)
    return image


def save_png(image: Image.Image, path: str | Path, *, fsync: bool = True) -> None:
    """Write ``image`` as a PNG, atomically (``fsync=False``: see :func:`~pix2pix_ilm.files.atomic_write_bytes`)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue(), fsync=fsync)


def _strip_panel(
    draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], name: str, scores: np.ndarray, better: str
) -> None:
    left, top, right, bottom = box
    small, normal = _font(12), _font(14)
    finite = scores[np.isfinite(scores)]
    plot = (left + 10, top + 22, right - 20, bottom - 30)
    draw.rectangle(plot, outline=_AXIS)
    if finite.size == 0:
        draw.text((left, top), f"{name}: no finite scores", fill=_TEXT, font=normal)
        return
    mean, std = float(finite.mean()), float(finite.std())
    title = f"{name}: mean {_label(mean)} ± {_label(std)} over {finite.size} images ({better} is better)"
    if finite.size < scores.size:
        title += f"; {scores.size - finite.size} not finite, not shown"
    draw.text((left, top), title, fill=_TEXT, font=normal)
    low, high = _limits(finite, log_y=False)

    def to_x(value: float) -> float:
        return plot[0] + (value - low) / (high - low) * (plot[2] - plot[0])

    for tick in _linear_ticks(low, high, 6):
        px = to_x(tick)
        draw.line((px, plot[1] + 1, px, plot[3] - 1), fill=_GRID)
        text = _label(tick)
        draw.text((px - draw.textlength(text, font=small) / 2, plot[3] + 4), text, fill=_TEXT, font=small)
    # A deterministic spread in y (golden-ratio sequence) so that equal scores do not hide each other.
    height = plot[3] - plot[1] - 16
    for index, value in enumerate(finite):
        px = to_x(float(value))
        py = plot[1] + 8 + ((index * 0.6180339887) % 1.0) * height
        draw.ellipse((px - 3, py - 3, px + 3, py + 3), outline=PALETTE[0], fill=(174, 199, 232))
    px = to_x(mean)
    draw.line((px, plot[1] + 1, px, plot[3] - 1), fill=PALETTE[3], width=2)


def render_score_strips(
    per_image: Mapping[str, Mapping[str, float | None]],
    metrics: Sequence[str],
    higher_is_better: Mapping[str, bool],
    width: int = 900,
    panel_height: int = 150,
) -> Image.Image:
    """One strip per metric: every image's score as a dot, the mean as a red line."""
    if not metrics:
        raise ValueError("render_score_strips needs at least one metric")
    image = Image.new("RGB", (width, panel_height * len(metrics)), "white")
    draw = ImageDraw.Draw(image)
    for index, name in enumerate(metrics):
        scores = np.array(
            [np.nan if s.get(name) is None else s[name] for s in per_image.values()], dtype=np.float64
        )
        better = "higher" if higher_is_better.get(name, False) else "lower"
        top = index * panel_height
        _strip_panel(draw, (10, top + 8, width - 10, top + panel_height - 4), name, scores, better)
    return image
