#!/usr/bin/env bash
# Create .venv (once) and install pix2pix-ilm with its test tools into it.
# Idempotent: when pyproject.toml has not changed since the last install, it does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${PIX2PIX_ILM_VENV:-.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    echo "[setup] creating $venv with $($python --version)" >&2
    "$python" -m venv "$venv"
fi
stamp="$venv/.pix2pix-ilm-install"
want="$(cat pyproject.toml scripts/constraints.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! "$venv/bin/python" -c "import pix2pix_ilm" 2>/dev/null; then
    echo "[setup] installing pix2pix-ilm and its dependencies into $venv (first time: a few minutes)" >&2
    export PIP_CONSTRAINT="$PWD/scripts/constraints.txt" PIP_DISABLE_PIP_VERSION_CHECK=1
    "$venv/bin/python" -m pip install --quiet --upgrade "pip>=23" 2>&1 | grep -v "^WARNING: Location" >&2 || true
    "$venv/bin/python" -m pip install --quiet -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" >&2 || true
    "$venv/bin/python" -c "import pix2pix_ilm, torch, torchvision, lpips, visdom, skimage" \
        || { echo "[setup] installation failed" >&2; exit 1; }
    echo "$want" > "$stamp"
else
    echo "[setup] $venv is up to date" >&2
fi
