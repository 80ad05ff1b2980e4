"""A comparison along training (``--score-epochs``): per epoch, each row's mean ± std over seeds and its paired
difference to the baseline row with a t interval, as Markdown and as one figure (docs/table6.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pix2pix_ilm.evaluation.study import Study
from pix2pix_ilm.evaluation.table6_report import column, split_rows
from pix2pix_ilm.viz.plots import save_png


def epoch_tables(
    study: Study, runs: list[dict[str, Any]], splits: list[str]
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``{split: {epoch: split_rows}}`` for every epoch scored in all runs."""
    epochs = [e for e in runs[0].get("epochs", {}) if all(e in r.get("epochs", {}) for r in runs)]
    return {
        split: {e: split_rows(study, [{**r, "splits": r["epochs"][e]} for r in runs], split) for e in epochs}
        for split in splits
    }


def _cell(value: dict[str, Any], digits: int) -> str:
    text = f"{value['mean']:+.{digits}f}"
    return text + (f" [{value['ci'][0]:+.{digits}f}, {value['ci'][1]:+.{digits}f}]" if value["ci"] else "")


def format_epochs(study: Study, summary: dict[str, Any]) -> list[str]:
    """Per split: the metrics of every row by epoch, then the differences to the baseline by epoch."""
    tables = summary.get("epoch_tables") or {}
    curves, digits = study.curve_metrics, {m: column(m)[1] for m in study.curve_metrics}
    lines = []
    for split, by_epoch in tables.items():
        if not by_epoch:
            continue
        rows = next(iter(by_epoch.values()))
        names = [column(m)[0] for m in curves]
        lines += [f"### Along training, split `{split}`", "", "Mean ± std over seeds:", ""]
        lines += ["| epoch | " + " | ".join(f"{r['label']}: {' / '.join(names)}" for r in rows) + " |"]
        lines += ["|---:|" + "---|" * len(rows)]
        for epoch, epoch_rows in by_epoch.items():
            cells = [
                " / ".join(
                    f"{r['metrics'][m]['mean']:.{digits[m]}f} ± {r['metrics'][m]['std']:.{digits[m]}f}"
                    for m in curves
                )
                for r in epoch_rows
            ]
            lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
        others = [r for r in rows if r["config"] != study.baseline and r["paired"]]
        if others:
            n, base = others[0]["paired"][curves[0]]["n"], study.baseline_label
            lines += ["", f"Difference to {base} (n = {n} paired seeds, df = {n - 1}, 95 % t interval):", ""]
            lines += [
                "| epoch | " + " | ".join(f"{r['label']}: Δ {' / Δ '.join(names)}" for r in others) + " |"
            ]
            lines += ["|---:|" + "---|" * len(others)]
            for epoch, epoch_rows in by_epoch.items():
                paired = {r["config"]: r["paired"] for r in epoch_rows}
                cells = [" / ".join(_cell(paired[r["config"]][m], digits[m]) for m in curves) for r in others]
                lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def write_epoch_figure(study: Study, summary: dict[str, Any], path: Path) -> None:
    """Δ of the curve metrics to the baseline by epoch, one line per row with its interval as a band."""
    tables = {split: t for split, t in (summary.get("epoch_tables") or {}).items() if t}
    curves = study.curve_metrics
    fig = Figure(figsize=(4.2 * len(curves), 3.0 * len(tables)), layout="constrained")
    axes = fig.subplots(len(tables), len(curves), squeeze=False)
    for i, (split, by_epoch) in enumerate(tables.items()):
        epochs = [int(e) for e in by_epoch]
        for j, metric in enumerate(curves):
            ax = axes[i][j]
            ax.axhline(0, color="black", linewidth=0.8)
            for r in next(iter(by_epoch.values())):
                if r["config"] == study.baseline or not r["paired"]:
                    continue
                values = [
                    {x["config"]: x for x in rows}[r["config"]]["paired"][metric]
                    for rows in by_epoch.values()
                ]
                (line,) = ax.plot(epochs, [v["mean"] for v in values], "o-", ms=3, label=r["label"])
                if all(v["ci"] for v in values):
                    low, high = zip(*(v["ci"] for v in values), strict=True)
                    ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.15)
            ax.set(xlabel="epoch", title=f"Δ {column(metric)[0]} vs {study.baseline_label}, split {split}")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    save_png(fig, path)
