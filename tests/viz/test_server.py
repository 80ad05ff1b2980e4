"""The offline visdom server helpers."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.viz.server import serve_visdom, start_visdom_server


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
