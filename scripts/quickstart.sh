#!/usr/bin/env bash
# The main job, start to finish: install, get CMP Facades, train a small ILM+IN / ILM+IN pix2pix model
# (labels -> photos, 128x128), translate the 106 test images and score them.
# Idempotent: a finished run is not trained again; test and eval are re-run (seconds) and give the same files.
#
# Data:  $PIX2PIX_ILM_FACADES (a facades folder or facades.tar.gz), else datasets/facades, else a download.
# LPIPS: $PIX2PIX_ILM_LPIPS_BACKBONE (local AlexNet weights), else lpips' own download, else skipped.
# Size:  PIX2PIX_ILM_QUICKSTART_SIZE (crop and U-Net, 128; resized to 142/128 of it), _WIDTH (ngf = ndf, 32),
#        _EPOCHS and _DECAY (2 + 1).
# Extra arguments are passed to 'pix2pix-ilm train' (e.g. --device cuda --max-dataset-size 100).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv="${PIX2PIX_ILM_VENV:-.venv}"
cli="$venv/bin/pix2pix-ilm"
name="${QUICKSTART_NAME:-quickstart_ilm}"

if [ -n "${PIX2PIX_ILM_FACADES:-}" ] && [ ! -e "$PIX2PIX_ILM_FACADES" ]; then
    echo "[quickstart] PIX2PIX_ILM_FACADES=$PIX2PIX_ILM_FACADES does not exist; using datasets/ instead" >&2
    unset PIX2PIX_ILM_FACADES
fi
dataroot="$("$venv/bin/python" -c 'from pix2pix_ilm.data.facades import ensure_facades; print(ensure_facades("datasets"))' | tail -n 1)"
echo "[quickstart] facades: $dataroot" >&2

size="${PIX2PIX_ILM_QUICKSTART_SIZE:-128}"
width="${PIX2PIX_ILM_QUICKSTART_WIDTH:-32}"
epochs="${PIX2PIX_ILM_QUICKSTART_EPOCHS:-2}"
decay="${PIX2PIX_ILM_QUICKSTART_DECAY:-1}"
net=(--netG "unet_$size" --ngf "$width" --ndf "$width" --load-size $((size * 142 / 128)) --crop-size "$size"
     --direction BtoA --netG-norm ilm_in --netD-norm ilm_in --ilm-group-size 1
     --n-epochs "$epochs" --n-epochs-decay "$decay")
if [ -f "checkpoints/$name/epoch_$((epochs + decay)).pt" ]; then
    echo "[quickstart] checkpoints/$name is trained already (delete it to train again)" >&2
elif [ -f "checkpoints/$name/latest.pt" ]; then
    "$cli" train --dataroot "$dataroot" --name "$name" --continue --no-display "$@"
else
    "$cli" train --dataroot "$dataroot" --name "$name" "${net[@]}" --no-display "$@"
fi

"$cli" test --name "$name" --dataroot "$dataroot" --phase test

results="results/$name/test_latest"
if ! "$cli" eval --results-dir "$results" --metrics rmse,psnr,mae,ssim,lpips; then
    echo "[quickstart] LPIPS unavailable (see above); scoring without it" >&2
    "$cli" eval --results-dir "$results" --metrics rmse,psnr,mae,ssim
fi
echo "[quickstart] done: checkpoints/$name/ (web/index.html) and results/$name/test_latest/ (index.html, metrics.json)" >&2
