"""Everything that shows results: image conversion, PNG files, HTML galleries and live visdom previews.

* :func:`tensor_to_image` is the one place where a network output becomes pixels; training previews, ``test``
  outputs and experiment grids all go through it, so a saved PNG means the same thing everywhere.
* :func:`write_gallery` writes a static HTML page (``web/index.html`` of a run, ``index.html`` of a test).
* :class:`VisdomDisplay` sends previews and loss curves to a visdom server without ever stopping training:
  an unreachable server costs one warning and a retry every ``retry_interval`` seconds.
* :func:`serve_visdom` runs a visdom server that works offline (``pix2pix-ilm visdom``);
  :func:`start_visdom_server` starts one as a subprocess (tests, scripts).
"""

from __future__ import annotations

import asyncio
import errno
import html
import io
import ipaddress
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union
from urllib.parse import quote, urlparse

import numpy as np
import torch
from PIL import Image

from pix2pix_ilm.checkpoint import atomic_write_bytes, atomic_write_text
from pix2pix_ilm.errors import UsageError

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

# ----------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------


def tensor_to_image(t: torch.Tensor) -> np.ndarray:
    """Convert a generator-range image tensor to a uint8 ``(H, W, 3)`` array.

    ``t`` is ``(C, H, W)``, ``(1, C, H, W)`` or ``(H, W)`` with values in [-1, 1] and C = 1 or 3; one channel
    becomes gray repeated to RGB. Values are clamped to [-1, 1] (NaN counts as 0), then
    ``pixel = round((x + 1) / 2 * 255)`` with ties rounded to even (:func:`torch.round`), so −1 → 0,
    0 → 128 (127.5 rounds to the even 128) and 1 → 255.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"tensor_to_image expects a torch.Tensor, got {type(t).__name__}")
    x = t.detach()
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"tensor_to_image takes one image; got a batch of shape {tuple(x.shape)}")
        x = x[0]
    elif x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"expected an image tensor (C, H, W) with C = 1 or 3, got shape {tuple(t.shape)}")
    x = x.to(device="cpu", dtype=torch.float32)
    x = torch.nan_to_num(x, nan=0.0).clamp(-1.0, 1.0)
    pixels = torch.round((x + 1.0) / 2.0 * 255.0).to(torch.uint8)
    if pixels.shape[0] == 1:
        pixels = pixels.expand(3, -1, -1)
    return np.ascontiguousarray(pixels.permute(1, 2, 0).numpy())


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """Check a uint8 ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` array and return it as ``(H, W, 3)``."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        kind = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected a uint8 numpy image (use tensor_to_image for tensors), got {kind}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"expected an image of shape (H, W) or (H, W, 3), got {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image


def save_image(image: np.ndarray, path: PathLike) -> None:
    """Write a uint8 ``(H, W)`` or ``(H, W, 3)`` array as a PNG, atomically; parent folders are created."""
    array = np.ascontiguousarray(_as_rgb(image))
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def image_grid(rows: Sequence[Sequence[np.ndarray]], pad: int = 2) -> np.ndarray:
    """Tile uint8 images into one ``(H, W, 3)`` array: one list per row, ``pad`` white pixels around cells.

    Every cell is as large as the largest image; smaller images sit in the top-left corner of their cell and
    short rows are padded with white.
    """
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    grid_rows = [[_as_rgb(image) for image in row] for row in rows]
    images = [image for row in grid_rows for image in row]
    if not images:
        raise ValueError("image_grid needs at least one image")
    cell_h = max(image.shape[0] for image in images)
    cell_w = max(image.shape[1] for image in images)
    n_cols = max(len(row) for row in grid_rows)
    n_rows = len(grid_rows)
    grid = np.full((n_rows * (cell_h + pad) + pad, n_cols * (cell_w + pad) + pad, 3), 255, dtype=np.uint8)
    for r, row in enumerate(grid_rows):
        for c, image in enumerate(row):
            top = pad + r * (cell_h + pad)
            left = pad + c * (cell_w + pad)
            grid[top : top + image.shape[0], left : left + image.shape[1]] = image
    return grid


# ----------------------------------------------------------------------------------------------------
# HTML
# ----------------------------------------------------------------------------------------------------

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
    atomic_write_text(path, "\n".join(lines))


# ----------------------------------------------------------------------------------------------------
# Visdom client
# ----------------------------------------------------------------------------------------------------


class VisdomUnavailableWarning(RuntimeWarning):
    """The visdom server could not be reached; training goes on without live previews."""


def _make_client(server: str, port: int, env: str, timeout: float) -> Any:
    """Connect a :class:`visdom.Visdom` whose HTTP requests time out; raises ``ConnectionError`` if down."""
    import requests
    import visdom

    trust_env = not _is_loopback(urlparse(server).hostname or "")

    class _TimeoutVisdom(visdom.Visdom):
        @property
        def session(self) -> requests.Session:
            # A server on this machine is never reached through $http_proxy (requests would use it otherwise).
            if self._session is None:
                self._session = requests.Session()
                self._session.trust_env = trust_env
            return self._session

        # ``_handle_post`` is visdom's documented override point for how requests are sent. Its default has no
        # timeout (a hung server would block training forever) and ignores HTTP error statuses.
        def _handle_post(self, url: str, data: Any = None) -> str:
            response = self.session.post(url, data=data if data is not None else {}, timeout=timeout)
            response.raise_for_status()
            return response.text

    visdom_logger = logging.getLogger("visdom")
    level = visdom_logger.level
    # The constructor logs "Setting up a new session..." and a note about the incoming socket at WARNING level
    # on every connection; they say nothing useful to a training run.
    visdom_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # visdom's own use of ``logger.warn``
            client = _TimeoutVisdom(
                server=server, port=port, env=env, raise_exceptions=True, use_incoming_socket=False
            )
    except requests.RequestException as err:  # raised outside visdom's own conversion, e.g. by the session
        raise ConnectionError(str(err)) from err
    finally:
        visdom_logger.setLevel(level)
    return client


def _failure_reason(err: BaseException) -> str:
    """A short reason for a failed visdom request (visdom hides the requests exception in ``__context__``)."""
    import requests

    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, requests.RequestException):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, requests.HTTPError) and cause.response is not None:
        return f"HTTP {cause.response.status_code}"
    if isinstance(cause, requests.ConnectTimeout):
        return "connection timed out"
    if isinstance(cause, requests.Timeout):
        return "no answer in time"
    if isinstance(cause, requests.ConnectionError):
        return "connection refused or host unreachable"
    return str(err) or type(err).__name__


class VisdomDisplay:
    """Live previews for the training loop: the current images in one window, the loss curves in another.

    Nothing here stops training: the client connects lazily, every request has a ``timeout``, and while the
    server is unreachable calls return at once (one warning per outage, a new attempt at most every
    ``retry_interval`` seconds). The whole loss history is kept here and re-sent on each
    :meth:`plot_losses`, so a server that comes back (or restarts) shows the complete curves again.
    """

    IMAGE_WINDOW = "pix2pix_ilm_images"
    LOSS_WINDOW = "pix2pix_ilm_losses"

    def __init__(
        self,
        server: str = "http://127.0.0.1",
        port: int = 8097,
        env: str = "main",
        enabled: bool = True,
        retry_interval: float = 30.0,
        timeout: float = 5.0,
    ) -> None:
        self.server = server if "://" in server else f"http://{server}"
        self.port = int(port)
        self.env = env
        self.enabled = enabled
        self.retry_interval = float(retry_interval)
        self.timeout = float(timeout)
        self._client: Any = None
        self._next_attempt = 0.0  # time.monotonic() before which no connection is tried
        self._down = False  # an outage has been reported and not yet ended
        self._ever_connected = False
        self._loss_x: list[float] = []
        self._loss_values: dict[str, list[float]] = {}  # name -> one value per x (NaN where it was absent)

    @property
    def address(self) -> str:
        """The server address, e.g. ``http://127.0.0.1:8097``."""
        return f"{self.server}:{self.port}"

    @property
    def connected(self) -> bool:
        """Whether the last request reached the server."""
        return self._client is not None

    def show_images(self, images: Mapping[str, torch.Tensor | np.ndarray], epoch: int | None = None) -> None:
        """Show images side by side in one window, updated in place (e.g. real_A, fake_B, real_B).

        Tensors are in [-1, 1] (a batch shows its first image); arrays are uint8 images.
        """
        if not self.enabled or not images:
            return
        pictures = []
        for value in images.values():
            if isinstance(value, torch.Tensor):
                pictures.append(tensor_to_image(value[0] if value.dim() == 4 else value))
            else:
                pictures.append(_as_rgb(value))
        names = " | ".join(images.keys())
        caption = names if epoch is None else f"{names} (epoch {epoch})"
        grid = image_grid([pictures], pad=2)
        opts = {"title": caption, "caption": caption}
        self._send(lambda vis: vis.image(grid.transpose(2, 0, 1), win=self.IMAGE_WINDOW, opts=opts))

    def plot_losses(self, x: float, losses: Mapping[str, float]) -> None:
        """Add one point per loss at ``x`` (e.g. a fractional epoch) and redraw the loss window."""
        if not self.enabled or not losses:
            return
        n_before = len(self._loss_x)
        self._loss_x.append(float(x))
        for name, value in losses.items():
            self._loss_values.setdefault(name, [float("nan")] * n_before).append(float(value))
        for history in self._loss_values.values():
            if len(history) == n_before:
                history.append(float("nan"))
        names = list(self._loss_values)
        y = np.array([self._loss_values[name] for name in names], dtype=np.float64).T  # (points, losses)
        x_values = np.array(self._loss_x, dtype=np.float64)
        opts = {"title": f"{self.env} losses", "legend": names, "xlabel": "epoch", "ylabel": "loss"}
        self._send(lambda vis: vis.line(Y=y, X=x_values, win=self.LOSS_WINDOW, opts=opts))

    def _send(self, action: Any) -> bool:
        """Run ``action(client)`` if the server is (or may again be) reachable; False when it was skipped."""
        client = self._client
        if client is None:
            if time.monotonic() < self._next_attempt:
                return False
            try:
                client = _make_client(self.server, self.port, self.env, self.timeout)
            except ConnectionError as err:
                self._mark_down(err)
                return False
        try:
            action(client)
        except ConnectionError as err:  # visdom turns every requests failure into ConnectionError
            self._mark_down(err)
            return False
        self._client = client
        self._ever_connected = True
        if self._down:
            self._down = False
            logger.warning("visdom server at %s is reachable again; live previews resume", self.address)
        return True

    def _mark_down(self, err: BaseException) -> None:
        self._client = None
        self._next_attempt = time.monotonic() + self.retry_interval
        if self._down:
            return
        self._down = True
        lost = "lost the connection to" if self._ever_connected else "cannot reach"
        warnings.warn(
            f"{lost} visdom server at {self.address} ({_failure_reason(err)}); training goes on without live "
            f"previews and retries every {self.retry_interval:g} s. Start a server with: "
            f"pix2pix-ilm visdom --port {self.port}",
            VisdomUnavailableWarning,
            stacklevel=4,
        )


# ----------------------------------------------------------------------------------------------------
# Visdom server
# ----------------------------------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_visdom(host: str = "127.0.0.1", port: int = 8097, env_path: str | None = None) -> None:
    """Run a visdom server in the foreground until interrupted, without downloading anything.

    ``python -m visdom.server`` first downloads the browser's JavaScript/CSS from CDNs and fails offline;
    this builds visdom's own tornado application directly instead, so the API (everything
    :class:`VisdomDisplay` uses) works with no network. ``env_path`` defaults to ``~/.visdom``.
    Raises :class:`UsageError` for a bad port, a port in use, an address that cannot be bound or an unusable
    ``env_path``.
    """
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets
    from visdom.server import app as visdom_app
    from visdom.server.defaults import DEFAULT_ENV_PATH
    from visdom.utils.shared_utils import get_visdom_path

    if not 1 <= port <= 65535:
        raise UsageError(f"--port must be between 1 and 65535, got {port}")
    try:
        sockets = bind_sockets(port, address=host)
    except socket.gaierror as err:
        raise UsageError(f"--host {host}: not a known address ({err.strerror})") from err
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise UsageError(
                f"port {port} on {host} is already in use (another visdom server?); choose one with --port"
            ) from err
        if err.errno == errno.EACCES:
            raise UsageError(f"no permission to use port {port}; choose one above 1023 with --port") from err
        raise UsageError(f"cannot listen on {host}:{port}: {err.strerror or err}") from err

    env_dir = Path(env_path).expanduser() if env_path else Path(DEFAULT_ENV_PATH)
    try:
        env_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        for sock in sockets:
            sock.close()
        raise UsageError(f"--env-path {env_dir}: cannot create the folder ({err.strerror or err})") from err

    # visdom's Application forces tornado's debug mode, which would restart the server whenever a Python file
    # it imported changes and would send tracebacks to browsers; keep the rest of its settings.
    visdom_app.tornado_settings.update(autoreload=False, serve_traceback=False)
    try:
        application = visdom_app.Application(port=port, base_url="", env_path=str(env_dir) + os.sep)
    except OSError as err:
        for sock in sockets:
            sock.close()
        raise UsageError(f"--env-path {env_dir}: {err.strerror or err}") from err

    shown_host = f"[{host}]" if ":" in host else host
    if _is_loopback(host):
        reach = "local only, use --host 0.0.0.0 to share it on your network"
    else:
        reach = "anyone who can reach this address can read and change your environments"
    print(
        f"visdom server at http://{shown_host}:{port} ({reach}); environments in {env_dir}; Ctrl+C stops it"
    )
    if not os.path.exists(get_visdom_path("static/js/plotly-plotly.min.js")):
        print(
            "note: visdom's browser scripts are not installed, so its web page stays blank; previews are "
            "still received. Run 'python -m visdom.server' once while online to download them."
        )
    sys.stdout.flush()

    async def _run() -> None:
        server = HTTPServer(application, max_buffer_size=1024**3)
        server.add_sockets(sockets)
        try:
            await asyncio.Event().wait()  # until interrupted
        finally:
            server.stop()

    asyncio.run(_run())


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
    port: int, host: str = "127.0.0.1", env_path: PathLike | None = None, timeout: float = 30
) -> subprocess.Popen:
    """Start ``python -m pix2pix_ilm visdom`` as a subprocess and wait until it answers HTTP on ``port``.

    Stop it with :func:`stop_visdom_server`. Raises :class:`UsageError` when the server refuses its options
    (e.g. the port is in use), ``RuntimeError`` when it exits otherwise and ``TimeoutError`` when it does not
    answer within ``timeout`` seconds; its output is in the message.
    """
    command = [sys.executable, "-m", "pix2pix_ilm", "visdom", "--port", str(port), "--host", host]
    if env_path is not None:
        command += ["--env-path", os.fspath(env_path)]
    environment = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[1])  # the child imports this very package
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, environment.get("PYTHONPATH")) if p)
    connect_host = "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host
    url = f"http://[{connect_host}]:{port}" if ":" in connect_host else f"http://{connect_host}:{port}"

    with tempfile.TemporaryFile() as log:  # the child keeps writing to it; it vanishes when both close it
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
        deadline = time.monotonic() + timeout
        while True:
            if _visdom_answers(url, timeout=1.0):
                return process
            code = process.poll()
            if code is not None or time.monotonic() > deadline:
                if code is None:
                    stop_visdom_server(process)
                log.seek(0)
                output = log.read().decode("utf-8", "replace").strip()
                if code == 2:
                    raise UsageError(
                        output.splitlines()[-1] if output else f"visdom server refused {command}"
                    )
                if code is None:
                    raise TimeoutError(
                        f"visdom server did not answer at {url} within {timeout:g} s:\n{output}"
                    )
                raise RuntimeError(f"visdom server exited with code {code}:\n{output}")
            time.sleep(0.1)


def stop_visdom_server(process: subprocess.Popen, timeout: float = 10) -> None:
    """Terminate a server from :func:`start_visdom_server` and wait for it (killed if it does not stop)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


__all__ = [
    "VisdomDisplay",
    "VisdomUnavailableWarning",
    "free_port",
    "image_grid",
    "save_image",
    "serve_visdom",
    "start_visdom_server",
    "stop_visdom_server",
    "tensor_to_image",
    "write_gallery",
]
