"""Live previews on a visdom server that never stop training: an unreachable server costs one warning and a
retry every ``retry_interval`` seconds."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch

from pix2pix_ilm.viz.images import as_rgb, image_grid, tensor_to_image
from pix2pix_ilm.viz.plots import L1_GROUP, loss_groups
from pix2pix_ilm.viz.server import is_loopback

logger = logging.getLogger(__name__)


class VisdomUnavailableWarning(RuntimeWarning):
    """The visdom server could not be reached; training goes on without live previews."""


def _make_client(server: str, port: int, env: str, timeout: float) -> Any:
    """Connect a :class:`visdom.Visdom` whose HTTP requests time out; raises ``ConnectionError`` if down."""
    import requests
    import visdom

    client = requests.Session()
    client.trust_env = not is_loopback(urlparse(server).hostname or "")  # this machine: never via $http_proxy

    class _TimeoutVisdom(visdom.Visdom):
        # visdom's override point for sending: its own has no timeout (a hung server would block training
        # forever) and ignores HTTP error statuses. visdom turns any requests error into ConnectionError.
        def _handle_post(self, url: str, data: Any = None) -> str:
            response = client.post(url, data=data if data is not None else {}, timeout=timeout)
            response.raise_for_status()
            return response.text

    visdom_logger = logging.getLogger("visdom")
    level = visdom_logger.level
    visdom_logger.setLevel(logging.ERROR)  # its WARNING notes on every connection say nothing to a run
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # visdom's own use of ``logger.warn``
            return _TimeoutVisdom(
                server=server, port=port, env=env, raise_exceptions=True, use_incoming_socket=False
            )
    finally:
        visdom_logger.setLevel(level)


def _failure_reason(err: BaseException) -> str:
    """A short reason for a failed visdom request (visdom hides the requests exception in ``__context__``)."""
    import requests

    cause = err.__context__  # visdom raises its ConnectionError while handling the requests error
    if isinstance(cause, requests.HTTPError) and cause.response is not None:
        return f"HTTP {cause.response.status_code}"
    if isinstance(cause, requests.Timeout):
        return "no answer in time"
    if isinstance(cause, requests.ConnectionError):
        return "connection refused or host unreachable"
    return str(err) or type(err).__name__


class VisdomDisplay:
    """The current images in one window, the loss curves in one window per scale (GAN terms, L1 term). The
    whole loss history is re-sent each time, so a server that comes back shows complete curves again."""

    IMAGE_WINDOW = "pix2pix_ilm_images"
    LOSS_WINDOW = "pix2pix_ilm_losses"  # the GAN terms
    L1_WINDOW = "pix2pix_ilm_losses_l1"
    MIN_HEIGHT = 128  # pixels of the image window's picture

    def __init__(
        self,
        server: str = "http://127.0.0.1",
        port: int = 8097,
        env: str = "main",
        retry_interval: float = 30.0,
        timeout: float = 5.0,
    ) -> None:
        self.server = server if "://" in server else f"http://{server}"
        self.port = int(port)
        self.env = env
        self.retry_interval = float(retry_interval)
        self.timeout = float(timeout)
        self._client: Any = None
        self._next_attempt = 0.0  # time.monotonic() before which no connection is tried
        self._down = False  # an outage has been reported and not yet ended
        self._ever_connected = False
        self._loss_x: list[float] = []
        self._loss_values: dict[str, list[float]] = {}  # name -> one value per x (NaN where it was absent)

    @property
    def connected(self) -> bool:
        """Whether the last request reached the server."""
        return self._client is not None

    def show_images(self, images: Mapping[str, torch.Tensor | np.ndarray], epoch: int | None = None) -> None:
        """Show images side by side in one window, updated in place: tensors in [-1, 1] (a batch shows its first
        image) or uint8 arrays."""
        if not images:
            return
        pictures = [
            tensor_to_image(v[0] if v.dim() == 4 else v) if isinstance(v, torch.Tensor) else as_rgb(v)
            for v in images.values()
        ]
        names = " | ".join(images.keys())
        caption = names if epoch is None else f"{names} (epoch {epoch})"
        grid = image_grid([pictures], pad=2)
        # visdom sizes the pane to the image, so small previews (a tiny model's 32-pixel crops) would hide under
        # their caption: enlarge them by a whole factor, pixels kept sharp, to at least MIN_HEIGHT rows.
        scale = -(-self.MIN_HEIGHT // grid.shape[0])
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
        opts = {"title": caption, "caption": caption}
        self._send(lambda vis: vis.image(grid.transpose(2, 0, 1), win=self.IMAGE_WINDOW, opts=opts))

    def plot_losses(self, x: float, losses: Mapping[str, float]) -> None:
        """Add one point per loss at ``x`` (e.g. a fractional epoch) and redraw the loss windows."""
        if not losses:
            return
        n_before = len(self._loss_x)
        self._loss_x.append(float(x))
        for name, value in losses.items():
            self._loss_values.setdefault(name, [float("nan")] * n_before).append(float(value))
        for history in self._loss_values.values():
            if len(history) == n_before:
                history.append(float("nan"))
        x_values = np.array(self._loss_x, dtype=np.float64)
        for title, names in loss_groups(list(self._loss_values)):
            y = np.array([self._loss_values[name] for name in names], dtype=np.float64).T  # (points, losses)
            window = self.L1_WINDOW if title == L1_GROUP else self.LOSS_WINDOW
            opts = {"title": f"{self.env}: {title}", "legend": names, "xlabel": "epoch", "ylabel": "loss"}
            if not self._send(
                lambda vis, y=y, window=window, opts=opts: vis.line(Y=y, X=x_values, win=window, opts=opts)
            ):
                return

    def _send(self, action: Any) -> bool:
        """Run ``action(client)`` if the server is (or may again be) reachable; False when it was skipped."""
        client = self._client
        if client is None and time.monotonic() < self._next_attempt:
            return False
        try:
            if client is None:
                client = _make_client(self.server, self.port, self.env, self.timeout)
            action(client)
        except ConnectionError as err:  # visdom turns every requests failure into ConnectionError
            self._mark_down(err)
            return False
        self._client = client
        self._ever_connected = True
        if self._down:
            self._down = False
            logger.warning(
                "visdom server at %s:%s is reachable again; live previews resume", self.server, self.port
            )
        return True

    def _mark_down(self, err: BaseException) -> None:
        self._client = None
        self._next_attempt = time.monotonic() + self.retry_interval
        if self._down:
            return
        self._down = True
        lost = "lost the connection to" if self._ever_connected else "cannot reach"
        warnings.warn(
            f"{lost} visdom server at {self.server}:{self.port} ({_failure_reason(err)}); training goes on "
            f"without live previews and retries every {self.retry_interval:g} s. Start a server with: "
            f"pix2pix-ilm visdom --port {self.port}",
            VisdomUnavailableWarning,
            stacklevel=4,
        )
