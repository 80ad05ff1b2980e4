"""scripts/setup.sh as a user meets it: a failed install shows pip's own error, and the pins hold."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT_ROOT


def _run_setup(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts" / "setup.sh")],
        env={**os.environ, "PYTHON": sys.executable, "PIX2PIX_ILM_VENV": str(tmp_path / "venv"), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_failed_install_prints_pips_error_and_exits_nonzero(tmp_path: Path) -> None:
    # No index and an empty wheel folder: pip cannot find the pinned pip, as when offline or misconfigured.
    (tmp_path / "empty").mkdir()
    result = _run_setup(tmp_path, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(tmp_path / "empty"))
    assert result.returncode == 1
    assert "[setup] installation failed while: pinning pip and the build tools" in result.stderr
    # pip's own explanation reaches the user, not just "installation failed".
    assert "ERROR:" in result.stderr and "pip==" in result.stderr
    assert "No module named" not in result.stderr
    # A failed install leaves no stamp, so the next run tries again instead of claiming "up to date".
    assert not (tmp_path / "venv" / ".pix2pix-ilm-install").exists()


def test_missing_interpreter_is_named(tmp_path: Path) -> None:
    result = _run_setup(tmp_path, PYTHON=str(tmp_path / "no-such-python"))
    assert result.returncode == 1
    assert "no Python interpreter" in result.stderr and "no-such-python" in result.stderr


def test_constraints_pin_pip_and_setuptools_below_81() -> None:
    lines = [
        line.split("#")[0].strip()
        for line in (PROJECT_ROOT / "scripts" / "constraints.txt").read_text().splitlines()
    ]
    pins = {line.split("=")[0].split("<")[0].split(">")[0]: line for line in lines if line}
    assert pins["pip"].startswith("pip==")  # an exact pip, not whatever is newest
    assert "<81" in pins["setuptools"]  # visdom 0.2.4's setup.py imports pkg_resources
    setup = (PROJECT_ROOT / "scripts" / "setup.sh").read_text()
    assert "--no-build-isolation" in setup  # the venv's pinned setuptools builds visdom, whatever pip does
