"""What a training, test and eval leave for people: progress lines in a log file, one-line warnings,
files readable by others under umask 022, a loss plot on the training page."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults import CHILD_ENV, NET, good_pairs, write_folder
from tests.helpers import closed_port_url

PROGRESS = re.compile(
    r"^\[train report\] (\d+)/12 it \(\d+\.\d%\) epoch (\d)/3((?: [DG]_\w+ \d+\.\d{3}){4}) @(\d+) "
    r"\| \d+\.\d\d it/s, elapsed \d+:\d\d, ETA \d+:\d\d$"
)


def _cli(*args: str, stderr_file: Path) -> subprocess.CompletedProcess:
    """Run the CLI with stderr sent to a file (not a terminal) under umask 022."""
    with open(stderr_file, "w") as err:
        return subprocess.run(
            [sys.executable, "-m", "pix2pix_ilm", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            timeout=300,
            env=CHILD_ENV,
            preexec_fn=lambda: os.umask(0o022),
        )


def test_log_file_progress_warnings_and_readable_results(pairs, tmp_path):
    data = tmp_path / "data"
    write_folder(data, "train", good_pairs(pairs, "train1", "train2", "train3", "train4"))
    write_folder(data, "test", good_pairs(pairs, "test1", "test2"))
    ckpt, results = tmp_path / "ckpt", tmp_path / "results"
    port = closed_port_url("x").rsplit(":", 1)[1].split("/")[0]
    log = tmp_path / "train.log"
    done = _cli(
        *("train", "--dataroot", str(data), "--name", "report", "--checkpoints-dir", str(ckpt), *NET),
        *("--n-epochs", "2", "--n-epochs-decay", "1", "--print-freq", "5", "--display-freq", "1"),
        *("--display-port", port, "--progress-interval", "0.05", "--loss-plot", "log"),
        stderr_file=log,
    )
    text = log.read_text()
    assert done.returncode == 0, text
    lines = text.splitlines()
    progress = [PROGRESS.match(line) for line in lines if line.startswith("[train report]")]
    assert len(progress) > 2 and all(progress), lines
    # The live epoch (4 steps each), and the losses of the last logged step: the first step, every
    # --print-freq 5 steps and each epoch's end.
    logged = [json.loads(line)["iteration"] for line in (ckpt / "report" / "loss_log.jsonl").open()]
    assert logged == [1, 4, 5, 8, 10, 12]
    # The pix2pix code's schedule, 2 + 1 epochs: factors 1, 0.5, 0 by epoch.
    rates = {
        json.loads(line)["epoch"]: json.loads(line)["lr"]
        for line in (ckpt / "report" / "loss_log.jsonl").open()
    }
    assert rates == pytest.approx({1: 2e-4, 2: 1e-4, 3: 0.0})
    for line in progress:
        count = int(line.group(1))
        assert int(line.group(2)) == (count + 3) // 4, line.group(0)
        assert int(line.group(4)) == max(i for i in logged if i <= count), line.group(0)
    assert set(progress[-1].group(3).split()[::2]) == {"G_GAN", "G_L1", "D_real", "D_fake"}
    assert int(progress[-1].group(1)) == 12  # the last line is the finished count
    warnings = [line for line in lines if "warning" in line]
    assert warnings == [
        f"pix2pix-ilm train: warning: cannot reach visdom server at http://127.0.0.1:{port} (connection refused "
        "or host unreachable); training goes on without live previews and retries every 30 s. Start a server "
        f"with: pix2pix-ilm visdom --port {port}"
    ]
    assert ".py" not in text and "Traceback" not in text

    web = ckpt / "report" / "web"
    page = (web / "index.html").read_text()
    assert '<img class="plot" src="loss.png"' in page and "http-equiv" not in page  # finished: no reload
    assert "Finished 3 of 3 epochs, iteration 12." in page
    assert (web / "loss.png").stat().st_size > 1000

    test_log = tmp_path / "test.log"
    test = ["test", "--dataroot", str(data), "--name", "report", "--checkpoints-dir", str(ckpt)]
    assert (
        _cli(
            *test, "--results-dir", str(results), "--progress-interval", "0.001", stderr_file=test_log
        ).returncode
        == 0
    )
    assert re.search(r"^\[test report\] 2/2 batch \(100\.0%\) \|", test_log.read_text(), re.M)
    out = results / "report" / "test_latest"
    assert (
        _cli(
            "eval", "--results-dir", str(out), "--metrics", "rmse", stderr_file=tmp_path / "eval.log"
        ).returncode
        == 0
    )

    written = [p for root in (ckpt, results) for p in root.rglob("*")]
    assert {p.name for p in written} >= {
        "latest.pt",
        "config.json",
        "index.html",
        "metrics.json",
        "metrics.png",
    }
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in written}
    expected = {name: 0o755 if (tmp_path / name).is_dir() else 0o644 for name in modes}
    assert modes == expected


def test_a_page_that_cannot_be_written_costs_a_warning_not_the_run(pairs, tmp_path):
    """The loss plot's file becomes a folder (as unwritable as a full disk) before a resumed epoch: one
    warning, the run trains on to its end and saves; the next resume, with the file writable, writes it."""
    from pix2pix_ilm.cli import main
    from tests.faults import train_args

    data = write_folder(tmp_path / "data", "train", good_pairs(pairs, "train1", "train2"))
    ckpt, plot = tmp_path / "ckpt", tmp_path / "ckpt" / "r" / "web" / "loss.png"
    args = train_args(data, ckpt, "r", "--display-freq", "1", "--n-epochs-decay", "0")
    assert main([*args, "--n-epochs", "1"]) == 0
    plot.unlink()
    plot.mkdir()
    with pytest.warns(
        RuntimeWarning, match="WebPage stopped: .*loss.png.*; training goes on without it"
    ) as caught:
        assert main([*args, "--n-epochs", "2", "--continue"]) == 0
    assert sum("WebPage stopped" in str(w.message) for w in caught) == 1
    assert (ckpt / "r" / "epoch_2.pt").is_file()
    plot.rmdir()
    assert main([*args, "--n-epochs", "3", "--continue"]) == 0
    assert plot.is_file()
