"""Visdom previews against a real visdom server started by the tests."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import time
import urllib.request
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from pix2pix_ilm.viz import display as display_module
from pix2pix_ilm.viz.display import VisdomDisplay, VisdomUnavailableWarning
from tests.helpers import free_port, start_visdom_server, stop_visdom_server


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
    with Image.open(io.BytesIO(base64.b64decode(image["content"]["src"].split(",", 1)[1]))) as picture:
        # three 16-pixel images padded by 2 make 56 x 20 pixels, enlarged 7 x to reach 128 rows
        assert picture.size == (7 * 56, 7 * 20)
    losses = windows[VisdomDisplay.LOSS_WINDOW]
    assert losses["type"] == "plot"
    assert _traces(losses) == {"G_GAN": [1.0, 1.25, 1.5], "D_real": [1.0, 1.25, 1.5]}
    d_real = next(trace for trace in losses["content"]["data"] if trace["name"] == "D_real")
    assert d_real["y"] == [0.5, 1.5, 2.5]

    # a loss that appears later gets gaps (null) for the earlier points; windows are updated in place, and the
    # L1 term (tens) gets its own window instead of flattening the GAN terms (around 0.7)
    display.plot_losses(2.0, {"G_GAN": 0.2, "G_L1": 7.0})
    windows = _window_data(visdom_port, "run_a")
    assert set(windows) == {VisdomDisplay.IMAGE_WINDOW, VisdomDisplay.LOSS_WINDOW, VisdomDisplay.L1_WINDOW}
    traces = {trace["name"]: trace["y"] for trace in windows[VisdomDisplay.LOSS_WINDOW]["content"]["data"]}
    assert set(traces) == {"G_GAN", "D_real"}
    assert traces["D_real"] == [0.5, 1.5, 2.5, None]
    l1 = windows[VisdomDisplay.L1_WINDOW]
    assert {trace["name"]: trace["y"] for trace in l1["content"]["data"]} == {"G_L1": [None, None, None, 7.0]}
    assert l1["title"] == "run_a: L1 reconstruction"


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The times (time.monotonic) at which the display tries to connect."""
    seen: list[float] = []
    make_client = display_module._make_client

    def counting(*args, **kwargs):
        seen.append(time.monotonic())
        return make_client(*args, **kwargs)

    monkeypatch.setattr(display_module, "_make_client", counting)
    return seen


def test_no_server_warns_once_and_retries_once_per_interval(attempts: list[float]) -> None:
    port = free_port()  # nothing listens there
    retry_interval = 0.2
    display = VisdomDisplay(port=port, env="nobody", retry_interval=retry_interval)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(20):
            display.show_images({"real_A": _batch(3), "fake_B": _batch(3)}, epoch=step)
            display.plot_losses(step, {"G_GAN": 1.0, "D_fake": 2.0})
            if step == 10:
                time.sleep(0.25)  # lets a retry happen: still no server, still no second warning
    # 40 sends, but a connection is tried only once per retry interval (the sleep guarantees a second try)
    assert len(attempts) >= 2
    assert all(b - a >= retry_interval for a, b in zip(attempts, attempts[1:], strict=False))
    ours = [w for w in caught if issubclass(w.category, VisdomUnavailableWarning)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    message = str(ours[0].message)
    assert f"127.0.0.1:{port}" in message and f"pix2pix-ilm visdom --port {port}" in message
    assert ours[0].filename == __file__  # points at the caller, not at visual.py
    assert not display.connected


def test_hung_server_costs_one_timeout_per_retry_interval(attempts: list[float]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen()  # the kernel accepts connections, nobody ever answers
        port = hung.getsockname()[1]
        display = VisdomDisplay(port=port, env="hung", retry_interval=60, timeout=0.5)
        start = time.monotonic()
        with pytest.warns(VisdomUnavailableWarning, match="no answer in time"):
            display.plot_losses(0.0, {"G_GAN": 1.0})
        assert time.monotonic() - start > 0.4  # it waited for its 0.5 s time-out, and came back
        with warnings.catch_warnings():
            warnings.simplefilter("error", VisdomUnavailableWarning)
            for step in range(1, 11):
                display.plot_losses(step, {"G_GAN": 1.0})
                display.show_images({"fake_B": _batch(3)})
        assert len(attempts) == 1  # no new attempt within retry_interval
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
        with caplog.at_level(logging.WARNING, logger="pix2pix_ilm.viz.display"):
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
