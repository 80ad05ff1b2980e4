#!/usr/bin/env bash
# Table 6 at paper scale on one GPU (unet_256, 256², 200 + 200 images, 100 + 100 epochs), as a kit.
#
#   here, once:       bash scripts/gpu_table6.sh --prepare          # data, LPIPS weights, lpips wheel -> .gpu_kit/
#   on the GPU:       bash scripts/gpu_table6.sh [--budget-min 10] [--seeds 0 1 2]
#                     (bench --device cuda, projected wall time, then detached training processes; resumable:
#                     running it again restarts what stopped)
#                     bash scripts/gpu_table6.sh --status [--wait 540]   # one line; --wait blocks until done
#                     bash scripts/gpu_table6.sh --collect               # both splits -> docs/table6_paper.md
#   anywhere:         bash scripts/gpu_table6.sh --dry-run               # the whole path on CPU, tiny preset
#
# The GPU machine needs nothing but a Python with torch, torchvision, numpy, pillow and scikit-image:
# lpips comes from the kit's wheel, the package from this folder (PYTHONPATH), no network is used.
set -euo pipefail
cd "$(dirname "$0")/.."
# The interpreter: $GPU_KIT_PYTHON, else .venv/bin/python, else python3 ($PYTHON is setup.sh's: the one
# that creates the venv, usually without torch).
python="${GPU_KIT_PYTHON:-}"
if [ -z "$python" ]; then
    if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" scripts/gpu_table6.py "$@"
