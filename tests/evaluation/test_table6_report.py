"""The comparison's figure: each row's values over its paired difference to the baseline, with its interval."""

from __future__ import annotations

from typing import Any

import pytest
from matplotlib.colors import to_rgba

from pix2pix_ilm.evaluation import table6_report
from pix2pix_ilm.evaluation.study import Row, Study
from pix2pix_ilm.evaluation.table6_report import split_rows, write_figure

# rmse per seed: row b is worse than the baseline a in every seed (a loss), c within seed noise
SCORES = {"a": [1.0, 2.0, 3.0], "b": [2.1, 3.0, 4.05], "c": [1.5, 1.5, 3.2]}


def study_and_runs() -> tuple[Study, list[dict[str, Any]]]:
    """A study of rows a (the baseline), b and c over three seeds, and their runs' records."""
    study = Study(
        name="compare",
        title="t",
        notes=(),
        rows=tuple(Row(slug, slug, {}) for slug in SCORES),
        baseline="a",
        splits={"test": ("test", None)},
        metrics=("rmse",),
        columns=("rmse",),
        curve_metrics=("rmse",),
        base={},
    )
    runs = [
        {"config": slug, "label": slug, "seed": seed, "name": f"{slug}_seed{seed}"}
        | {"splits": {"test": {"n": 2, "mean": {"rmse": value}, "images_digest": "d"}}}
        for slug, values in SCORES.items()
        for seed, value in enumerate(values)
    ]
    return study, runs


def test_the_figure_shows_each_rows_paired_difference_to_the_baseline_with_its_interval(
    monkeypatch, tmp_path
):
    figures = []
    monkeypatch.setattr(table6_report, "save_png", lambda fig, path: figures.append(fig))
    study, runs = study_and_runs()
    rows = split_rows(study, runs, "test")
    write_figure(study, {"tables": {"test": rows}}, tmp_path / "compare.png")
    values, differences = figures[0].axes
    assert values.get_title() == "RMSE ↓ (split test)"
    assert differences.get_title() == "Δ RMSE vs a (split test)"
    assert [t.get_text() for t in differences.get_xticklabels()] == ["a", "b", "c"]
    assert any(list(line.get_ydata()) == [0, 0] for line in differences.get_lines())  # the zero line
    bars = differences.containers
    assert len(bars) == 2  # b and c; none for the baseline
    for bar, row, colour in zip(bars, rows[1:], ("tab:red", "tab:gray"), strict=True):
        paired = row["paired"]["rmse"]
        mean, caps, (segments,) = bar.lines
        assert mean.get_ydata()[0] == pytest.approx(paired["mean"])
        assert segments.get_segments()[0][:, 1] == pytest.approx(paired["ci"])
        assert mean.get_color() == colour and tuple(segments.get_colors()[0]) == to_rgba(colour)
    assert rows[1]["paired"]["rmse"]["verdict"] == "loss"
    assert rows[2]["paired"]["rmse"]["verdict"] == "within seed noise"
