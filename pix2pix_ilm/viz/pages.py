"""Static HTML pages: a gallery writer (``index.html`` of a test) and the training run's ``web/index.html``."""

from __future__ import annotations

import html
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Union
from urllib.parse import quote

import torch

from pix2pix_ilm.files import atomic_write_text, sync_to_disk
from pix2pix_ilm.viz.images import save_image, tensor_to_image

PathLike = Union[str, "os.PathLike[str]"]


_GALLERY_STYLE = (
    "body{font-family:sans-serif;margin:1em}"
    "table{border-collapse:collapse}"
    "td{padding:4px;text-align:center;vertical-align:top;word-break:break-all}"
    "img{image-rendering:pixelated}"
)


def write_gallery(
    path: PathLike,
    title: str,
    sections: Sequence[tuple[str, Sequence[tuple[str, str]]]],
    refresh: int | None = None,
    image_width: int = 256,
    *,
    fsync: bool = True,
) -> None:
    """Write a static HTML page of image rows, atomically.

    ``sections`` is a list of ``(heading, [(caption, src), ...])``, shown in the given order, one table row
    per section; ``src`` is the image path relative to the HTML file (``/``-separated). Titles, headings and
    captions are HTML-escaped and every ``src`` is percent-encoded, so any file name is safe. ``refresh``
    (seconds) adds a ``<meta http-equiv="refresh">``, for pages rewritten during training.
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
    ]
    for heading, items in sections:
        lines.append(f"<h3>{html.escape(str(heading))}</h3>")
        lines.append("<table><tr>")
        for caption, src in items:
            url = html.escape(quote(os.fspath(src)), quote=True)
            text = html.escape(str(caption))
            lines.append(
                f'<td><a href="{url}"><img src="{url}" alt="{text}" style="width:{image_width}px"></a>'
                f"<br>{text}</td>"
            )
        lines.append("</tr></table>")
    lines += ["</body>", "</html>", ""]
    atomic_write_text(path, "\n".join(lines), fsync=fsync)


class TrainingPages:
    """``web/index.html``: the current real_A / fake_B / real_B of every epoch, newest first."""

    def __init__(self, web_dir: Path, title: str) -> None:
        self.web_dir, self.title = web_dir, title

    def update(self, epoch: int, visuals: dict[str, torch.Tensor]) -> None:
        for label, tensor in visuals.items():
            path = self.web_dir / "images" / f"epoch{epoch:03d}_{label}.png"
            save_image(tensor_to_image(tensor[0]), path, fsync=False)
        sections = []
        pattern = re.compile(r"epoch(\d+)_real_A\.png")
        names = (pattern.fullmatch(p.name) for p in (self.web_dir / "images").iterdir())
        epochs = sorted({int(m.group(1)) for m in names if m}, reverse=True)
        for e in epochs:
            sections.append(
                (
                    f"epoch {e}",
                    [(label, f"images/epoch{e:03d}_{label}.png") for label in ("real_A", "fake_B", "real_B")],
                )
            )
        write_gallery(
            self.web_dir / "index.html", f"Training run {self.title}", sections, refresh=60, fsync=False
        )
        sync_to_disk()  # one flush for the preview images and the page
