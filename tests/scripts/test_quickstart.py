"""scripts/quickstart.sh, the README's first command, end to end at a tiny size (its knobs as environment
variables): the install check, the data, a training, ``test`` and ``eval`` with LPIPS."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from tests.faults import CHILD_ENV
from tests.helpers import unavailable

TINY = {
    "PIX2PIX_ILM_QUICKSTART_SIZE": "32",
    "PIX2PIX_ILM_QUICKSTART_WIDTH": "4",
    "PIX2PIX_ILM_QUICKSTART_EPOCHS": "1",
    "PIX2PIX_ILM_QUICKSTART_DECAY": "1",
}


@pytest.mark.slow  # a minute on a busy machine: one training, 106 test images scored with LPIPS
def test_quickstart_trains_tests_and_scores_at_a_tiny_size(facades_dir, lpips_backbone, tmp_path):
    # The venv the tests run in (or PIX2PIX_ILM_VENV): setup.sh must find it up to date, never reinstall it.
    venv = Path(os.environ.get("PIX2PIX_ILM_VENV") or sys.prefix).absolute()
    files = (PROJECT_ROOT / name for name in ("pyproject.toml", "scripts/constraints.txt"))
    want = hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()
    stamp = venv / ".pix2pix-ilm-install"
    if not stamp.is_file() or stamp.read_text().strip() != want:
        unavailable(f"{venv} is not installed from this pyproject.toml (run scripts/setup.sh first)")
    # A copy of the project's scripts: the outputs (checkpoints/, results/) land in tmp_path, not in the project.
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    for name in ("pyproject.toml", "scripts/setup.sh", "scripts/quickstart.sh", "scripts/constraints.txt"):
        shutil.copy(PROJECT_ROOT / name, project / name)
    env = {**CHILD_ENV, **TINY, "PIX2PIX_ILM_VENV": str(venv), "PIX2PIX_ILM_FACADES": str(facades_dir)}
    env["PIX2PIX_ILM_LPIPS_BACKBONE"] = str(lpips_backbone)
    done = subprocess.run(
        ["bash", str(project / "scripts" / "quickstart.sh"), "--max-dataset-size", "4", "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert f"[setup] {venv} is up to date" in done.stderr and "[quickstart] done:" in done.stderr
    run = project / "checkpoints" / "quickstart_ilm"
    config = json.loads((run / "config.json").read_text())["config"]
    assert {k: config[k] for k in ("netG", "ngf", "ndf", "load_size", "crop_size", "n_epochs", "n_epochs_decay")} == {
        "netG": "unet_32", "ngf": 4, "ndf": 4, "load_size": 35, "crop_size": 32, "n_epochs": 1, "n_epochs_decay": 1
    }  # fmt: skip
    assert (config["netG_norm"], config["netD_norm"], config["direction"]) == ("ilm_in", "ilm_in", "BtoA")
    assert (run / "epoch_2.pt").is_file() and (run / "web" / "index.html").is_file()
    results = project / "results" / "quickstart_ilm" / "test_latest"
    scores = json.loads((results / "metrics.json").read_text())
    assert scores["n"] == 106 and set(scores["mean"]) == {"rmse", "psnr", "mae", "ssim", "lpips"}
    assert "lpips" in (results / "index.html").read_text()
