#!/usr/bin/env bash
# Training throughput on one GPU, eager against the step captured as one CUDA graph, for one run alone and for
# nine runs at once (Table 6's 3 rows x 3 seeds; nine processes, then nine graphs on nine streams of one process),
# at the paper's networks: unet_256 + basic D, 256², batch 1, bf16; then the tests that need CUDA (the captured
# step against the eager one, the device data against the DataLoader) and a short training run with both on.
# Every report and log goes to $OUT (default gpu_throughput/); docs/gpu.md reads them.
#
# The tests and the training run read five facades pairs from .gpu_kit/ (git-ignored), copied there from
# ../shared/data/facades on a machine that has it: run the script once there (any DEVICE), then copy .gpu_kit/
# to the GPU machine with the checkout.
# Knobs: PYTHON (python3), DEVICE (cuda), MIN_TIME (5 s per timed part), RUNS (9), SETTINGS (bf16,bf16+cuda_graph);
# BENCH_ARGS and TRAIN_ARGS add options, e.g. to try the script on a CPU: SETTINGS=fp32
# BENCH_ARGS="--size 32 --netG unet_32 --ngf 4 --ndf 4" TRAIN_ARGS="--netG unet_32 --ngf 4 --ndf 4 --load-size 40
# --crop-size 32".
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_throughput}"
py="${PYTHON:-python3}"
device="${DEVICE:-cuda}"
kit=.gpu_kit/shared/data/facades
read -r -a bench_args <<< "${BENCH_ARGS:-}"
read -r -a train_args <<< "${TRAIN_ARGS:-}"
mkdir -p "$out"
if [ ! -d "$kit/train" ] && [ -d ../shared/data/facades/train ]; then
    mkdir -p "$kit/train"
    for n in 1 2 3 4 5; do cp "../shared/data/facades/train/$n.jpg" "$kit/train/"; done
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PIX2PIX_ILM_SHARED="$PWD/.gpu_kit/shared"
{  # eight files in all: this one, bench.log, 3 bench JSONs, tests.log, train.log, train_config.json
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"
    "$py" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__)"
    git rev-parse HEAD 2>/dev/null || echo "commit: ${COMMIT:-unknown}"
} > "$out/machine.txt" 2>&1
failed=0
step() {  # step LOG COMMAND...: its output added to $OUT/LOG.log, its last lines here
    local name="$1" rc=0
    shift
    echo "== $*" | tee -a "$out/$name.log"
    "$@" >> "$out/$name.log" 2>&1 || rc=$?
    [ "$rc" = 0 ] || { failed=1; echo "   failed with exit code $rc"; }
    tail -n 8 "$out/$name.log"
}
bench=("$py" -m pix2pix_ilm bench --device "$device" --norms IN/IN,ILM+IN/ILM+IN --min-time "${MIN_TIME:-5}" \
    "${bench_args[@]}")
settings="${SETTINGS:-bf16,bf16+cuda_graph}"
step bench "${bench[@]}" --settings "$settings" --json "$out/bench_alone.json"
step bench "${bench[@]}" --settings "$settings" --runs "${RUNS:-9}" --json "$out/bench_together.json"
[ "$device" = cpu ] || step bench "${bench[@]}" --settings bf16+cuda_graph --runs "${RUNS:-9}" \
    --runs-as streams --json "$out/bench_streams.json"
step tests "$py" -m pytest -q -p no:cacheprovider tests/training/test_cuda_graph.py tests/data/test_device_data.py
runs="$(mktemp -d)"
step train "$py" -m pix2pix_ilm train --dataroot "$kit" --name smoke --checkpoints-dir "$runs" --device "$device" \
    --n-epochs 20 --n-epochs-decay 20 --no-display --progress-interval 5 "${train_args[@]}"
cp "$runs/smoke/config.json" "$out/train_config.json" 2>/dev/null
exit "$failed"
