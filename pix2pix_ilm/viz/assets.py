"""visdom's browser files (JavaScript, CSS, fonts), each one file of an npm package, in a local cache that
:func:`fetch_assets` fills once, instead of the CDNs ``python -m visdom.server`` downloads them from."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pix2pix_ilm.files import atomic_write_bytes

ASSET_DIR_ENV = "PIX2PIX_ILM_VISDOM_ASSETS"
FETCH_HINT = "pix2pix-ilm visdom --fetch-assets"


@dataclass(frozen=True)
class Asset:
    """One browser file: where visdom's page asks for it (under ``/static/``) and which npm file it is."""

    path: str
    package: str
    version: str
    member: str  # the file inside the package

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"


# visdom 0.2.4: the files of visdom.server.build.download_scripts, under the names its index.html and
# login.html request (the Glyphicons SVG without the "#glyphicons_halflingsregular" fragment visdom keeps
# in its file name, since a browser never sends a fragment).
ASSETS: tuple[Asset, ...] = (
    Asset("js/jquery.min.js", "jquery", "3.1.1", "dist/jquery.min.js"),
    Asset("js/bootstrap.min.js", "bootstrap", "3.3.7", "dist/js/bootstrap.min.js"),
    Asset("css/bootstrap.min.css", "bootstrap", "3.3.7", "dist/css/bootstrap.min.css"),
    *(
        Asset(f"fonts/{name}", "bootstrap", "3.3.7", f"dist/fonts/{name}")
        for name in (f"glyphicons-halflings-regular.{ext}" for ext in ("eot", "woff2", "woff", "ttf", "svg"))
    ),
    Asset("js/react-react.min.js", "react", "16.2.0", "umd/react.production.min.js"),
    Asset("js/react-dom.min.js", "react-dom", "16.2.0", "umd/react-dom.production.min.js"),
    Asset("js/react-modal.min.js", "react-modal", "3.1.10", "dist/react-modal.min.js"),
    Asset("js/plotly-plotly.min.js", "plotly.js-dist-min", "2.11.1", "plotly.min.js"),
    Asset("js/sjcl.js", "sjcl", "1.0.7", "sjcl.js"),
    Asset("js/layout_bin_packer.js", "layout-bin-packer", "1.4.0", "dist/layout-bin-packer.js"),
    Asset("js/layout-bin-packer.js.map", "layout-bin-packer", "1.4.0", "dist/layout-bin-packer.js.map"),
    Asset("js/d3.v3.min.js", "d3", "3.5.17", "d3.min.js"),
    Asset("js/d3-selection-multi.v1.js", "d3-selection-multi", "1.0.1", "build/d3-selection-multi.js"),
    Asset("js/saveSvgAsPng.js", "save-svg-as-png", "1.4.17", "lib/saveSvgAsPng.js"),
    Asset("css/react-resizable-styles.css", "react-resizable", "1.4.6", "css/styles.css"),
    Asset("css/react-grid-layout-styles.css", "react-grid-layout", "0.16.3", "css/styles.css"),
    Asset("fonts/classnames", "classnames", "2.2.5", "index.js"),
    *(
        Asset(f"js/mathjax/2.7.5/{member}", "mathjax", "2.7.5", member)
        for member in (
            "MathJax.js",
            "config/TeX-AMS-MML_HTMLorMML.js",
            "config/Safe.js",
            "extensions/Safe.js",
            "jax/output/SVG/config.js",
            "jax/output/SVG/jax.js",
            "jax/output/SVG/fonts/TeX/fontdata.js",
            "jax/output/SVG/fonts/TeX/Size1/Regular/Main.js",
        )
    ),
)


def asset_dir() -> Path:
    """The cache folder: ``$PIX2PIX_ILM_VISDOM_ASSETS``, else ``<venv>/share/pix2pix-ilm/visdom-<version>``
    inside a virtual environment, else ``~/.cache/pix2pix-ilm/visdom-<version>`` (``$XDG_CACHE_HOME``)."""
    explicit = os.environ.get(ASSET_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    from importlib.metadata import version

    folder = f"visdom-{version('visdom')}"
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix) / "share" / "pix2pix-ilm" / folder
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "pix2pix-ilm" / folder


def missing_assets(directory: Path | None = None) -> list[Asset]:
    """The assets not (or only as empty files) in ``directory`` (default :func:`asset_dir`)."""
    directory = asset_dir() if directory is None else Path(directory)
    paths = {a: directory / a.path for a in ASSETS}
    return [a for a, path in paths.items() if not path.is_file() or path.stat().st_size == 0]


def missing_assets_message(missing: list[Asset], directory: Path) -> str:
    """One line: which files are missing, what that means and how to get them."""
    shown = ", ".join(a.path for a in missing[:4]) + (f" and {len(missing) - 4} more" if missing[4:] else "")
    return (
        f"{len(missing)} of visdom's {len(ASSETS)} browser files are missing from {directory} ({shown}), so its "
        f"page cannot render (previews are still received). Get them once with '{FETCH_HINT}' (needs the npm "
        "registry or visdom's CDNs)"
    )


def _from_visdom_download(directory: Path, wanted: list[Asset], log: Callable[[str], None]) -> None:
    """Run visdom's own download into a temporary folder and keep the wanted files it got."""
    from visdom.server.build import download_scripts

    with tempfile.TemporaryDirectory(prefix="visdom-download-") as tmp:
        try:
            download_scripts(install_dir=tmp)
        except Exception as err:  # its MathJax step raises on any network error
            log(f"visdom's download stopped: {type(err).__name__}: {err}")
        for asset in wanted:
            source = Path(tmp) / "static" / asset.path
            if source.is_file() and source.stat().st_size > 0:
                atomic_write_bytes(directory / asset.path, source.read_bytes())


def _from_npm(directory: Path, wanted: list[Asset], log: Callable[[str], None], npm: str) -> None:
    """``npm pack`` the packages of ``wanted`` and copy the files out of the tarballs."""
    specs = sorted({a.spec for a in wanted})
    log(f"fetching {len(specs)} npm packages: {' '.join(specs)}")
    with tempfile.TemporaryDirectory(prefix="visdom-npm-") as tmp:
        command = [npm, "pack", "--json", "--silent", "--pack-destination", tmp, *specs]
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            log(f"npm pack failed: {lines[-1] if lines else f'exit code {done.returncode}'}")
            return
        tarballs = {f"{e['name']}@{e['version']}": Path(tmp) / e["filename"] for e in json.loads(done.stdout)}
        for spec, tarball in tarballs.items():
            # npm tarballs hold one top folder, usually "package/"; members are looked up by name, never
            # extracted by their own paths.
            targets = {a.member: a for a in wanted if a.spec == spec}
            with tarfile.open(tarball) as archive:
                for member in archive:
                    asset = targets.get(member.name.split("/", 1)[-1])
                    handle = archive.extractfile(member) if asset is not None and member.isfile() else None
                    if handle is not None:
                        atomic_write_bytes(directory / asset.path, handle.read())


def fetch_assets(
    directory: Path | None = None,
    *,
    use_cdn: bool | None = None,
    npm: str | None = None,
    log: Callable[[str], None] = print,
) -> list[Asset]:
    """Put every missing asset into ``directory`` (default :func:`asset_dir`); returns those still missing.
    ``use_cdn`` (default: whether visdom's main CDN answers) tries visdom's own download first, then ``npm``."""
    directory = asset_dir() if directory is None else Path(directory)
    missing = missing_assets(directory)
    if not missing:
        return []
    if use_cdn is None:  # visdom's own download has no timeouts: see first whether its main CDN answers
        with contextlib.suppress(OSError), socket.create_connection(("unpkg.com", 443), timeout=3.0):
            use_cdn = True
    if use_cdn:
        log(f"downloading {len(missing)} browser files with visdom's own download into {directory}")
        _from_visdom_download(directory, missing, log)
        missing = missing_assets(directory)
    if missing:
        npm = npm or shutil.which("npm")
        if npm is None:
            log("npm is not installed (it comes with Node.js), so the npm registry cannot be used")
        else:
            _from_npm(directory, missing, log, npm)
            missing = missing_assets(directory)
    return missing
