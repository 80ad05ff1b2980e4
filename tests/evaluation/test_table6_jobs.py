"""Table 6's training children and the table6 process that owns them: they stop with it however it ends
(SIGTERM: exit 143; SIGKILL: no training left behind), their time is recorded as they go, and one table6
at a time holds an --out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pix2pix_ilm.cli import main
from tests.evaluation.test_table6 import LONG, tiny_facades
from tests.faults import CHILD_ENV, wait_for_file

ROWS = ("in_in", "ilmin_in")


def _start_table6(data: Path, out: Path, lpips_backbone: Path) -> tuple[subprocess.Popen, list[str]]:
    args = ["table6", "--dataroot", str(data), "--out", str(out), "--configs", *ROWS]
    args += ["--lpips-backbone", str(lpips_backbone), "--jobs", "2", *LONG]
    command = [sys.executable, "-m", "pix2pix_ilm", *args]
    return subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=CHILD_ENV), args


def _wait_until_both_train_and_are_timed(out: Path, table6: subprocess.Popen) -> None:
    for row in ROWS:
        run = out / "checkpoints" / f"{row}_seed0"
        wait_for_file(run / "table6_timing.json", table6, timeout=600)  # only stops a hung test
        wait_for_file(run / "loss_log.jsonl", table6, timeout=600)


def _processes_naming(text: str) -> list[int]:
    """The pids of the processes whose command line contains ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(proc.name))
        except OSError:
            continue  # ended meanwhile
    return found


def _wait_for_no_process_naming(text: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout  # only stops a hung test
    while _processes_naming(text) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_naming(text) == []


def test_sigterm_stops_every_run_and_a_second_table6_on_the_out_is_refused(
    facades_dir: Path, lpips_backbone: Path, tmp_path: Path, capsys
):
    data = tiny_facades(facades_dir, tmp_path / "facades")
    out = tmp_path / "table6"
    table6, args = _start_table6(data, out, lpips_backbone)
    _wait_until_both_train_and_are_timed(out, table6)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"pix2pix-ilm table6: error: --out {out} is in use by another table6 (pid {table6.pid}); wait for it "
        "to end, or use another --out"
    ]
    table6.send_signal(signal.SIGTERM)
    _, stderr = table6.communicate(timeout=300)
    assert table6.returncode == 128 + signal.SIGTERM, stderr
    assert (
        "[table6] SIGTERM: stopping the runs; each saves latest.pt, and the same command resumes them"
        in stderr
    )
    for row in ROWS:
        run = out / "checkpoints" / f"{row}_seed0"
        assert (run / "latest.pt").is_file()
        assert "SIGTERM: stopped after iteration" in (out / "logs" / f"{run.name}.log").read_text()
        timing = json.loads((run / "table6_timing.json").read_text())
        assert timing["finished"] is False and timing["train_seconds"] > 0


def test_a_killed_table6_leaves_no_training_running(facades_dir: Path, lpips_backbone: Path, tmp_path: Path):
    """kill -9 of table6: each training gets SIGTERM from the kernel, saves latest.pt and ends; the time it
    trained is on record, and the --out is free for the rerun."""
    data = tiny_facades(facades_dir, tmp_path / "facades")
    out = tmp_path / "table6"
    table6, _ = _start_table6(data, out, lpips_backbone)
    _wait_until_both_train_and_are_timed(out, table6)
    children = [pid for pid in _processes_naming(str(out)) if pid != table6.pid]
    assert len(children) == 2
    os.kill(table6.pid, signal.SIGKILL)
    table6.wait(timeout=60)
    _wait_for_no_process_naming(str(out))
    for row in ROWS:
        run = out / "checkpoints" / f"{row}_seed0"
        assert (run / "latest.pt").is_file()
        assert "SIGTERM: stopped after iteration" in (out / "logs" / f"{run.name}.log").read_text()
        assert json.loads((run / "table6_timing.json").read_text())["train_seconds"] > 0
