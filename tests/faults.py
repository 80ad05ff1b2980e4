"""Fault injection helpers shared by the fault tests: real damaged files, CLI runs that must fail cleanly."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

from PIL import Image

from pix2pix_ilm.cli import main

NET = [
    "--netG",
    "unet_32",
    "--ngf",
    "4",
    "--ndf",
    "4",
    "--load-size",
    "36",
    "--crop-size",
    "32",
    "--direction",
    "BtoA",
]
QUICK = [
    *NET,
    "--no-display",
    "--no-progress",
    "--print-freq",
    "1",
    "--n-epochs",
    "1",
    "--n-epochs-decay",
    "0",
]
# One thread: these networks are tiny, and on a busy 2-core machine spinning OpenMP threads make them 30x slower.
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


# -- real files ----------------------------------------------------------------------------------------
def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        chunks.append((png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def png_broken_inside(png: bytes) -> bytes:
    """A PNG with a valid header and IEND trailer whose image data stops half-way: only decoding finds it."""
    chunks = png_chunks(png)
    pixels = b"".join(data for kind, data in chunks if kind == b"IDAT")
    head = b"".join(png_chunk(kind, data) for kind, data in chunks if kind not in (b"IDAT", b"IEND"))
    return png[:8] + head + png_chunk(b"IDAT", pixels[: len(pixels) // 2]) + png_chunk(b"IEND", b"")


def png_bomb() -> bytes:
    """A tiny PNG whose header claims 200000x100000 pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", 200_000, 100_000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b""))
        + png_chunk(b"IEND", b"")
    )


def write_folder(root: Path, phase: str, files: dict[str, bytes | Image.Image]) -> Path:
    folder = root / phase
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, Image.Image):
            content = encode(content, "PNG" if name.endswith(".png") else "JPEG", quality=95)
        (folder / name).write_bytes(content)
    return root


def write_paired(root: Path, phase: str, images: dict[str, Image.Image], grey: bool = False) -> Path:
    """Split each A|B image into ``<phase>_A/<stem>`` and ``<phase>_B/<stem>`` (A as .jpg and B as .png for
    every other stem, the other way round for the rest; ``grey``: single-channel files)."""
    for i, (stem, image) in enumerate(images.items()):
        half = image.width // 2
        sides = {
            "A": image.crop((0, 0, half, image.height)),
            "B": image.crop((half, 0, image.width, image.height)),
        }
        extensions = {"A": ".jpg", "B": ".png"} if i % 2 == 0 else {"A": ".png", "B": ".jpg"}
        for side, part in sides.items():
            write_folder(
                root, f"{phase}_{side}", {stem + extensions[side]: part.convert("L") if grey else part}
            )
    return root


def good_pairs(pairs, *keys: str) -> dict[str, Image.Image]:
    return {f"{key}.jpg": pairs[key] for key in keys}


def train_args(root: Path, ckpt: Path, name: str, *extra: str) -> list[str]:
    return ["train", "--dataroot", str(root), "--name", name, "--checkpoints-dir", str(ckpt), *QUICK, *extra]


def iterations(run: Path) -> list[int]:
    return [json.loads(line)["iteration"] for line in (run / "loss_log.jsonl").read_text().splitlines()]


def cli_error(capsys, *args: str, exit_code: int = 2) -> str:
    """Run the CLI in-process; it must exit ``exit_code`` (2: a usage error) with one line on stderr and no
    traceback."""
    code = main(list(args))
    err = capsys.readouterr().err.strip()
    assert code == exit_code, (code, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def run_cli(*args: str, **popen) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pix2pix_ilm", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=CHILD_ENV,
        **popen,
    )


# A training in a child process that holds still at a known step, for signals that must land there: after
# logging iteration AT (needs the loss log at that step) it touches FLAG.paused and waits for FLAG.go; each
# signal its stop handler takes touches FLAG.signalled (a second SIGINT / SIGTERM raises before that).
_PAUSING = """
import sys, time
from pathlib import Path
from pix2pix_ilm.cli import main
from pix2pix_ilm.training import reporting, stopping
at, flag = int(sys.argv[1]), Path(sys.argv[2])
log, handler = reporting.LossLog.log, stopping.StopRequest._handler
def pausing(self, entry):
    log(self, entry)
    if entry["iteration"] == at:
        flag.with_suffix(".paused").touch()
        while not flag.with_suffix(".go").exists():
            time.sleep(0.01)
def noting(self, signum, frame):
    handler(self, signum, frame)
    flag.with_suffix(".signalled").touch()
reporting.LossLog.log, stopping.StopRequest._handler = pausing, noting
raise SystemExit(main(sys.argv[3:]))
"""


def start_paused_training(args: list[str], at: int, flag: Path, **env: str) -> subprocess.Popen:
    """``pix2pix-ilm`` with ``args`` (and ``env`` added to the environment) in a child that stops after logging
    iteration ``at`` until ``flag.with_suffix(".go")`` exists (see ``_PAUSING``)."""
    command = [sys.executable, "-c", _PAUSING, str(at), str(flag), *args]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**CHILD_ENV, **env}
    )


def wait_for_file(path: Path, process: subprocess.Popen | None = None, timeout: float = 120) -> None:
    """Wait until ``path`` exists; the time-out only stops a hung test, and a child that exits first fails."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process is not None and process.poll() is not None:
            raise AssertionError(
                f"exited with {process.returncode} before {path.name}: {process.communicate()}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout:g} s")
        time.sleep(0.02)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


def copy_run(trained, tmp_path: Path) -> tuple[Path, Path]:
    data, ckpt = trained
    shutil.copytree(ckpt, tmp_path / "ckpt")
    return data, tmp_path / "ckpt"


def args_for_test(data: Path, ckpt: Path, results: Path, *extra: str) -> list[str]:
    return [
        "test",
        "--name",
        "base",
        "--dataroot",
        str(data),
        "--checkpoints-dir",
        str(ckpt),
        "--results-dir",
        str(results),
        *extra,
    ]


def trained_run(pairs, tmp_path: Path) -> tuple[Path, Path, Path, bytes]:
    """A one-epoch run "run" on two good pairs: (data root, checkpoints dir, run dir, bytes of its latest.pt)."""
    root = write_folder(tmp_path / "data", "train", good_pairs(pairs, "train1", "train2"))
    ckpt = tmp_path / "ckpt"
    run = ckpt / "run"
    assert main(train_args(root, ckpt, "run")) == 0
    return root, ckpt, run, (run / "latest.pt").read_bytes()
