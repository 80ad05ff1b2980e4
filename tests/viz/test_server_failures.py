"""Live previews when the visdom server dies, and the server helper binding to loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pix2pix_ilm.training.checkpoint import load_checkpoint
from tests.faults import good_pairs, start_paused_training, train_args, wait_for_file, write_folder

pytestmark = pytest.mark.usefixtures("one_thread")


# -- live previews -------------------------------------------------------------------------------------
def test_training_survives_its_visdom_server_dying(pairs, tmp_path):
    import visdom

    from pix2pix_ilm.viz.display import VisdomDisplay
    from tests.helpers import free_port, start_visdom_server, stop_visdom_server

    root = write_folder(tmp_path / "data", "train", good_pairs(pairs, "train1", "train2", "train3", "train4"))
    ckpt = tmp_path / "ckpt"
    port = free_port()
    server = start_visdom_server(port, env_path=tmp_path / "visdom")
    args = train_args(root, ckpt, "run", "--n-epochs", "2")
    args.remove("--no-display")
    args += ["--display-port", str(port), "--display-freq", "1", "--display-env", "dying"]
    flag = tmp_path / "pause"
    proc = start_paused_training(args, 3, flag)  # holds still after logging step 3
    try:
        wait_for_file(flag.with_suffix(".paused"), proc)
        client = visdom.Visdom(port=port, use_incoming_socket=False, raise_exceptions=True)
        deadline = time.monotonic() + 120  # previews arrived while the server was up
        while VisdomDisplay.IMAGE_WINDOW not in json.loads(client.get_window_data(win=None, env="dying")):
            assert time.monotonic() < deadline, "no preview reached the server"
            time.sleep(0.1)
    finally:
        stop_visdom_server(server)  # the server dies in the middle of the run
        flag.with_suffix(".go").touch()
    _, err = proc.communicate(timeout=600)  # a step is slow on a busy machine
    assert proc.returncode == 0, err
    assert f"lost the connection to visdom server at http://127.0.0.1:{port}" in err
    assert "Traceback" not in err
    assert load_checkpoint(ckpt / "run" / "latest.pt")["counters"]["iteration"] == 8


def test_visdom_helper_binds_to_loopback_and_says_so(tmp_path):
    from tests.helpers import free_port

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pix2pix_ilm",
            "visdom",
            "--port",
            str(port),
            "--env-path",
            str(tmp_path / "env"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watchdog = threading.Timer(60, proc.kill)  # readline() returns "" if the server never says it
    watchdog.start()
    try:
        lines = []
        while not lines or not (lines[-1].startswith("visdom server at") or lines[-1] == ""):
            lines.append(proc.stdout.readline())
        assert lines[-1].startswith(f"visdom server at http://127.0.0.1:{port} (local only"), lines

        # The kernel's tables of listening TCP sockets: bound to 127.0.0.1 (0100007F) only.
        def listening(table: str) -> list[str]:
            rows = [line.split() for line in Path(table).read_text().splitlines()[1:]]
            return [row[1] for row in rows if row[3] == "0A" and row[1].endswith(f":{port:04X}")]

        assert listening("/proc/net/tcp") == [f"0100007F:{port:04X}"]
        assert not Path("/proc/net/tcp6").exists() or listening("/proc/net/tcp6") == []
    finally:
        watchdog.cancel()
        proc.terminate()
        proc.wait(timeout=30)
