"""Static HTML pages: the training run's ``web/index.html`` and a test folder's ``index.html``; every name
is HTML-escaped and every link percent-encoded."""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import torch

from pix2pix_ilm.files import atomic_write_text, sync_to_disk
from pix2pix_ilm.viz.images import save_image, tensor_to_image

_GALLERY_STYLE = (
    "body{font-family:sans-serif;margin:1em}"
    "table{border-collapse:collapse}"
    "td{padding:4px;text-align:center;vertical-align:top;word-break:break-all}"
    "td.scores{text-align:left;white-space:nowrap;font-family:monospace}"
    "table.metrics td,table.metrics th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "img{image-rendering:pixelated;width:256px}"
    "img.plot{image-rendering:auto;width:auto;max-width:100%}"
    ".status{color:#333}"
)


def _url(src: str) -> str:
    return html.escape(quote(src), quote=True)


def write_gallery(
    path: Path,
    title: str,
    sections: Sequence[tuple],
    refresh: int | None = None,
    intro: Sequence[str] = (),
    *,
    fsync: bool = True,
) -> None:
    """Write an HTML page of image rows atomically: ``sections`` are ``(heading, [(caption, src), ...])``,
    optionally with a ``{label: text}`` shown in a last cell; ``intro``: HTML fragments, already escaped."""
    title = html.escape(title)
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    lines = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">{meta}<title>{title}</title>']
    lines += [f"<style>{_GALLERY_STYLE}</style></head><body><h1>{title}</h1>", *intro]
    for heading, items, *extra in sections:
        cells = [
            f'<a href="{_url(src)}"><img src="{_url(src)}" alt="{html.escape(c)}"></a><br>{html.escape(c)}'
            for c, src in items
        ]
        texts = "<br>".join(html.escape(f"{k} {v}") for k, v in (extra[0] if extra else {}).items())
        cells = [f"<td>{cell}</td>" for cell in cells] + (
            [f'<td class="scores">{texts}</td>'] if texts else []
        )
        lines.append(f"<h3>{html.escape(heading)}</h3><table><tr>{''.join(cells)}</tr></table>")
    atomic_write_text(path, "\n".join([*lines, "</body></html>", ""]), fsync=fsync)


def _paragraph(text: str, css: str = "status") -> str:
    return f'<p class="{css}">{html.escape(text)}</p>'


def _plot(src: str, alt: str) -> str:
    return f'<p><a href="{_url(src)}"><img class="plot" src="{_url(src)}" alt="{html.escape(alt)}"></a></p>'


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")


class TrainingPages:
    """``web/index.html`` of a run: its state, ``loss.png`` and each epoch's images, newest first; it reloads
    itself while training runs."""

    REFRESH = 60

    def __init__(
        self,
        web_dir: Path,
        title: str,
        total_epochs: int | None = None,
        loss_log: Path | None = None,
        log_scale: bool = False,
    ) -> None:
        self.web_dir, self.title = Path(web_dir), title
        self.total_epochs, self.loss_log, self.log_scale = total_epochs, loss_log, log_scale
        self.latest: tuple[int, int | None] | None = None  # (epoch, iteration) of the newest images

    def update(self, epoch: int, visuals: dict[str, torch.Tensor], iteration: int | None = None) -> None:
        """Save the images of ``epoch`` (the one in progress), redraw ``loss.png`` and rewrite the page."""
        for label, tensor in visuals.items():
            path = self.web_dir / "images" / f"epoch{epoch:03d}_{label}.png"
            save_image(tensor_to_image(tensor[0]), path, fsync=False)
        self.latest = (epoch, iteration)
        self._write(running=True, state=f"training, epoch {self._of(epoch)}", iteration=iteration)

    def finish(self, epochs_done: int, iteration: int, stopped: bool = False) -> None:
        """The last rewrite, without the reload: the run finished (or stopped after ``epochs_done``)."""
        if stopped:
            state = f"stopped in epoch {self._of(epochs_done + 1)} (resume with --continue)"
        else:
            state = f"finished {self._of(epochs_done)} epochs"
        self._write(running=False, state=state, iteration=iteration)

    def _of(self, epoch: int) -> str:
        return f"{epoch} of {self.total_epochs}" if self.total_epochs else str(epoch)

    def _write(self, running: bool, state: str, iteration: int | None) -> None:
        at = f", iteration {iteration}" if iteration is not None else ""
        reload = f"; this page reloads every {self.REFRESH} s" if running else "; this page no longer reloads"
        intro = [_paragraph(f"{state[:1].upper()}{state[1:]}{at}. Updated {_now()}{reload}.")]
        if self.loss_log is not None and self._write_loss_plot():
            intro.append(_plot("loss.png", "losses: GAN terms and L1, per epoch"))
        sections = []
        names = (re.fullmatch(r"epoch(\d+)_real_A\.png", p.name) for p in (self.web_dir / "images").glob("*"))
        for e in sorted({int(m.group(1)) for m in names if m}, reverse=True):
            heading = f"epoch {e}"
            if self.latest is not None and e == self.latest[0] and self.latest[1] is not None:
                heading += f" (images of iteration {self.latest[1]})"
            labels = ("real_A", "fake_B", "real_B")
            sections.append((heading, [(label, f"images/epoch{e:03d}_{label}.png") for label in labels]))
        write_gallery(
            self.web_dir / "index.html",
            f"Training run {self.title}",
            sections,
            refresh=self.REFRESH if running else None,
            intro=intro,
            fsync=False,
        )
        if not running:
            sync_to_disk()  # one flush at the end for the preview images, the loss plot and the page

    def _write_loss_plot(self) -> bool:
        """Draw ``loss.png`` from the loss log; False when the log has no entries yet."""
        from pix2pix_ilm.viz.plots import render_losses, save_png

        entries = read_loss_log(self.loss_log) if self.loss_log is not None else []
        if not entries:
            return False
        save_png(render_losses(entries, log_y=self.log_scale), self.web_dir / "loss.png", fsync=False)
        return True


def read_loss_log(path: Path) -> list[dict[str, Any]]:
    """The entries of a ``loss_log.jsonl`` (a half-written last line is skipped); [] without the file."""
    entries = []
    for line in Path(path).read_text().splitlines() if Path(path).is_file() else []:
        with contextlib.suppress(json.JSONDecodeError):
            entries.append(json.loads(line))
    return [entry for entry in entries if isinstance(entry, dict)]


TEST_INFO = "test.json"


def _score_text(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _metrics_intro(document: Mapping[str, Any], json_href: str, plot_href: str | None) -> list[str]:
    """The metrics table of an ``eval`` result, a link to its JSON and its score plot."""
    better = document.get("higher_is_better", {})
    rows = ["<tr><th>metric</th><th>mean</th><th>std</th><th>n</th><th>better</th></tr>"]
    for name in document["metrics"]:
        mean, std = _score_text(document["mean"].get(name)), _score_text(document["std"].get(name))
        cells = (name, mean, std, str(document["n"]), "higher" if better.get(name) else "lower")
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    parts = [
        "<h2>Scores</h2>",
        '<table class="metrics">' + "".join(rows) + "</table>",
        f'<p>All scores, per image: <a href="{_url(json_href)}">{html.escape(json_href)}</a></p>',
    ]
    if plot_href is not None:
        parts.append(_plot(plot_href, "per-image scores, one strip per metric"))
    return parts


def write_test_page(
    out_dir: Path, metrics_json: Path | None = None, *, fsync: bool = True, final_dir: Path | None = None
) -> None:
    """Write ``index.html`` of a ``test`` folder from its ``test.json``, with the scores of ``metrics_json``
    once they are newer than the images. ``final_dir``: where the folder will be, if written elsewhere first."""
    out_dir = Path(out_dir)
    info = json.loads((out_dir / TEST_INFO).read_text())
    metrics_json = out_dir / "metrics.json" if metrics_json is None else Path(metrics_json)
    intro = [_paragraph(info["description"])]
    per_image: Mapping[str, Mapping[str, Any]] = {}
    document = None
    if metrics_json.is_file():
        if metrics_json.stat().st_mtime < (out_dir / TEST_INFO).stat().st_mtime:
            intro.append(_paragraph(f"{metrics_json.name} is older than these images: run eval again."))
        else:
            document = json.loads(metrics_json.read_text())
    if document is None:
        if "real_B" in info["labels"]:  # single inputs have no ground truth to score
            intro.append(
                _paragraph(
                    f"Not scored yet: pix2pix-ilm eval --results-dir {final_dir or out_dir} adds the scores here."
                )
            )
    else:
        plot = metrics_json.with_suffix(".png")
        json_href = Path(os.path.relpath(metrics_json, out_dir)).as_posix()
        plot_href = Path(os.path.relpath(plot, out_dir)).as_posix() if plot.is_file() else None
        intro += _metrics_intro(document, json_href, plot_href)
        per_image = document.get("per_image", {})
    labels = info["labels"]
    sections = []
    for stem in info["images"]:
        scores = {name: _score_text(value) for name, value in per_image.get(stem, {}).items()}
        sections.append((stem, [(label, f"images/{stem}_{label}.png") for label in labels], scores))
    write_gallery(out_dir / "index.html", info["title"], sections, intro=intro, fsync=fsync)
