"""The pages a person opens, rendered by a real browser (headless Chromium), with no network.

One tiny training sends previews to ``pix2pix-ilm visdom`` while Chromium has the visdom page open; the page
must load every file (no 403/404) and, after its scripts ran, show the image pane and the plotly loss curves.
Then the training page and the test page (after ``test`` and ``eval``) must load every ``<img>``.
In CI (``$CI`` set) a missing Chromium or missing visdom browser files fail the test instead of skipping it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pix2pix_ilm.cli import main
from pix2pix_ilm.viz.assets import asset_dir, missing_assets, missing_assets_message
from tests.faults import CHILD_ENV, NET
from tests.helpers import free_port, start_visdom_server, stop_visdom_server, unavailable
from tests.viz.browser import Browser, find_chromium

pytestmark = pytest.mark.slow

IMAGES_LOADED = "Array.from(document.images).map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0}))"
# The visdom page after its scripts ran: images in panes, and plotly's SVG lines with drawn paths.
VISDOM_PANES = """(() => {
  const images = Array.from(document.querySelectorAll('.react-grid-item img'))
    .filter(i => i.complete && i.naturalWidth > 0).length;
  const plots = Array.from(document.querySelectorAll('.js-plotly-plot')).map(plot => ({
    traces: plot.querySelectorAll('.scatterlayer .trace').length,
    drawn: Array.from(plot.querySelectorAll('.scatterlayer path.js-line'))
      .filter(p => (p.getAttribute('d') || '').length > 10).length,
    legend: Array.from(plot.querySelectorAll('.legendtext')).map(t => t.textContent),
  }));
  return {images, plots, text: document.body.innerText};
})()"""


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        unavailable("no headless Chromium: install Debian's package 'chromium' (apt-get install chromium)")
    missing = missing_assets()
    if missing:
        unavailable(missing_assets_message(missing, asset_dir()))
    return binary


def _data(facades_dir: Path, root: Path) -> Path:
    for phase, names in (("train", ["1", "2", "3", "4"]), ("test", ["1", "2"])):
        (root / phase).mkdir(parents=True)
        for n in names:
            shutil.copy(facades_dir / phase / f"{n}.jpg", root / phase / f"{n}.jpg")
    return root


def _wait_for_env(port: int, env: str, training: subprocess.Popen, timeout: float = 120) -> None:
    """Until the training's first preview has created ``env`` on the server."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/env_state", data=b"{}", method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with opener.open(request, timeout=10) as response:
            if env in json.load(response):
                return
        assert training.poll() is None, training.communicate()[1]
        time.sleep(0.2)
    raise TimeoutError(f"no visdom environment {env} after {timeout:g} s")


def _all_images_loaded(browser: Browser, page: Path) -> list[str]:
    browser.open(page.as_uri())
    images = browser.evaluate(IMAGES_LOADED)
    assert images, f"no <img> on {page}"
    assert [i for i in images if not i["ok"]] == [], f"images that did not load on {page}"
    assert browser.failed_requests() == []
    return [i["src"] for i in images]


def test_visdom_page_and_result_pages_render_in_chromium(chromium, facades_dir, tmp_path):
    started = time.monotonic()
    data = _data(facades_dir, tmp_path / "data")
    ckpt, results = tmp_path / "ckpt", tmp_path / "results"
    port = free_port()
    server = start_visdom_server(port, env_path=tmp_path / "visdom")
    try:
        with Browser(chromium) as browser:
            # A person opens the page while the training runs: the panes then update over its socket.
            train = [
                *("train", "--dataroot", str(data), "--name", "run", "--checkpoints-dir", str(ckpt), *NET),
                *("--n-epochs", "4", "--n-epochs-decay", "0", "--print-freq", "1", "--display-freq", "2"),
                *("--display-port", str(port), "--display-env", "browser_env", "--no-progress"),
            ]
            training = subprocess.Popen(
                [sys.executable, "-m", "pix2pix_ilm", *train],
                env=CHILD_ENV,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                _wait_for_env(port, "browser_env", training)
                browser.open(f"http://127.0.0.1:{port}/env/browser_env")
                assert (
                    browser.evaluate("typeof Plotly") == "object"
                    and browser.evaluate("typeof $") == "function"
                )
                panes = browser.wait_for(
                    f"(() => {{ const p = {VISDOM_PANES}; return p.images >= 1 && p.plots.length >= 2 && "
                    "p.plots.every(x => x.drawn > 0) && p.text.includes('(epoch 4)') ? p : null; })()",
                    timeout=90,
                )
            finally:
                _, errors = training.communicate(timeout=120)
            assert training.returncode == 0, errors
            browser.screenshot(tmp_path / "visdom.png")
            assert browser.failed_requests() == []
            legends = sorted(name for plot in panes["plots"] for name in plot["legend"])
            assert legends == ["D_fake", "D_real", "G_GAN", "G_L1"]
            assert sorted(plot["traces"] for plot in panes["plots"]) == [1, 3]  # L1 apart from the GAN terms

            web = ckpt / "run" / "web" / "index.html"
            sources = _all_images_loaded(browser, web)
            assert "loss.png" in sources and "images/epoch004_fake_B.png" in sources
            browser.screenshot(tmp_path / "training_page.png")
            assert browser.evaluate("document.querySelector('meta[http-equiv=refresh]') === null")
            assert "Finished 4 of 4 epochs, iteration 16" in browser.evaluate("document.body.innerText")

            test = ["test", "--dataroot", str(data), "--name", "run", "--checkpoints-dir", str(ckpt)]
            assert main([*test, "--results-dir", str(results)]) == 0
            out = results / "run" / "test_latest"
            assert main(["eval", "--results-dir", str(out), "--metrics", "rmse,ssim"]) == 0
            sources = _all_images_loaded(browser, out / "index.html")
            assert "metrics.png" in sources and "images/1_fake_B.png" in sources
            browser.screenshot(tmp_path / "test_page.png")
            text = browser.evaluate("document.body.innerText")
            assert browser.evaluate("document.title") == "run: test, epoch 4 of 4"
            assert "latest.pt: epoch 4 of 4 done, iteration 16" in text
            scores = json.loads((out / "metrics.json").read_text())
            assert f"{scores['per_image']['1']['rmse']:.4g}" in text  # the scores beside image 1's row
            assert browser.evaluate("document.querySelector('a[href=\"metrics.json\"]') !== null")
    finally:
        stop_visdom_server(server)
    print(f"browser test: {time.monotonic() - started:.1f} s; screenshots in {tmp_path}")
