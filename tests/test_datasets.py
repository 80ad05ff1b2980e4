"""Data sets: ensure_facades (local folder, local archive, download, offline), safe extraction, CMP conversion."""

from __future__ import annotations

import http.server
import io
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pix2pix_ilm import datasets
from pix2pix_ilm.errors import UsageError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TINY_COUNTS = {"train": 3, "test": 2}


def _closed_port_url(name: str) -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


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
    assert datasets.ensure_facades(dest, facades_dir) == facades_dir
    assert not dest.exists()  # nothing copied
    assert datasets.verify_facades_dir(facades_dir) == {"train": 400, "test": 106}


def test_env_var_gives_the_local_copy(
    tmp_path: Path, facades_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(datasets.FACADES_ENV, str(facades_dir))
    assert datasets.ensure_facades(tmp_path) == facades_dir


def test_incomplete_local_folder_is_refused(tmp_path: Path, facades_dir: Path) -> None:
    local = tmp_path / "facades"
    (local / "train").mkdir(parents=True)
    (local / "test").mkdir()
    for n in (1, 2):
        (local / "train" / f"{n}.jpg").write_bytes((facades_dir / "train" / f"{n}.jpg").read_bytes())
    with pytest.raises(UsageError, match=r"facades/train holds 2 images, expected 400"):
        datasets.ensure_facades(tmp_path / "dest", local)
    with pytest.raises(UsageError, match="local facades copy not found"):
        datasets.ensure_facades(tmp_path / "dest", tmp_path / "nowhere")


def test_wrong_image_size_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "facades"
    for split, count in TINY_COUNTS.items():
        (root / split).mkdir(parents=True)
        for n in range(1, count + 1):
            Image.new("RGB", (512, 256) if n > 1 or split == "test" else (256, 256)).save(
                root / split / f"{n}.jpg"
            )
    with pytest.raises(UsageError, match=r"train/1\.jpg is 256x256, expected 512x256"):
        datasets.verify_facades_dir(root, TINY_COUNTS)


def test_local_archive_is_extracted_and_verified(
    tmp_path: Path, facades_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = _tiny_archive(facades_dir, tmp_path / "facades.tar.gz")
    dest = tmp_path / "datasets"
    root = datasets.ensure_facades(dest, archive, expected_counts=TINY_COUNTS)
    assert root == dest / "facades"
    assert sorted(p.name for p in (root / "train").iterdir()) == ["1.jpg", "2.jpg", "3.jpg"]
    assert (root / "test" / "2.jpg").read_bytes() == (facades_dir / "test" / "2.jpg").read_bytes()
    assert datasets.sha256_file(archive) in capsys.readouterr().out
    assert [p.name for p in dest.iterdir()] == ["facades"]  # no staging folder left behind
    assert datasets.ensure_facades(dest, archive, expected_counts=TINY_COUNTS) == root  # reused


def test_local_archive_failing_the_check_names_the_archive(tmp_path: Path, facades_dir: Path) -> None:
    archive = _tiny_archive(facades_dir, tmp_path / "facades.tar.gz")
    dest = tmp_path / "datasets"
    with pytest.raises(
        UsageError, match=r"archive .*facades\.tar\.gz is not a complete facades set: .*expected 400"
    ):
        datasets.ensure_facades(dest, archive)  # the official counts: 400 train images
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
        datasets.extract_tar_safely(escaping, dest)
    assert not (tmp_path / "evil.txt").exists()

    linking = tmp_path / "linking.tar.gz"
    with tarfile.open(linking, "w:gz") as tar:
        info = tarfile.TarInfo("facades/train/1.jpg")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(UsageError, match="is a link or special file"):
        datasets.extract_tar_safely(linking, dest)

    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"this is not gzip")
    with pytest.raises(UsageError, match=r"cannot extract .*garbage\.tar\.gz"):
        datasets.extract_tar_safely(garbage, dest)


def test_offline_download_fails_fast_with_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(datasets.FACADES_ENV, raising=False)
    dest = tmp_path / "datasets"
    started = time.perf_counter()
    with pytest.raises(UsageError) as caught:
        datasets.ensure_facades(dest, url=_closed_port_url("facades.tar.gz"))
    assert time.perf_counter() - started < 5
    message = str(caught.value)
    assert "cannot download" in message and "--from PATH" in message and datasets.FACADES_ENV in message
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
    monkeypatch.delenv(datasets.FACADES_ENV, raising=False)
    dest = tmp_path / "datasets"
    root = datasets.ensure_facades(dest, url=archive_server, expected_counts=TINY_COUNTS)
    assert root == dest / "facades"
    assert datasets.verify_facades_dir(root, TINY_COUNTS) == TINY_COUNTS
    archive = dest / "facades.tar.gz"
    assert archive.read_bytes() == (tmp_path / "served" / "facades.tar.gz").read_bytes()
    assert f"archive sha256 {datasets.sha256_file(archive)}" in capsys.readouterr().out
    assert sorted(p.name for p in dest.iterdir()) == ["facades", "facades.tar.gz"]
    # A complete folder is used as it is, without touching the network.
    assert datasets.ensure_facades(dest, url=_closed_port_url("x"), expected_counts=TINY_COUNTS) == root


def test_incomplete_existing_folder_is_not_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(datasets.FACADES_ENV, raising=False)
    (tmp_path / "facades" / "train").mkdir(parents=True)
    with pytest.raises(UsageError, match=r"train holds 0 images.*incomplete: remove it to download it again"):
        datasets.ensure_facades(tmp_path, url=_closed_port_url("facades.tar.gz"))
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


# ----------------------------------------------------------------------------------------------- CMP


def test_palette_is_jet64_and_matches_the_facades_label_maps(facades_dir: Path, cmp_base_dir: Path) -> None:
    palette = datasets.FACADES_PALETTE
    assert palette.shape == (13, 3)
    assert palette[1].tolist() == [0, 0, 223]  # background
    assert palette[2].tolist() == [0, 48, 255]  # facade
    assert palette[3].tolist() == [0, 128, 255]  # window
    assert palette[12].tolist() == [175, 0, 0]  # shop
    assert len({tuple(c) for c in palette[1:].tolist()}) == 12

    # facades train/2.jpg is CMP cmp_b0100. Inside the large regions (eroded, away from JPEG-blurred borders)
    # the facades colours are this palette's, not the PNG's embedded one (MATLAB jet(12)).
    from scipy import ndimage

    facades_b = np.asarray(Image.open(facades_dir / "train" / "2.jpg").convert("RGB"))[:, 256:].astype(float)
    with Image.open(cmp_base_dir / "cmp_b0100.png") as label:
        embedded = np.array(label.getpalette()[: 3 * 13], dtype=float).reshape(13, 3)
        labels = np.asarray(label.resize((256, 256), Image.NEAREST))
    for cls in (1, 2, 3):  # background, facade, window
        inside = ndimage.binary_erosion(labels == cls, iterations=2)
        assert inside.sum() > 3000
        median = np.median(facades_b[inside], axis=0)
        assert np.linalg.norm(median - palette[cls]) < 6, cls
        assert np.linalg.norm(median - embedded[cls]) > 40, cls

    # Across other images, about half or more of the B pixels lie within 12 of one of our colours (few do for
    # the embedded palette); the rest are JPEG-blurred region borders.
    for name in ("1.jpg", "50.jpg", "300.jpg"):
        pixels = np.asarray(Image.open(facades_dir / "train" / name).convert("RGB"))[:, 256:].reshape(
            -1, 1, 3
        )
        for colours, low, high in ((palette, 0.4, 1.0), (embedded.astype(np.uint8), 0.0, 0.15)):
            distance = np.sqrt(((pixels.astype(int) - colours[None, 1:].astype(int)) ** 2).sum(-1)).min(1)
            assert low < np.mean(distance < 12) < high, name


def test_convert_cmp_builds_aligned_pairs(tmp_path: Path, cmp_base_dir: Path) -> None:
    size = 128
    out = tmp_path / "png"
    written = datasets.convert_cmp(cmp_base_dir, out, size, test_count=1, image_format="png", limit=3)
    assert [p.name for p in written["train"]] == ["cmp_b0001.png", "cmp_b0002.png"]
    assert [p.name for p in written["test"]] == ["cmp_b0003.png"]
    palette = {tuple(c) for c in datasets.FACADES_PALETTE[1:].tolist()}
    for path in written["train"] + written["test"]:
        aligned = np.asarray(Image.open(path).convert("RGB"))
        assert aligned.shape == (size, 2 * size, 3)
        right = aligned[:, size:].reshape(-1, 3)
        assert {tuple(c) for c in np.unique(right, axis=0).tolist()} <= palette
        stem = path.stem
        with Image.open(cmp_base_dir / f"{stem}.png") as label:
            labels = np.asarray(label.resize((size, size), Image.NEAREST))
        assert np.array_equal(aligned[:, size:], datasets.FACADES_PALETTE[labels])
        photo = np.asarray(Image.open(cmp_base_dir / f"{stem}.jpg").convert("RGB").resize((size, size)))
        assert np.abs(aligned[:, :size].astype(int) - photo).mean() < 2.0

    jpg = datasets.convert_cmp(cmp_base_dir, tmp_path / "jpg", size, limit=3)
    assert list(jpg) == ["train"] and len(jpg["train"]) == 3
    aligned = np.asarray(Image.open(jpg["train"][0]).convert("RGB")).astype(int)
    assert aligned.shape == (size, 2 * size, 3)
    with Image.open(cmp_base_dir / "cmp_b0001.jpg") as photo_file:
        photo = np.asarray(photo_file.convert("RGB").resize((size, size), Image.BICUBIC)).astype(int)
    assert np.abs(aligned[:, :size] - photo).mean() < 3.0  # JPEG at quality 95
    right = aligned[:, size:].reshape(-1, 1, 3)
    distance = np.sqrt(((right - datasets.FACADES_PALETTE[None, 1:].astype(int)) ** 2).sum(-1)).min(1)
    assert np.mean(distance < 20) > 0.9


def test_convert_cmp_errors_name_the_file(tmp_path: Path, cmp_base_dir: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    with pytest.raises(UsageError, match="no cmp_\\*.jpg photos"):
        datasets.convert_cmp(base, tmp_path / "out")
    (base / "cmp_b0001.jpg").write_bytes((cmp_base_dir / "cmp_b0001.jpg").read_bytes())
    with pytest.raises(UsageError, match=r"cmp_b0001\.jpg has no label map: .*cmp_b0001\.png is missing"):
        datasets.convert_cmp(base, tmp_path / "out")
    Image.new("P", (10, 10)).save(base / "cmp_b0001.png")
    with pytest.raises(UsageError, match=r"cmp_b0001\.jpg is .* but its label map .*cmp_b0001\.png is"):
        datasets.convert_cmp(base, tmp_path / "out")
    with pytest.raises(UsageError, match="test_count"):
        datasets.convert_cmp(cmp_base_dir, tmp_path / "out", limit=2, test_count=3)
