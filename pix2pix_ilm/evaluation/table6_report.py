"""A comparison's table from the runs' records: mean ± std per row, paired differences to the baseline row with a t
interval, the Markdown, the figure and sample grids (docs/table6.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from pix2pix_ilm.data.images import load_rgb, natural_key
from pix2pix_ilm.evaluation.metrics import get_metric
from pix2pix_ilm.evaluation.study import Study
from pix2pix_ilm.stats import CONFIDENCE, mean_std, t_interval
from pix2pix_ilm.viz.plots import save_png

# metric -> (column title, digits)
TITLES: dict[str, tuple[str, int]] = {
    "rmse": ("RMSE", 2),
    "rmse_rgb": ("RMSE_rgb", 2),
    "lpips": ("LPIPS", 3),
    "ssim": ("SSIM", 3),
    "psnr": ("PSNR", 2),
    "mae": ("MAE", 2),
}


def column(metric: str) -> tuple[str, int]:
    """(title, digits) of a metric's column."""
    return TITLES.get(metric, (metric, 3))


def _columns(study: Study) -> dict[str, tuple[str, int, bool, str | None]]:
    """metric -> (title, digits, higher is better, the reference's key for it, if it has a reference value)."""
    return {
        m: (*column(m), get_metric(m).higher_is_better, m if m in study.reference_metrics else None)
        for m in study.columns
    }


def verdict(interval: dict[str, Any], higher_is_better: bool) -> str:
    """``gain`` / ``loss`` when the interval excludes 0, ``within seed noise`` when it holds 0."""
    if interval["ci"] is None:
        return "one seed, no interval"
    low, high = interval["ci"]
    if low <= 0 <= high:
        return "within seed noise"
    return "gain" if (low > 0) == higher_is_better else "loss"


def split_rows(study: Study, runs: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    """Per row: each metric's mean ± std over seeds and its per-seed differences to the baseline (same images)."""
    base = {r["seed"]: r["splits"][split] for r in runs if r["config"] == study.baseline}
    rows = []
    for slug in dict.fromkeys(r["config"] for r in runs):
        mine = sorted((r for r in runs if r["config"] == slug), key=lambda r: r["seed"])
        row = {"config": slug, "label": mine[0]["label"], "seeds": [r["seed"] for r in mine]}
        row |= {"n_images": mine[0]["splits"][split]["n"]}
        row |= {study.reference: mine[0][study.reference]} if study.reference else {}
        row |= {"metrics": {}, "paired": {}}
        for r in mine:  # paired on the same evaluation images, or not at all
            if r["seed"] in base and r["splits"][split]["images_digest"] != base[r["seed"]]["images_digest"]:
                raise ValueError(
                    f"{r['name']} was scored on other images than {study.baseline}_seed{r['seed']}"
                )
        for metric in mine[0]["splits"][split]["mean"]:
            per_seed = {r["seed"]: r["splits"][split]["mean"][metric] for r in mine}
            row["metrics"][metric] = mean_std(list(per_seed.values())) | {"per_seed": per_seed}
            paired = {s: v - base[s]["mean"][metric] for s, v in per_seed.items() if s in base}
            if slug != study.baseline and paired:
                interval = t_interval(list(paired.values()))
                verdict_text = verdict(interval, get_metric(metric).higher_is_better)
                row["paired"][metric] = interval | {"per_seed": paired, "verdict": verdict_text}
        rows.append(row)
    return rows


def format_split(study: Study, split: str, rows: list[dict[str, Any]]) -> list[str]:
    """One split: ours (mean ± std over seeds) beside the reference, then paired differences and verdicts."""
    columns, reference, base = _columns(study), study.reference, study.baseline_label
    header = [study.row_title]
    for title, _, higher, paper_key in columns.values():
        header += [f"{title} {'↑' if higher else '↓'}"] + ([str(reference)] if paper_key else [])
    lines = [f"### Split `{split}`", "", "| " + " | ".join([*header, "seeds", "images"]) + " |"]
    lines.append("|---|" + "---:|" * (len(header) + 1))
    for row in rows:
        cells = [row["label"]]
        for metric, (_, digits, _, paper_key) in columns.items():
            stats = row["metrics"][metric]
            cells.append(
                f"{stats['mean']:.{digits}f}" + (f" ± {stats['std']:.{digits}f}" if stats["n"] > 1 else "")
            )
            value = row[str(reference)] if paper_key else None
            cells += [f"{value[paper_key]:.{digits}f}" if value else "–"] if paper_key else []
        lines.append("| " + " | ".join([*cells, str(len(row["seeds"])), str(row["n_images"])]) + " |")
    paired = [row for row in rows if row["paired"]]
    if not paired:
        return [*lines, ""]
    title = (
        f"Difference to {base} per seed (same images): mean [{CONFIDENCE:.0%} Student-t interval over n paired "
        "seeds, n − 1 degrees of freedom]"
    )
    lines += ["", title, "", f"| vs {base} | " + " | ".join(f"Δ {c[0]}" for c in columns.values()) + " |"]
    lines.append("|---|" + "---|" * len(columns))
    for row in paired:
        cells = [row["label"]]
        for metric, (_, digits, _, _) in columns.items():
            p = row["paired"][metric]
            ci = f" [{p['ci'][0]:+.{digits}f}, {p['ci'][1]:+.{digits}f}]" if p["ci"] else ""
            seeds = ", ".join(f"{v:+.{digits}f}" for v in p["per_seed"].values())
            cells.append(f"{p['mean']:+.{digits}f}{ci}; seeds: {seeds}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for row in paired:
        verdicts = {}
        for metric, (title, *_) in columns.items():
            verdicts.setdefault(row["paired"][metric]["verdict"], []).append(title)
        parts = [f"{' and '.join(titles)}: {v}" for v, titles in verdicts.items()]
        n = row["paired"][study.columns[0]]["n"]
        evidence = f"n = {n} paired seed{'s' * (n != 1)}, df = {n - 1}, {row['n_images']} images each"
        lines.append(f"- {row['label']} vs {base} ({evidence}): " + "; ".join(parts) + ".")
    return [*lines, ""]


def format_table(study: Study, summary: dict[str, Any]) -> str:
    lines = [
        f"# {study.title} (preset `{summary['preset']}`"
        + "".join(f", {k}={v}" for k, v in summary["overrides"].items())
        + f"; seeds {summary['seeds']}, test dropout {summary['test_dropout']})",
        "",
        *study.notes,
        "",
    ]
    if plan := summary.get("budget"):
        requested, fitted = plan["requested_epochs"], plan["epochs"]
        fit = "kept" if fitted == requested else f"fitted to {fitted[0]} + {fitted[1]} epochs"
        lines += [
            f"Budget {plan['budget_min']:g} min: {requested[0]} + {requested[1]} epochs {fit} from "
            f"{plan['steps_per_s_per_run']} steps/s per run ({plan['runs_at_a_time']} at a time), "
            f"{plan['projected_min']} min projected.",
            "",
        ]
    rows = [row for table in summary["tables"].values() for row in table]
    seeds, images = min(len(r["seeds"]) for r in rows), min(r["n_images"] for r in rows)
    if seeds < 3 or images < 100:
        lines += [
            f"**Little evidence: {seeds} seed(s) × {images} images.** Intervals over fewer than 3 seeds are "
            "very wide or absent, and fewer than 100 images make each seed's score noisy: read the verdicts "
            "as a smoke test, not as an answer.",
            "",
        ]
    for split, rows in summary["tables"].items():
        lines += format_split(study, split, rows)
    lacking = summary.get("lacking", {})
    if untrained := [name for name in summary["missing"] if name not in lacking]:
        names = ", ".join(untrained)
        lines += [f"Not trained, nor saved with these options and images, so not in the table: {names}.", ""]
    if lacking:
        names = ", ".join(f"{name} ({', '.join(metrics)})" for name, metrics in lacking.items())
        lines += [
            f"Not in the table, their saved scores lack a metric asked for and no trained run is left to score "
            f"it: {names}; train them again, or leave the metric out of --metrics.",
            "",
        ]
    jobs = f"{summary['jobs']} training run{'s' * (summary['jobs'] != 1)} at a time"
    wall = f"Wall time: {summary['wall_seconds'] / 60:.1f} min ({jobs})."
    return "\n".join([*lines, f"{wall} Options: `{json.dumps(summary['preset_options'])}`", ""])


def write_figure(study: Study, summary: dict[str, Any], path: Path) -> None:
    """Per split, each metric's values per row (seeds as dots, mean as a bar, the baseline in orange, the reference
    as red crosses) over the answer: each row's paired difference to the baseline with its interval."""
    tables, columns, base = summary["tables"], _columns(study), study.baseline_label
    fig = Figure(figsize=(max(2.6 * len(columns), 5.2), 4.8 * len(tables)), layout="tight")
    axes = fig.subplots(2 * len(tables), len(columns), squeeze=False)
    for i, (split, rows) in enumerate(tables.items()):
        for j, (metric, (title, _, higher, paper_key)) in enumerate(columns.items()):
            top, bottom = axes[2 * i][j], axes[2 * i + 1][j]
            for x, row in enumerate(rows):
                colour = "tab:orange" if row["config"] == study.baseline else "tab:blue"
                values = list(row["metrics"][metric]["per_seed"].values())
                top.plot([x] * len(values), values, "o", ms=4, color=colour, alpha=0.8)
                top.hlines(row["metrics"][metric]["mean"], x - 0.3, x + 0.3, color=colour)
                if paper_key and row[str(study.reference)]:
                    top.plot([x], [row[str(study.reference)][paper_key]], "x", ms=7, color="tab:red")
                if paired := row["paired"].get(metric):
                    _draw_difference(bottom, x, paired)
            bottom.axhline(0, color="black", linewidth=0.8)
            top.set_title(f"{title} {'↑' if higher else '↓'} (split {split})", fontsize=8)
            bottom.set_title(f"Δ {title} vs {base} (split {split})", fontsize=8)
            for ax in (top, bottom):
                ax.set_xlim(-0.5, len(rows) - 0.5)
                ax.set_xticks(
                    range(len(rows)), [r["config"] for r in rows], rotation=35, ha="right", fontsize=7
                )
                ax.tick_params(axis="y", labelsize=7)
    reference = f", red x: {study.reference}" if study.reference else ""
    fig.suptitle(
        f"Values: dots seeds, bar mean, orange the baseline {base}{reference}.\nΔ to {base}: dots seeds, "
        f"square the mean with its {CONFIDENCE:.0%} t interval; green gain, red loss, grey within seed noise",
        fontsize=8,
    )
    save_png(fig, path)


_VERDICT_COLOURS = {"gain": "tab:green", "loss": "tab:red"}  # else grey: within seed noise, or one seed


def _draw_difference(ax: Any, x: int, paired: dict[str, Any]) -> None:
    """One row's per-seed differences (dots) and their mean with its interval, coloured by the verdict."""
    colour = _VERDICT_COLOURS.get(paired["verdict"], "tab:gray")
    seeds = list(paired["per_seed"].values())
    ax.plot([x] * len(seeds), seeds, "o", ms=3, color=colour, alpha=0.4)
    mean, ci = paired["mean"], paired["ci"]
    ax.errorbar(
        [x], [mean], [[mean - ci[0]], [ci[1] - mean]] if ci else None, fmt="s", ms=5, color=colour, capsize=3
    )


def _labelled_grid(rows: list[tuple[str, list[np.ndarray]]], title: str, path: Path) -> None:
    """Images in rows (labelled on the left) under the columns input / output / target."""
    fig = Figure(figsize=(5.4, 1.8 * len(rows) + 0.5), layout="constrained")
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c, image in enumerate(images):
            axes[r][c].imshow(image)
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
            axes[0][c].set_title(("input", "output", "target")[c], fontsize=8)
        axes[r][0].set_ylabel(label, fontsize=7)
    fig.suptitle(title, fontsize=8)
    save_png(fig, path)


def saved_runs(
    path: Path, study: Study, settings: dict[str, Any], sizes: dict[str, int], epochs: list[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """The runs of ``study``'s rows as they are now in the summary ``path`` made with ``settings`` and scored
    with its metrics on every split of ``sizes`` (with that many images), at the last epoch and at ``epochs``;
    by name, cut to those splits. ``--no-train`` reports them when their checkpoints and results are gone.
    Also by name, the metrics that the other runs scored on those images lack."""
    saved = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    if any(saved.get(key) != value for key, value in settings.items()):
        return {}, {}
    found, lacking = {}, {}
    for run in (run for run in saved["runs"] if _same_row(study, run)):
        scored, wanted = {"last": run["splits"], **run.get("epochs", {})}, ["last", *epochs]
        cells = [(scored.get(e, {}).get(split, {}), n) for e in wanted for split, n in sizes.items()]
        if any(cell.get("n") != n for cell, n in cells):
            continue
        if absent := [m for m in study.metrics if any(m not in cell["mean"] for cell, _ in cells)]:
            lacking[run["name"]] = absent
            continue
        cut = {e: {split: _only(scored[e][split], study.metrics) for split in sizes} for e in wanted}
        found[run["name"]] = {**run, "splits": cut.pop("last"), "epochs": cut}
    return found, lacking


def _same_row(study: Study, record: dict[str, Any]) -> bool:
    """Whether a saved run's record belongs to the row of that name as it is now."""
    row = next((row for row in study.rows if row.slug == record["config"]), None)
    return row is not None and all(record.get(key) == value for key, value in row.record.items())


def _only(scores: dict[str, Any], metrics: tuple[str, ...]) -> dict[str, Any]:
    return {**scores, "mean": {m: v for m, v in scores["mean"].items() if m in metrics}}


def write_sample_grids(out: Path, runs: list[dict[str, Any]], count: int = 4) -> None:
    """``samples_<config>.png`` per row's first seed, and ``samples.png`` of every row on the same images."""
    first = {}
    for run in runs:
        split, scores = next(iter(run["splits"].items()))
        images = Path(scores["result_dir"]).resolve() / "images"
        # only this --out's folders: a saved run's recorded folder may since hold another run's images
        if images.is_relative_to(out.resolve()) and images.is_dir():
            first.setdefault(run["config"], (run, split, images))
    if not first:
        return
    _, split, images = next(iter(first.values()))
    stems = sorted({p.name.removesuffix("_fake_B.png") for p in images.glob("*_fake_B.png")}, key=natural_key)

    def row(folder: Path, stem: str) -> list[np.ndarray]:
        return [
            np.asarray(load_rgb(folder / f"{stem}_{kind}.png")) for kind in ("real_A", "fake_B", "real_B")
        ]

    for slug, (run, split, folder) in first.items():
        title = f"{run['label']}, seed {run['seed']}, split {split}"
        _labelled_grid(
            [(stem, row(folder, stem)) for stem in stems[:count]], title, out / f"samples_{slug}.png"
        )
    rows = [
        (f"{run['label']} (seed {run['seed']})\nimage {stem}", row(folder, stem))
        for stem in stems[:2]
        for run, _, folder in first.values()
    ]
    _labelled_grid(rows, f"every configuration on the same images, split {split}", out / "samples.png")
