"""Helpers shared by several test modules."""

from __future__ import annotations

import socket


def closed_port_url(name: str) -> str:
    """A URL on 127.0.0.1 where nothing listens: connections are refused at once, on any machine."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"
