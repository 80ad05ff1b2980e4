"""visdom's browser files: the list matches visdom's page, and the fetch fills the cache without CDNs."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from pathlib import Path

from pix2pix_ilm.viz import assets
from pix2pix_ilm.viz.assets import ASSETS, fetch_assets, missing_assets, missing_assets_message

FAKE_NPM = r"""
import io, json, sys, tarfile
from pathlib import Path
args = sys.argv[1:]
dest = Path(args[args.index("--pack-destination") + 1])
specs = [a for a in args[1:] if not a.startswith("--") and a != str(dest)]
with open(sys.argv[0] + ".calls", "a") as log:
    log.write(" ".join(specs) + "\n")
members = json.loads(Path(sys.argv[0] + ".members").read_text())
out = []
for spec in specs:
    name, version = spec.rsplit("@", 1)
    filename = f"{name}-{version}.tgz"
    with tarfile.open(dest / filename, "w:gz") as archive:
        for member in members[spec]:
            data = f"{spec}:{member}".encode()
            info = tarfile.TarInfo(f"package/{member}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    out.append({"name": name, "version": version, "filename": filename})
print(json.dumps(out))
"""


def _fake_npm(tmp_path: Path) -> Path:
    """An ``npm`` that packs tarballs whose files hold ``<spec>:<member>``, and logs its calls."""
    npm = tmp_path / "npm"
    npm.write_text(f"#!{sys.executable}\n{FAKE_NPM}")
    npm.chmod(0o755)
    members: dict[str, list[str]] = {}
    for asset in ASSETS:
        members.setdefault(asset.spec, []).append(asset.member)
    (tmp_path / "npm.members").write_text(json.dumps(members))
    return npm


def _calls(npm: Path) -> list[str]:
    log = Path(str(npm) + ".calls")
    return log.read_text().splitlines() if log.is_file() else []


def test_assets_cover_every_file_visdoms_pages_request():
    from visdom.utils.shared_utils import get_visdom_path

    static = Path(get_visdom_path("static"))
    wanted = set()
    for page in ("index.html", "login.html"):
        wanted |= set(re.findall(r"""static_url\(\s*["']([^"']+)["']\s*\)""", (static / page).read_text()))
    wanted = {w for w in wanted if not w.startswith("../") and not (static / w).is_file()}
    assert wanted and wanted <= {a.path for a in ASSETS}
    # Bootstrap's CSS asks for its fonts relative to itself.
    assert {f"fonts/glyphicons-halflings-regular.{e}" for e in ("eot", "woff2", "woff", "ttf", "svg")} <= {
        a.path for a in ASSETS
    }


def test_fetch_from_npm_once(tmp_path):
    npm = _fake_npm(tmp_path)
    cache = tmp_path / "cache"
    old = os.umask(0o022)
    try:
        assert fetch_assets(cache, use_cdn=False, npm=str(npm), log=lambda line: None) == []
    finally:
        os.umask(old)
    assert len(_calls(npm)) == 1
    for asset in ASSETS:
        path = cache / asset.path
        assert path.read_text() == f"{asset.spec}:{asset.member}"
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert missing_assets(cache) == []
    assert fetch_assets(cache, use_cdn=False, npm=str(npm)) == []  # complete: npm is not run again
    assert len(_calls(npm)) == 1


def test_visdom_download_first_then_npm_for_the_rest(tmp_path, monkeypatch):
    npm = _fake_npm(tmp_path)
    got = ASSETS[:3]

    def download_scripts(install_dir):  # visdom's download, as it lays out files, with 3 files reached
        for asset in got:
            target = Path(install_dir) / "static" / asset.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("from the CDN")
        raise ConnectionError("cdnjs unreachable")  # its MathJax step raises on network errors

    monkeypatch.setattr("visdom.server.build.download_scripts", download_scripts)
    lines: list[str] = []
    cache = tmp_path / "cache"
    assert fetch_assets(cache, use_cdn=True, npm=str(npm), log=lines.append) == []
    assert all((cache / a.path).read_text() == "from the CDN" for a in got)
    assert (cache / ASSETS[-1].path).read_text().startswith("mathjax@2.7.5:")
    assert any("visdom's download stopped: ConnectionError" in line for line in lines)


def test_without_npm_the_missing_files_are_named(tmp_path, monkeypatch):
    monkeypatch.setattr(assets.shutil, "which", lambda name: None)
    lines: list[str] = []
    missing = fetch_assets(tmp_path, use_cdn=False, log=lines.append)
    assert missing == list(ASSETS)
    assert any("npm is not installed" in line for line in lines)
    message = missing_assets_message(missing, tmp_path)
    assert f"{len(ASSETS)} of visdom's {len(ASSETS)} browser files are missing from {tmp_path}" in message
    assert "js/jquery.min.js" in message and "pix2pix-ilm visdom --fetch-assets" in message


def test_asset_dir_is_outside_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv(assets.ASSET_DIR_ENV, str(tmp_path / "x"))
    assert assets.asset_dir() == tmp_path / "x"
    monkeypatch.delenv(assets.ASSET_DIR_ENV)
    assert "visdom-" in assets.asset_dir().name
    assert Path(assets.__file__).parents[1] not in assets.asset_dir().parents


def test_an_empty_file_counts_as_missing(tmp_path):
    target = tmp_path / ASSETS[0].path
    target.parent.mkdir(parents=True)
    target.write_bytes(b"")
    assert ASSETS[0] in missing_assets(tmp_path)
