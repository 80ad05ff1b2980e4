"""The figure along training: epochs on whole-number ticks."""

from __future__ import annotations

from pix2pix_ilm.evaluation import table6_curves
from pix2pix_ilm.evaluation.table6_curves import epoch_tables, write_epoch_figure
from tests.evaluation.test_table6_report import study_and_runs


def test_the_epoch_figure_ticks_whole_epochs(monkeypatch, tmp_path):
    figures = []
    monkeypatch.setattr(table6_curves, "save_png", lambda fig, path: figures.append(fig))
    study, runs = study_and_runs()
    runs = [run | {"epochs": {str(e): run["splits"] for e in (1, 2, 3)}} for run in runs]
    write_epoch_figure(study, {"epoch_tables": epoch_tables(study, runs, ["test"])}, tmp_path / "epochs.png")
    (ax,) = figures[0].axes
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks == [1, 2, 3]
