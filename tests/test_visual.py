"""Image helpers, HTML galleries and visdom previews against a real visdom server started by the tests."""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.request
import warnings
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch
from PIL import Image

from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.visual import (
    VisdomDisplay,
    VisdomUnavailableWarning,
    free_port,
    image_grid,
    save_image,
    serve_visdom,
    start_visdom_server,
    stop_visdom_server,
    tensor_to_image,
    write_gallery,
)

# ---------------------------------------------------------------------------------------------------- images


def test_tensor_to_image_values_and_rounding() -> None:
    t = torch.tensor([-1.0, 0.0, 1.0, -0.5, 3.0, -7.0, float("nan")]).view(1, 1, 7).expand(3, 1, 7)
    image = tensor_to_image(t)
    assert image.dtype == np.uint8 and image.shape == (1, 7, 3)
    # -1 → 0, 0 → 127.5 → 128 (ties to even), 1 → 255, -0.5 → 63.75 → 64, clamped to [-1, 1], NaN → 128
    assert image[0, :, 0].tolist() == [0, 128, 255, 64, 255, 0, 128]


def test_tensor_to_image_gray_batch_and_errors() -> None:
    gray = torch.linspace(-1, 1, 12).view(1, 1, 3, 4)  # (1, C, H, W) with one channel
    image = tensor_to_image(gray)
    assert image.shape == (3, 4, 3)
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])
    assert image[0, 0, 0] == 0 and image[2, 3, 0] == 255
    color = torch.rand(3, 5, 6) * 2 - 1
    assert np.array_equal(tensor_to_image(color), tensor_to_image(color.unsqueeze(0)))
    assert np.array_equal(tensor_to_image(color.double()), tensor_to_image(color))
    with pytest.raises(ValueError, match="batch"):
        tensor_to_image(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="C = 1 or 3"):
        tensor_to_image(torch.zeros(4, 4, 4))


def test_save_image_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    path = tmp_path / "new folder" / "ünï cödé & <x>.png"
    save_image(image, path)
    with Image.open(path) as loaded:
        assert loaded.format == "PNG" and loaded.mode == "RGB"
        assert np.array_equal(np.asarray(loaded), image)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left behind

    gray = rng.integers(0, 256, size=(4, 5), dtype=np.uint8)
    save_image(gray, path)  # overwrites
    with Image.open(path) as loaded:
        assert np.array_equal(np.asarray(loaded), np.repeat(gray[:, :, None], 3, axis=2))

    tensor = torch.rand(3, 6, 6) * 2 - 1
    save_image(tensor_to_image(tensor), tmp_path / "t.png")
    with Image.open(tmp_path / "t.png") as loaded:
        assert np.array_equal(np.asarray(loaded), tensor_to_image(tensor))

    with pytest.raises(ValueError, match="uint8"):
        save_image(image.astype(np.float32), tmp_path / "bad.png")


def test_image_grid_shape_and_placement() -> None:
    images = [np.full((8, 10, 3), 10 * (i + 1), dtype=np.uint8) for i in range(5)]
    grid = image_grid([images[:3], images[3:]], pad=2)
    assert grid.shape == (2 * 8 + 3 * 2, 3 * 10 + 4 * 2, 3)
    assert grid.dtype == np.uint8
    assert (grid[2:10, 2:12] == 10).all()  # row 0, column 0
    assert (grid[2:10, 26:36] == 30).all()  # row 0, column 2
    assert (grid[12:20, 14:24] == 50).all()  # row 1, column 1
    assert (grid[12:20, 26:36] == 255).all()  # the short row is padded with white
    assert (grid[:2] == 255).all() and (grid[:, :2] == 255).all()
    assert image_grid([[images[0]]], pad=0).shape == (8, 10, 3)
    with pytest.raises(ValueError):
        image_grid([[]])


# ---------------------------------------------------------------------------------------------------- HTML


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


# ---------------------------------------------------------------------------------------------------- visdom


def _visdom_api(port: int, endpoint: str, payload: dict) -> object:
    """POST to one of the server's HTTP endpoints, as ``visdom.Visdom`` does, never through an HTTP proxy."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/{endpoint}", data=json.dumps(payload).encode(), method="POST"
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        return json.loads(response.read().decode())


def _window_data(port: int, env: str) -> dict:
    """All windows of ``env`` (what ``visdom.Visdom.get_window_data(win=None, env=env)`` returns)."""
    data = _visdom_api(port, "win_data", {"eid": env, "win": None})
    assert isinstance(data, dict)
    return data


def _traces(window: dict) -> dict[str, list]:
    return {trace["name"]: trace["x"] for trace in window["content"]["data"]}


@pytest.fixture(scope="module")
def visdom_port(tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    process = start_visdom_server(port, env_path=tmp_path_factory.mktemp("visdom_env"))
    try:
        yield port
    finally:
        stop_visdom_server(process)


def _batch(channels: int) -> torch.Tensor:
    return torch.rand(2, channels, 16, 16) * 2 - 1


def test_display_shows_images_and_loss_curves(visdom_port: int) -> None:
    display = VisdomDisplay(port=visdom_port, env="run_a", retry_interval=60)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VisdomUnavailableWarning)
        display.show_images({"real_A": _batch(1), "fake_B": _batch(3), "real_B": _batch(3)[0]}, epoch=3)
        for step in range(3):
            display.plot_losses(1 + step / 4, {"G_GAN": 1.0 / (step + 1), "D_real": 0.5 + step})
    assert display.connected

    windows = _window_data(visdom_port, "run_a")
    assert set(windows) == {VisdomDisplay.IMAGE_WINDOW, VisdomDisplay.LOSS_WINDOW}
    image = windows[VisdomDisplay.IMAGE_WINDOW]
    assert image["type"] == "image"
    assert image["title"] == "real_A | fake_B | real_B (epoch 3)"
    assert image["content"]["src"].startswith("data:image/png;base64,")
    losses = windows[VisdomDisplay.LOSS_WINDOW]
    assert losses["type"] == "plot"
    assert _traces(losses) == {"G_GAN": [1.0, 1.25, 1.5], "D_real": [1.0, 1.25, 1.5]}
    d_real = next(trace for trace in losses["content"]["data"] if trace["name"] == "D_real")
    assert d_real["y"] == [0.5, 1.5, 2.5]

    # a loss that appears later gets gaps (null) for the earlier points; the window is updated in place
    display.plot_losses(2.0, {"G_GAN": 0.2, "G_L1": 7.0})
    windows = _window_data(visdom_port, "run_a")
    assert set(windows) == {VisdomDisplay.IMAGE_WINDOW, VisdomDisplay.LOSS_WINDOW}
    traces = {trace["name"]: trace["y"] for trace in windows[VisdomDisplay.LOSS_WINDOW]["content"]["data"]}
    assert traces["G_L1"] == [None, None, None, 7.0]
    assert traces["D_real"] == [0.5, 1.5, 2.5, None]


def test_disabled_display_sends_nothing(visdom_port: int) -> None:
    display = VisdomDisplay(port=visdom_port, env="run_disabled", enabled=False)
    display.show_images({"fake_B": _batch(3)})
    display.plot_losses(0.0, {"G_GAN": 1.0})
    assert not display.connected
    envs = _visdom_api(visdom_port, "env_state", {})
    assert isinstance(envs, list) and "main" in envs and "run_disabled" not in envs


def test_no_server_is_fast_and_warns_once() -> None:
    port = free_port()  # nothing listens there
    display = VisdomDisplay(port=port, env="nobody", retry_interval=0.2)
    start = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(20):
            display.show_images({"real_A": _batch(3), "fake_B": _batch(3)}, epoch=step)
            display.plot_losses(step, {"G_GAN": 1.0, "D_fake": 2.0})
            if step == 10:
                time.sleep(0.25)  # lets a retry happen: still no server, still no second warning
    elapsed = time.monotonic() - start
    assert elapsed < 5.0
    ours = [w for w in caught if issubclass(w.category, VisdomUnavailableWarning)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    message = str(ours[0].message)
    assert f"127.0.0.1:{port}" in message and f"pix2pix-ilm visdom --port {port}" in message
    assert ours[0].filename == __file__  # points at the caller, not at visual.py
    assert not display.connected


def test_hung_server_costs_one_timeout_per_retry_interval() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen()  # the kernel accepts connections, nobody ever answers
        port = hung.getsockname()[1]
        display = VisdomDisplay(port=port, env="hung", retry_interval=60, timeout=0.5)
        start = time.monotonic()
        with pytest.warns(VisdomUnavailableWarning, match="no answer in time"):
            display.plot_losses(0.0, {"G_GAN": 1.0})
        first = time.monotonic() - start
        assert 0.4 < first < 3.0
        start = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("error", VisdomUnavailableWarning)
            for step in range(1, 11):
                display.plot_losses(step, {"G_GAN": 1.0})
                display.show_images({"fake_B": _batch(3)})
        assert time.monotonic() - start < 0.4  # no new attempt within retry_interval
        assert not display.connected


def test_previews_resume_when_server_starts_later(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    retry_interval = 1.0
    display = VisdomDisplay(port=port, env="late", retry_interval=retry_interval)
    with pytest.warns(VisdomUnavailableWarning, match="cannot reach"):
        display.plot_losses(0.0, {"G_GAN": 3.0, "D_real": 1.0})
    failed_at = time.monotonic()
    process = start_visdom_server(port, env_path=tmp_path / "visdom")
    try:
        time.sleep(max(0.0, failed_at + retry_interval + 0.05 - time.monotonic()))
        with caplog.at_level(logging.WARNING, logger="pix2pix_ilm.visual"):
            display.plot_losses(0.5, {"G_GAN": 2.0, "D_real": 1.0})
            display.plot_losses(1.0, {"G_GAN": 1.0, "D_real": 1.0})
            display.show_images({"real_A": _batch(3), "fake_B": _batch(3), "real_B": _batch(3)}, epoch=1)
        assert display.connected
        assert [r.getMessage() for r in caplog.records] == [
            f"visdom server at http://127.0.0.1:{port} is reachable again; live previews resume"
        ]
        windows = _window_data(port, "late")
        # the point plotted while the server was down is part of the curve
        assert _traces(windows[VisdomDisplay.LOSS_WINDOW]) == {
            "G_GAN": [0.0, 0.5, 1.0],
            "D_real": [0.0, 0.5, 1.0],
        }
        assert windows[VisdomDisplay.IMAGE_WINDOW]["type"] == "image"
    finally:
        stop_visdom_server(process)

    # the server goes away again: one new warning, no exception
    with pytest.warns(VisdomUnavailableWarning, match="lost the connection"):
        display.plot_losses(1.5, {"G_GAN": 0.5, "D_real": 1.0})
    assert not display.connected


def test_port_in_use_is_a_usage_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UsageError, match=f"port {port} on 127.0.0.1 is already in use"):
            serve_visdom(port=port, env_path=str(tmp_path / "env"))
        assert not (tmp_path / "env" / "main.json").exists()  # failed before creating the application
        with pytest.raises(UsageError, match="already in use"):
            start_visdom_server(port, env_path=tmp_path / "env2", timeout=30)
    with pytest.raises(UsageError, match="--port"):
        serve_visdom(port=70000, env_path=str(tmp_path / "env"))
