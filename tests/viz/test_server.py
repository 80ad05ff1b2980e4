"""The offline visdom server helpers."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urljoin

import pytest

from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.viz.assets import ASSET_DIR_ENV, ASSETS
from pix2pix_ilm.viz.server import serve_visdom
from tests.helpers import free_port, start_visdom_server, stop_visdom_server


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


def _get(url: str) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


def test_the_page_and_every_file_it_links_are_served(tmp_path: Path, monkeypatch) -> None:
    """No 403 for the page (tornado >= 6.6 and visdom's static_url("../user/style.css")), no 404 for its
    files: visdom's own from its package, the browser files from the asset cache."""
    assets = tmp_path / "assets"
    for asset in ASSETS:
        (assets / asset.path).parent.mkdir(parents=True, exist_ok=True)
        (assets / asset.path).write_text(f"/* {asset.spec} */")
    monkeypatch.setenv(ASSET_DIR_ENV, str(assets))
    port = free_port()
    server = start_visdom_server(port, env_path=tmp_path / "env")
    try:
        base = f"http://127.0.0.1:{port}/"
        status, page = _get(base)
        assert status == 200
        links = re.findall(r"""(?:src|href)=["']?([^"'\s>]+)""", page.decode())
        urls = {urljoin(base, link) for link in links if link.startswith("/")}
        assert f"{base}user/style.css" in urls  # what /static/../user/style.css means to a browser
        assert len(urls) >= 18
        assert {url: _get(url)[0] for url in urls} == {url: 200 for url in urls}
        status, body = _get(f"{base}static/js/jquery.min.js")
        assert body == b"/* jquery@3.1.1 */"
        # Still no way out of the served folders.
        assert _get(f"{base}static/..%2F..%2Fvisdom%2F__init__.py")[0] in (403, 404)
        assert _get(f"{base}static/js/..%2F..%2F..%2Fetc%2Fpasswd")[0] in (403, 404)
    finally:
        stop_visdom_server(server)


def test_missing_browser_files_are_named_at_start(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, ASSET_DIR_ENV: str(tmp_path / "empty")}
    command = [
        sys.executable,
        "-m",
        "pix2pix_ilm",
        "visdom",
        *("--port", str(port), "--env-path", str(tmp_path)),
    ]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        first, note = server.stdout.readline(), server.stdout.readline()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert first.startswith(f"visdom server at http://127.0.0.1:{port}")
    assert note.startswith(f"note: {len(ASSETS)} of visdom's {len(ASSETS)} browser files are missing from")
    assert "js/jquery.min.js" in note and "pix2pix-ilm visdom --fetch-assets" in note
