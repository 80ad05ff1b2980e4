"""Helpers shared by several test modules: what to do when something a test needs is missing, closed and free
ports, a visdom server in a subprocess, a small disk that fills up."""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

from pix2pix_ilm.errors import UsageError


def unavailable(reason: str) -> NoReturn:
    """The one decision for a missing dependency, data file or tool: fail in CI (``.ci/run`` sets ``CI``, installs
    and finds everything a test needs), skip on a developer's machine."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason, allow_module_level=True)


def require_module(name: str) -> ModuleType:
    """``import name``, or :func:`unavailable` when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        unavailable(f"{name} is not installed ({error}); scripts/setup.sh installs it")


def closed_port_url(name: str) -> str:
    """A URL on 127.0.0.1 where nothing listens: connections are refused at once, on any machine."""
    return f"http://127.0.0.1:{free_port()}/{name}"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (another process may still take it before you do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _visdom_answers(url: str, timeout: float) -> bool:
    """Whether a visdom server answers at ``url`` (its ``env_state`` endpoint returns the list of envs)."""
    request = urllib.request.Request(f"{url}/env_state", data=b"{}", method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an HTTP proxy
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status == 200 and response.read(1) == b"["
    except (urllib.error.URLError, OSError):
        return False


def start_visdom_server(
    port: int, host: str = "127.0.0.1", env_path: str | Path | None = None, timeout: float = 30
) -> subprocess.Popen:
    """``python -m pix2pix_ilm visdom`` as a subprocess, once it answers on ``port``. :class:`UsageError` when
    it refuses its options, ``RuntimeError`` when it exits otherwise, ``TimeoutError`` when it does not answer
    within ``timeout`` seconds; its output is in the message."""
    command = [sys.executable, "-m", "pix2pix_ilm", "visdom", "--port", str(port), "--host", host]
    if env_path is not None:
        command += ["--env-path", os.fspath(env_path)]
    environment = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[1])  # the child imports the package under test
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, environment.get("PYTHONPATH")) if p)
    connect_host = "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host
    url = f"http://[{connect_host}]:{port}" if ":" in connect_host else f"http://{connect_host}:{port}"

    with tempfile.TemporaryFile() as log:  # the child keeps writing to it; it vanishes when both close it
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
        deadline = time.monotonic() + timeout
        while (code := process.poll()) is None and time.monotonic() < deadline:
            if _visdom_answers(url, timeout=1.0):
                return process
            time.sleep(0.1)
        if code is None:
            stop_visdom_server(process)
        log.seek(0)
        output = log.read().decode("utf-8", "replace").strip()
    if code == 2:
        raise UsageError(output.splitlines()[-1] if output else f"visdom server refused {command}")
    if code is None:
        raise TimeoutError(f"visdom server did not answer at {url} within {timeout:g} s:\n{output}")
    raise RuntimeError(f"visdom server exited with code {code}:\n{output}")


def stop_visdom_server(process: subprocess.Popen, timeout: float = 10) -> None:
    """Terminate a server from :func:`start_visdom_server` and wait for it (killed if it does not stop)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def small_disk(path: Path, size: str = "4m") -> Iterator[Path]:
    """A real file system of ``size`` (a tmpfs) mounted at ``path`` for the block: a disk that fills up. Needs
    root, as CI has; elsewhere :func:`unavailable`."""
    path.mkdir(parents=True, exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    done = subprocess.run(mount, capture_output=True, text=True)
    if done.returncode != 0:
        unavailable(f"cannot mount a tmpfs at {path} (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to its last byte with one file, ``disk/filler``; returns it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for chunk in (2**20, 2**12, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    return filler
