"""Static HTML pages: the training run's ``web/index.html`` and a test folder's ``index.html``.

Every page says what it shows: the training page its epoch, iteration and state (it reloads itself only
while the run is going) and the loss plot ``loss.png``; the test page the epoch and iteration of the
checkpoint it used and, once ``eval`` has run, the metrics table, the per-image score plot and each image's
scores beside its row. Every name is HTML-escaped and every link percent-encoded.
"""

from __future__ import annotations

import html
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union
from urllib.parse import quote

import torch

from pix2pix_ilm.files import atomic_write_text, sync_to_disk
from pix2pix_ilm.viz.images import save_image, tensor_to_image

PathLike = Union[str, "os.PathLike[str]"]

_GALLERY_STYLE = (
    "body{font-family:sans-serif;margin:1em}"
    "table{border-collapse:collapse}"
    "td{padding:4px;text-align:center;vertical-align:top;word-break:break-all}"
    "td.scores{text-align:left;white-space:nowrap;font-family:monospace}"
    "table.metrics td,table.metrics th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "img{image-rendering:pixelated}"
    "img.plot{image-rendering:auto;max-width:100%}"
    ".status{color:#333}"
)

# A gallery row: (heading, [(caption, src), ...]), or (heading, items, {label: text}) with the texts in a last
# cell (e.g. the image's scores).
Section = tuple


def _url(src: PathLike) -> str:
    return html.escape(quote(os.fspath(src)), quote=True)


def write_gallery(
    path: PathLike,
    title: str,
    sections: Sequence[Section],
    refresh: int | None = None,
    image_width: int = 256,
    intro: Sequence[str] = (),
    *,
    fsync: bool = True,
) -> None:
    """Write a static HTML page of image rows, atomically.

    ``sections`` is a list of ``(heading, [(caption, src), ...])`` (optionally with a third element, a
    ``{label: text}`` mapping shown in a last cell), one table row per section in the given order; ``src`` is
    the image path relative to the HTML file (``/``-separated). Titles, headings, captions and texts are
    HTML-escaped and every ``src`` is percent-encoded, so any file name is safe. ``intro``: HTML fragments
    shown under the title, built with :func:`html.escape` by the caller. ``refresh`` (seconds) adds a
    ``<meta http-equiv="refresh">``, for pages rewritten during training.
    """
    if refresh is not None and (not isinstance(refresh, int) or refresh <= 0):
        raise ValueError(f"refresh must be a positive number of seconds or None, got {refresh!r}")
    if not isinstance(image_width, int) or image_width <= 0:
        raise ValueError(f"image_width must be a positive number of pixels, got {image_width!r}")

    lines = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
    ]
    if refresh is not None:
        lines.append(f'<meta http-equiv="refresh" content="{refresh}">')
    lines += [
        f"<title>{html.escape(title)}</title>",
        f"<style>{_GALLERY_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
        *intro,
    ]
    for heading, items, *extra in sections:
        lines.append(f"<h3>{html.escape(str(heading))}</h3>")
        lines.append("<table><tr>")
        for caption, src in items:
            url = _url(src)
            text = html.escape(str(caption))
            lines.append(
                f'<td><a href="{url}"><img src="{url}" alt="{text}" style="width:{image_width}px"></a>'
                f"<br>{text}</td>"
            )
        if extra and extra[0]:
            texts = "<br>".join(f"{html.escape(str(k))} {html.escape(str(v))}" for k, v in extra[0].items())
            lines.append(f'<td class="scores">{texts}</td>')
        lines.append("</tr></table>")
    lines += ["</body>", "</html>", ""]
    atomic_write_text(path, "\n".join(lines), fsync=fsync)


def _paragraph(text: str, css: str = "status") -> str:
    return f'<p class="{css}">{html.escape(text)}</p>'


def _plot(src: str, alt: str) -> str:
    return f'<p><a href="{_url(src)}"><img class="plot" src="{_url(src)}" alt="{html.escape(alt)}"></a></p>'


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")


class TrainingPages:
    """``web/index.html`` of a run: its state, the loss plot ``loss.png`` and the real_A / fake_B / real_B of
    every epoch, newest first. It reloads itself every ``refresh`` seconds while training runs;
    :meth:`finish` writes it once more without the reload."""

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
        pattern = re.compile(r"epoch(\d+)_real_A\.png")
        images = self.web_dir / "images"
        names = (pattern.fullmatch(p.name) for p in images.iterdir()) if images.is_dir() else ()
        for e in sorted({int(m.group(1)) for m in names if m}, reverse=True):
            heading = f"epoch {e}"
            if self.latest is not None and e == self.latest[0] and self.latest[1] is not None:
                heading += f" (images of iteration {self.latest[1]})"
            sections.append(
                (
                    heading,
                    [(label, f"images/epoch{e:03d}_{label}.png") for label in ("real_A", "fake_B", "real_B")],
                )
            )
        write_gallery(
            self.web_dir / "index.html",
            f"Training run {self.title}",
            sections,
            refresh=self.REFRESH if running else None,
            intro=intro,
            fsync=False,
        )
        sync_to_disk()  # one flush for the preview images, the loss plot and the page

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
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


TEST_INFO = "test.json"


def _score_text(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _metrics_intro(document: Mapping[str, Any], json_href: str, plot_href: str | None) -> list[str]:
    """The metrics table of an ``eval`` result, a link to its JSON and its score plot."""
    better = document.get("higher_is_better", {})
    rows = ["<tr><th>metric</th><th>mean</th><th>std</th><th>n</th><th>better</th></tr>"]
    for name in document["metrics"]:
        cells = (
            name,
            _score_text(document["mean"].get(name)),
            _score_text(document["std"].get(name)),
            str(document["n"]),
            "higher" if better.get(name) else "lower",
        )
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
    """Write ``index.html`` of a ``test`` output folder from its ``test.json``, with the scores of
    ``metrics_json`` (default ``metrics.json`` beside it) once ``eval`` has written them for these images:
    the metrics table, a link to the JSON, the score plot (``metrics.png``) and each image's scores.
    ``final_dir``: where the folder will be, when it is written elsewhere first."""
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
