"""HTML galleries: escaping and order."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

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
    write_gallery(page, 'Run "<i>x</i>"', sections, refresh=5)

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
    assert sorted(p.name for p in page.parent.iterdir()) == ["index.html"]

    write_gallery(page, "plain", [("s", [("c", "a.png")])])
    parser = _PageParser()
    parser.feed(page.read_text(encoding="utf-8"))
    assert not any(meta.get("http-equiv") == "refresh" for meta in parser.meta)
    assert parser.img_srcs == ["a.png"]


def _visuals() -> dict:
    import torch

    return {label: torch.zeros(1, 3, 8, 8) for label in ("real_A", "fake_B", "real_B")}


def test_training_page_reloads_only_while_training(tmp_path: Path) -> None:
    from pix2pix_ilm.viz.pages import TrainingPages

    log = tmp_path / "loss_log.jsonl"
    pages = TrainingPages(tmp_path / "web", "run <1>", total_epochs=3, loss_log=log)
    pages.update(1, _visuals(), iteration=4)  # no loss entries yet: no plot
    text = (tmp_path / "web" / "index.html").read_text()
    assert '<meta http-equiv="refresh" content="60">' in text and "loss.png" not in text
    assert "Training, epoch 1 of 3, iteration 4." in text and "run &lt;1&gt;" in text
    log.write_text('{"iteration": 4, "epoch_progress": 1.0, "G_GAN": 0.7, "G_L1": 30.0}\n{"half')
    pages.update(2, _visuals(), iteration=8)
    text = (tmp_path / "web" / "index.html").read_text()
    assert 'src="loss.png"' in text and (tmp_path / "web" / "loss.png").is_file()
    assert text.index("epoch 2 (images of iteration 8)") < text.index("<h3>epoch 1</h3>")
    pages.finish(3, 12)
    text = (tmp_path / "web" / "index.html").read_text()
    assert "http-equiv" not in text and "Finished 3 of 3 epochs, iteration 12." in text
    pages.finish(1, 5, stopped=True)
    assert (
        "Stopped in epoch 2 of 3 (resume with --continue), iteration 5."
        in (tmp_path / "web" / "index.html").read_text()
    )


def test_test_page_shows_scores_once_they_are_for_these_images(tmp_path: Path) -> None:
    import json
    import os

    from pix2pix_ilm.viz.pages import TEST_INFO, write_test_page

    info = {
        "title": "run: test, epoch 2 of 2",
        "description": "2 images, translated with latest.pt: epoch 2 of 2 done, iteration 8; eval mode.",
        "labels": ["real_A", "fake_B", "real_B"],
        "images": ["a<b>", "2"],
    }
    (tmp_path / TEST_INFO).write_text(json.dumps(info))
    write_test_page(tmp_path)
    text = (tmp_path / "index.html").read_text()
    assert "Not scored yet: pix2pix-ilm eval --results-dir" in text and "<h2>Scores</h2>" not in text
    assert "a&lt;b&gt;" in text and "a%3Cb%3E_fake_B.png" in text

    scores = {
        "n": 2,
        "metrics": ["rmse", "ssim"],
        "mean": {"rmse": 12.5, "ssim": None},
        "std": {"rmse": 1.0, "ssim": None},
        "higher_is_better": {"rmse": False, "ssim": True},
        "per_image": {"a<b>": {"rmse": 11.5, "ssim": 0.25}, "2": {"rmse": 13.5, "ssim": None}},
    }
    (tmp_path / "metrics.json").write_text(json.dumps(scores))
    stale = (tmp_path / TEST_INFO).stat().st_mtime - 10
    os.utime(tmp_path / "metrics.json", (stale, stale))  # scores of earlier images
    write_test_page(tmp_path)
    assert "metrics.json is older than these images: run eval again." in (tmp_path / "index.html").read_text()

    os.utime(tmp_path / "metrics.json")
    write_test_page(tmp_path)
    parser = _PageParser()
    parser.feed((tmp_path / "index.html").read_text())
    assert "metrics.json" in parser.hrefs
    assert parser.cells[:5] == ["rmse", "12.5", "1", "2", "lower"]
    assert parser.cells[5:10] == ["ssim", "n/a", "n/a", "2", "higher"]
    assert "rmse 11.5ssim 0.25" in parser.cells  # beside the row of image a<b>
    assert "rmse 13.5ssim n/a" in parser.cells
