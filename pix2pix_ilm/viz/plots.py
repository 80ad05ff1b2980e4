"""PNG plots with matplotlib's object API (no display, no global state): the loss curves of a training run
(losses of different scales in separate panels, :func:`loss_groups`) and the per-image scores of an
evaluation."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from pix2pix_ilm.files import atomic_write_bytes

GAN_GROUP = "GAN terms"
L1_GROUP = "L1 reconstruction"
_LOG_META = {"iteration", "epoch", "epoch_progress", "lr", "time"}


def loss_groups(names: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Split loss names by scale, a panel each: the GAN terms (``G_GAN``, ``D_real``, ``D_fake``, ...; around
    1) would be flat lines on an axis that also holds the L1 terms (tens)."""
    l1 = [n for n in names if "L1" in n.upper()]
    groups = [(GAN_GROUP, [n for n in names if n not in l1]), (L1_GROUP, l1)]
    return [(title, members) for title, members in groups if members]


def _values(rows: Sequence[Mapping[str, float | None]], name: str) -> np.ndarray:
    """One value per row, NaN where ``name`` is missing or None."""
    return np.array([np.nan if r.get(name) is None else r[name] for r in rows], dtype=np.float64)


def render_losses(entries: Sequence[Mapping[str, float]], log_y: bool = False) -> Figure:
    """One panel per :func:`loss_groups` group from loss-log entries (``epoch_progress`` plus one value per
    loss) against epochs; each legend entry ends with the loss's last value. ``log_y``: log y axes (values of
    0 or less left out) on panels with anything left to show."""
    names = list(dict.fromkeys(k for e in entries for k in e if k not in _LOG_META))
    groups = loss_groups(names)
    if not groups:
        raise ValueError("render_losses needs at least one loss")
    x = [float(e.get("epoch_progress", i + 1)) for i, e in enumerate(entries)]
    figure = Figure(figsize=(9, 2.8 * len(groups)), layout="constrained")
    for ax, (title, members) in zip(figure.subplots(len(groups), squeeze=False)[:, 0], groups, strict=True):
        ax.set_title(title, loc="left")
        ax.set_xlabel("epoch")
        shown = 0
        for name in members:
            y = _values(entries, name)
            if log_y:
                y[~(y > 0)] = np.nan  # a log axis has no place for 0 or less
            finite = y[np.isfinite(y)]
            shown += finite.size
            label = f"{name} {finite[-1]:.4g}" if finite.size else f"{name} (none)"
            # a lone point has no line to draw: mark every point then
            ax.plot(x, y, label=label, marker="o" if finite.size == 1 else None, markersize=4)
        if not shown:
            ax.text(0.5, 0.5, "no values yet", transform=ax.transAxes, ha="center", color="gray")
        elif log_y:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return figure


def render_score_strips(
    per_image: Mapping[str, Mapping[str, float | None]],
    metrics: Sequence[str],
    higher_is_better: Mapping[str, bool],
) -> Figure:
    """One strip per metric: every image's score as a dot, the mean as a red line."""
    if not metrics:
        raise ValueError("render_score_strips needs at least one metric")
    figure = Figure(figsize=(9, 1.5 * len(metrics)), layout="constrained")
    for ax, name in zip(figure.subplots(len(metrics), squeeze=False)[:, 0], metrics, strict=True):
        scores = _values(list(per_image.values()), name)
        finite = scores[np.isfinite(scores)]
        ax.set(yticks=[], ylim=(0, 1))
        if finite.size == 0:
            ax.set_title(f"{name}: no finite scores", loc="left")
            continue
        better = "higher" if higher_is_better.get(name, False) else "lower"
        title = f"{name}: mean {finite.mean():.4g} ± {finite.std():.4g} over {finite.size} images ({better} is better)"
        if finite.size < scores.size:
            title += f"; {scores.size - finite.size} not finite, not shown"
        ax.set_title(title, loc="left")
        # a deterministic spread in y (golden-ratio sequence) so that equal scores do not hide each other
        spread = 0.1 + 0.8 * ((np.arange(finite.size) * 0.6180339887) % 1.0)
        ax.scatter(finite, spread, s=25, facecolor="#aec7e8", edgecolor="tab:blue", zorder=2)
        ax.axvline(finite.mean(), color="tab:red", linewidth=2)
        ax.grid(axis="x", alpha=0.3)
    return figure


def save_png(figure: Figure, path: str | Path, *, fsync: bool = True) -> None:
    """Write ``figure`` as a PNG, atomically (``fsync=False``: see :func:`~pix2pix_ilm.files.atomic_write_bytes`)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)  # the sizes above are in inches: 900 pixels wide
    atomic_write_bytes(path, buffer.getvalue(), fsync=fsync)
