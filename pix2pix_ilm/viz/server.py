"""A visdom server that works offline (``pix2pix-ilm visdom``): visdom's application, local browser files."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
import sys
from pathlib import Path

from pix2pix_ilm.errors import UsageError


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def static_handler(asset_dir: Path) -> type:
    """The handler of visdom's ``/static/`` URLs: visdom's own files, then the browser files in ``asset_dir``."""
    from tornado.web import StaticFileHandler

    assets = str(Path(asset_dir).absolute())

    class VisdomStaticFiles(StaticFileHandler):
        @classmethod
        def get_absolute_path(cls, root: str, path: str) -> str:
            own = super().get_absolute_path(root, path)  # raises HTTP 403 for a path that leaves root
            return own if os.path.isfile(own) else super().get_absolute_path(assets, path)

        def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
            inside_assets = absolute_path.startswith(os.path.join(assets, ""))
            return super().validate_absolute_path(assets if inside_assets else root, absolute_path)

        # visdom's page links static_url("../user/style.css") (served by its UserSettingsHandler); tornado 6.6
        # refuses (HTTP 403) to hash a path outside the static folder, which failed the whole page. Such a
        # path gets no hash; requests for files are still confined to the two folders by tornado.
        @classmethod
        def get_version(cls, settings: dict, path: str) -> str | None:
            if path.startswith("../"):
                return None
            return super().get_version(settings, path)

    return VisdomStaticFiles


def serve_visdom(host: str = "127.0.0.1", port: int = 8097, env_path: str | None = None) -> None:
    """Run visdom's tornado application in the foreground until interrupted, with the browser files from the
    asset cache instead of CDNs (``python -m visdom.server`` downloads them at every start and fails offline).
    :class:`UsageError` for a port or address that cannot be used, or an unusable ``env_path``."""
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets
    from visdom.server import app as visdom_app
    from visdom.server.defaults import DEFAULT_ENV_PATH

    from pix2pix_ilm.viz import assets

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
    # visdom's Application forces tornado's debug mode, which would restart the server whenever a Python file
    # it imported changes and would send tracebacks to browsers; keep the rest of its settings.
    assets_dir = assets.asset_dir()
    visdom_app.tornado_settings.update(
        autoreload=False, serve_traceback=False, static_handler_class=static_handler(assets_dir)
    )
    try:
        env_dir.mkdir(parents=True, exist_ok=True)
        application = visdom_app.Application(port=port, base_url="", env_path=str(env_dir) + os.sep)
    except OSError as err:
        for sock in sockets:
            sock.close()
        raise UsageError(f"--env-path {env_dir}: cannot use the folder ({err.strerror or err})") from err

    shown_host = f"[{host}]" if ":" in host else host
    if is_loopback(host):
        reach = "local only, use --host 0.0.0.0 to share it on your network"
    else:
        reach = "anyone who can reach this address can read and change your environments"
    print(
        f"visdom server at http://{shown_host}:{port} ({reach}); environments in {env_dir}; Ctrl+C stops it"
    )
    missing = assets.missing_assets(assets_dir)
    if missing:
        print(f"note: {assets.missing_assets_message(missing, assets_dir)}")
    sys.stdout.flush()

    async def _run() -> None:
        server = HTTPServer(application, max_buffer_size=1024**3)
        server.add_sockets(sockets)
        try:
            await asyncio.Event().wait()  # until interrupted
        finally:
            server.stop()

    asyncio.run(_run())
