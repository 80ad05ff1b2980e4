"""HTML galleries: escaping and order."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from pix2pix_ilm.viz.pages import write_gallery


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.img_srcs: list[str] = []
        self.hrefs: list[str] = []
        self.h3: list[str] = []
        self.cells: list[str] = []
        self.title = ""
        self.meta: list[dict[str, str | None]] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        attributes = dict(attrs)
        if tag == "img":
            self.img_srcs.append(attributes["src"] or "")
        elif tag == "a":
            self.hrefs.append(attributes["href"] or "")
        elif tag == "meta":
            self.meta.append(attributes)
        elif tag in ("h3", "td", "title"):
            self._in = tag
            if tag == "td":
                self.cells.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "h3":
            self.h3.append(data)
        elif self._in == "td":
            self.cells[-1] += data
        elif self._in == "title":
            self.title += data


def test_gallery_escapes_names_and_keeps_order(tmp_path: Path) -> None:
    nasty = [
        ('<script>alert("x")</script>', "images/<script>alert(1)</script>.png"),
        ('say "hi" & bye', 'images/a "quoted" & amp.png'),
        ("../../etc/passwd", "images/with space ü 日本.png"),
        ("hash#and?query", "images/50% off #1?.png"),
    ]
    sections = [("zeta <b>", nasty[:2]), ("alpha & co", nasty[2:]), ("empty", [])]
    page = tmp_path / "web" / "index.html"
    write_gallery(page, 'Run "<i>x</i>"', sections, refresh=5, image_width=128)

    text = page.read_text(encoding="utf-8")
    assert "<script" not in text and "<b>" not in text and "<i>" not in text
    parser = _PageParser()
    parser.feed(text)
    assert "script" not in parser.tags and "b" not in parser.tags and "i" not in parser.tags
    assert parser.title == 'Run "<i>x</i>"'
    assert parser.h3 == ["zeta <b>", "alpha & co", "empty"]
    assert parser.cells == [caption for caption, _ in nasty]
    assert [unquote(src) for src in parser.img_srcs] == [src for _, src in nasty]
    assert parser.hrefs == parser.img_srcs
    assert all(
        " " not in src and '"' not in src and "#" not in src and "?" not in src for src in parser.img_srcs
    )
    assert {"http-equiv": "refresh", "content": "5"} in parser.meta
    assert 'style="width:128px"' in text
    assert sorted(p.name for p in page.parent.iterdir()) == ["index.html"]

    write_gallery(page, "plain", [("s", [("c", "a.png")])])
    parser = _PageParser()
    parser.feed(page.read_text(encoding="utf-8"))
    assert not any(meta.get("http-equiv") == "refresh" for meta in parser.meta)
    assert parser.img_srcs == ["a.png"]
    with pytest.raises(ValueError):
        write_gallery(page, "x", [], refresh=0)
