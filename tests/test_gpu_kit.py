"""The GPU kit (scripts/gpu_table6.sh): its whole path on CPU with a tiny preset, as CI can run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def kit(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GPU_KIT_PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_table6.sh"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_prepare_then_dry_run_then_status_and_collect(shared_dir: Path, tmp_path: Path):
    kit_dir, out = tmp_path / "kit", tmp_path / "out"
    done = kit("--prepare", "--kit", str(kit_dir), "--shared", str(shared_dir))
    assert done.returncode == 0, done.stderr
    size = sum(p.stat().st_size for p in kit_dir.rglob("*") if p.is_file())
    assert size < 64 * 2**20 and len(list((kit_dir / "facades" / "train").glob("*.jpg"))) == 400
    assert (kit_dir / "alexnet_owt_features.pth").is_file() and list((kit_dir / "wheels").glob("lpips-*.whl"))

    done = kit("--dry-run", "--kit", str(kit_dir), "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cpu training speed (one process): in_in" in done.stdout and "projected wall time" in done.stdout
    state = json.loads((out / "kit_state.json").read_text())
    assert [r["name"] for r in state["runs"]] == ["in_in_seed0", "ilmin_in_seed0", "ilmin_ilmin_seed0"]
    assert state["dataroot"] == str(kit_dir / "facades")
    document = (out / "table6_paper.md").read_text()
    assert "Dry run" in document and "### Split `paper`" in document and "### Split `test`" in document
    cpu_path = "precision fp32, channels_last off, compile off"  # on a GPU: what train chose there
    assert f"Training path (the runs' config.json): {cpu_path}; bench default path: {cpu_path}." in document
    assert "host syncs per step (CUDA only): in_in n/a," in document
    assert state["bench"]["settings"] == {"precision": "fp32", "channels_last": False, "compile": False}
    assert "| ILM+IN / ILM+IN |" in document and "105.46" in document
    summary = json.loads((out / "table6.json").read_text())
    assert summary["preset"] == "paper" and summary["preset_options"]["netG"] == "unet_32"

    status = kit("--status", "--out", str(out))
    assert (
        status.returncode == 0 and status.stdout.count("scored") == 3 and len(status.stdout.splitlines()) == 1
    )
    again = kit("--dry-run", "--kit", str(kit_dir), "--out", str(out))  # resumes: nothing left to start
    assert again.returncode == 0 and "started" not in again.stdout
    assert kit("--collect", "--out", str(tmp_path / "none")).returncode == 2
