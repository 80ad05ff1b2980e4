#!/usr/bin/env bash
# Create .venv (once) and install pix2pix-ilm with its test tools into it.
# Idempotent: when pyproject.toml has not changed since the last install, it does nothing.
#
# Why the install does not depend on which pip is newest: visdom 0.2.4 is a source distribution whose
# setup.py needs pkg_resources (gone in setuptools >= 81), and pip >= 26 stopped applying PIP_CONSTRAINT
# to isolated build environments. So we (1) pin the pip we run (scripts/constraints.txt), (2) put
# setuptools < 81 into the venv ourselves and (3) build with --no-build-isolation, i.e. with exactly that
# setuptools. Build isolation and its constraint variables then play no part, whatever pip 27 changes.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${PIX2PIX_ILM_VENV:-.venv}"
python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
    echo "[setup] no Python interpreter '$python' (set PYTHON=/path/to/python3.10+)" >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
    echo "[setup] creating $venv with $("$python" --version 2>&1)" >&2
    "$python" -m venv "$venv"
fi
stamp="$venv/.pix2pix-ilm-install"
want="$(cat pyproject.toml scripts/constraints.txt | sha256sum | cut -d' ' -f1)"
visdom_assets() {  # visdom's browser files (JS/CSS/fonts) into their cache, once; without them its page is blank
    "$venv/bin/pix2pix-ilm" visdom --fetch-assets 2>&1 | sed 's/^/[setup] /' >&2 \
        || echo "[setup] warning: visdom's web page will not render until 'pix2pix-ilm visdom --fetch-assets' succeeds" >&2
}
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && "$venv/bin/python" -c "import pix2pix_ilm" 2>/dev/null; then
    echo "[setup] $venv is up to date" >&2
    visdom_assets
    exit 0
fi
echo "[setup] installing pix2pix-ilm and its dependencies into $venv (first time: a few minutes)" >&2
log="$venv/pip-install.log"
: > "$log"
pip_step() {  # pip_step DESCRIPTION ARGS...: run pip, keep its output in $log, show its error on failure
    local what="$1"
    shift
    echo "[setup] $what" >&2
    local rc=0
    if [ -n "${PIX2PIX_ILM_SETUP_VERBOSE:-}" ]; then  # CI: pip's own lines (Downloading …) in the log too
        { PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip "$@" 2>&1 || echo "$?" > "$log.rc"; } \
            | tee -a "$log" | grep -E "^ *(Collecting|Downloading|Processing|Using cached|Successfully)" >&2 || true
        rc=$(cat "$log.rc" 2>/dev/null || echo 0)
        rm -f "$log.rc"
    else
        PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip "$@" >>"$log" 2>&1 || rc=$?
    fi
    if [ "$rc" != 0 ]; then
        echo "[setup] installation failed while: $what. Last lines of pip's output ($log):" >&2
        grep -v "^WARNING: Location" "$log" | tail -n 25 >&2
        exit 1
    fi
}
pins=(-c scripts/constraints.txt)
pip_step "pinning pip and the build tools" install --progress-bar off "${pins[@]}" pip setuptools wheel
pip_step "installing the package, torch, lpips, visdom, scikit-image, matplotlib, pytest, ruff" \
    install --progress-bar off --no-build-isolation "${pins[@]}" -e ".[dev]"
echo "[setup] pip: $(grep -c '^ *Downloading' "$log") downloads, $(grep -c 'Using cached' "$log") taken from the pip cache" >&2
if ! err=$("$venv/bin/python" -c "import pix2pix_ilm, torch, torchvision, lpips, visdom, skimage, matplotlib" 2>&1); then
    echo "[setup] installed, but the import check failed: $(printf '%s\n' "$err" | tail -n 1)" >&2
    exit 1
fi
echo "$want" > "$stamp"
visdom_assets
echo "[setup] done: $("$venv/bin/python" -c 'import torch, sys; print(f"Python {sys.version.split()[0]}, torch {torch.__version__}")')" >&2
