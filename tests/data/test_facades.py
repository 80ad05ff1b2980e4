"""The facades data set: ensure_facades (local folder, local archive, download, offline), safe extraction."""

from __future__ import annotations

import http.server
import io
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from pix2pix_ilm.data import facades
from pix2pix_ilm.errors import UsageError
from tests.helpers import closed_port_url

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TINY_COUNTS = {"train": 3, "test": 2}


def _tiny_archive(facades_dir: Path, path: Path, top: str = "facades") -> Path:
    """A facades-layout tar.gz with 3 train and 2 test images taken from the shared copy."""
    with tarfile.open(path, "w:gz") as tar:
        for split, count in TINY_COUNTS.items():
            for n in range(1, count + 1):
                tar.add(facades_dir / split / f"{n}.jpg", arcname=f"{top}/{split}/{n}.jpg")
    return path


# ------------------------------------------------------------------------------------------- facades


def test_local_folder_is_used_in_place(tmp_path: Path, facades_dir: Path) -> None:
    dest = tmp_path / "datasets"
    assert facades.ensure_facades(dest, facades_dir) == facades_dir
    assert not dest.exists()  # nothing copied
    assert facades.verify_facades_dir(facades_dir) == {"train": 400, "test": 106}


def test_env_var_gives_the_local_copy(
    tmp_path: Path, facades_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(facades.FACADES_ENV, str(facades_dir))
    assert facades.ensure_facades(tmp_path) == facades_dir


def test_incomplete_local_folder_is_refused(tmp_path: Path, facades_dir: Path) -> None:
    local = tmp_path / "facades"
    (local / "train").mkdir(parents=True)
    (local / "test").mkdir()
    for n in (1, 2):
        (local / "train" / f"{n}.jpg").write_bytes((facades_dir / "train" / f"{n}.jpg").read_bytes())
    with pytest.raises(UsageError, match=r"facades/train holds 2 images, expected 400"):
        facades.ensure_facades(tmp_path / "dest", local)
    with pytest.raises(UsageError, match="local facades copy not found"):
        facades.ensure_facades(tmp_path / "dest", tmp_path / "nowhere")


def test_wrong_image_size_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "facades"
    for split, count in TINY_COUNTS.items():
        (root / split).mkdir(parents=True)
        for n in range(1, count + 1):
            Image.new("RGB", (512, 256) if n > 1 or split == "test" else (256, 256)).save(
                root / split / f"{n}.jpg"
            )
    with pytest.raises(UsageError, match=r"train/1\.jpg is 256x256, expected 512x256"):
        facades.verify_facades_dir(root, TINY_COUNTS)


def test_local_archive_is_extracted_and_verified(
    tmp_path: Path, facades_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = _tiny_archive(facades_dir, tmp_path / "facades.tar.gz")
    dest = tmp_path / "datasets"
    root = facades.ensure_facades(dest, archive, expected_counts=TINY_COUNTS)
    assert root == dest / "facades"
    assert sorted(p.name for p in (root / "train").iterdir()) == ["1.jpg", "2.jpg", "3.jpg"]
    assert (root / "test" / "2.jpg").read_bytes() == (facades_dir / "test" / "2.jpg").read_bytes()
    assert facades.sha256_file(archive) in capsys.readouterr().out
    assert [p.name for p in dest.iterdir()] == ["facades"]  # no staging folder left behind
    assert facades.ensure_facades(dest, archive, expected_counts=TINY_COUNTS) == root  # reused


def test_local_archive_failing_the_check_names_the_archive(tmp_path: Path, facades_dir: Path) -> None:
    archive = _tiny_archive(facades_dir, tmp_path / "facades.tar.gz")
    dest = tmp_path / "datasets"
    with pytest.raises(
        UsageError, match=r"archive .*facades\.tar\.gz is not a complete facades set: .*expected 400"
    ):
        facades.ensure_facades(dest, archive)  # the official counts: 400 train images
    assert not (dest / "facades").exists()
    assert list(dest.iterdir()) == []


def test_unsafe_archives_are_refused(tmp_path: Path) -> None:
    escaping = tmp_path / "escaping.tar.gz"
    with tarfile.open(escaping, "w:gz") as tar:
        data = b"evil"
        info = tarfile.TarInfo("../evil.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    dest = tmp_path / "out"
    with pytest.raises(UsageError, match=r"escaping\.tar\.gz.*'\.\./evil\.txt' escapes the destination"):
        facades.extract_tar_safely(escaping, dest)
    assert not (tmp_path / "evil.txt").exists()

    linking = tmp_path / "linking.tar.gz"
    with tarfile.open(linking, "w:gz") as tar:
        info = tarfile.TarInfo("facades/train/1.jpg")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(UsageError, match="is a link or special file"):
        facades.extract_tar_safely(linking, dest)

    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"this is not gzip")
    with pytest.raises(UsageError, match=r"cannot extract .*garbage\.tar\.gz"):
        facades.extract_tar_safely(garbage, dest)


def test_offline_download_fails_fast_with_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(facades.FACADES_ENV, raising=False)
    dest = tmp_path / "datasets"
    started = time.perf_counter()
    with pytest.raises(UsageError) as caught:
        facades.ensure_facades(dest, url=closed_port_url("facades.tar.gz"))
    assert time.perf_counter() - started < 5
    message = str(caught.value)
    assert "cannot download" in message and "--from PATH" in message and facades.FACADES_ENV in message
    assert "\n" not in message
    assert list(dest.iterdir()) == []  # no partial download left


@pytest.fixture()
def archive_server(tmp_path: Path, facades_dir: Path) -> Iterator[str]:
    """A local HTTP server (127.0.0.1, no internet needed) serving a tiny facades.tar.gz."""
    served = tmp_path / "served"
    served.mkdir()
    _tiny_archive(facades_dir, served / "facades.tar.gz")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(served), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/facades.tar.gz"
    finally:
        server.shutdown()
        server.server_close()


def test_download_extracts_verifies_and_prints_sha256(
    tmp_path: Path, archive_server: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(facades.FACADES_ENV, raising=False)
    dest = tmp_path / "datasets"
    root = facades.ensure_facades(dest, url=archive_server, expected_counts=TINY_COUNTS)
    assert root == dest / "facades"
    assert facades.verify_facades_dir(root, TINY_COUNTS) == TINY_COUNTS
    archive = dest / "facades.tar.gz"
    assert archive.read_bytes() == (tmp_path / "served" / "facades.tar.gz").read_bytes()
    assert f"archive sha256 {facades.sha256_file(archive)}" in capsys.readouterr().out
    assert sorted(p.name for p in dest.iterdir()) == ["facades", "facades.tar.gz"]
    # A complete folder is used as it is, without touching the network.
    assert facades.ensure_facades(dest, url=closed_port_url("x"), expected_counts=TINY_COUNTS) == root


def test_incomplete_existing_folder_is_not_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(facades.FACADES_ENV, raising=False)
    (tmp_path / "facades" / "train").mkdir(parents=True)
    with pytest.raises(UsageError, match=r"train holds 0 images.*incomplete: remove it to download it again"):
        facades.ensure_facades(tmp_path, url=closed_port_url("facades.tar.gz"))
    assert (tmp_path / "facades" / "train").is_dir()


def test_download_script_help_runs() -> None:
    for script in ("download_facades.py", "cmp_to_aligned.py"):
        done = subprocess.run(
            [sys.executable, str(PROJECT_ROOT / "datasets" / script), "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "usage:" in done.stdout
