"""Training-step time of two checkouts of this project, alternated in fresh processes: new ÷ old, paired.

    python benchmarks/compare_commits.py OLD_CHECKOUT NEW_CHECKOUT [--norms instance/instance --rounds 10]

Each block is a fresh process that puts one checkout first on ``sys.path``, builds its ``Pix2PixModel`` with
the command line's heap setting, runs ``--warmup`` steps and times ``--steps``, keeping the fastest; the two
checkouts alternate (the order swapping every round), and new ÷ old comes as the geometric mean of the
per-round ratios with a 95 % t interval (pix2pix_ilm/stats.py). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pix2pix_ilm.stats import ratio_interval  # noqa: E402

# One block, run by `python -c` with the checkout and the options filled in; prints the fastest step's
# seconds: other processes on the machine can only slow a step down.
BLOCK = r"""
import json, sys, time
sys.path.insert(0, CHECKOUT)
import torch
from pix2pix_ilm.cli import _retain_heap_on_cpu
from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.models.pix2pix import Pix2PixModel
o = OPTIONS
_retain_heap_on_cpu(o["device"])  # what `pix2pix-ilm train` does
g_norm, d_norm = o["norms"].split("/")
config = TrainConfig(dataroot="", name="ab", netG=o["netG"], ngf=o["ngf"], ndf=o["ndf"], netG_norm=g_norm,
                     netD_norm=d_norm, load_size=o["size"], crop_size=o["size"], device=o["device"])
torch.manual_seed(0)
a, b = torch.rand(2, 1, 3, o["size"], o["size"]) * 2 - 1
model = Pix2PixModel(config)
sync = torch.cuda.synchronize if model.device.type == "cuda" else lambda: None
for _ in range(o["warmup"]):
    model.optimize_parameters(a, b)
sync()
times = []
for _ in range(o["steps"]):
    start = time.perf_counter()
    model.optimize_parameters(a, b)
    sync()
    times.append(time.perf_counter() - start)
print(json.dumps(min(times)))
"""


def block(checkout: str, options: dict) -> float:
    """Seconds of the fastest timed step of one fresh process on ``checkout``."""
    code = BLOCK.replace("CHECKOUT", repr(str(Path(checkout).resolve()))).replace("OPTIONS", repr(options))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{checkout}: the block failed:\n{done.stderr}")
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--norms", default="instance/instance", help="comma-separated G/D norm pairs")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--netG", default="unet_256")
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--ndf", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per block (the fastest counts)")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    for norms in args.norms.split(","):
        options = {k: getattr(args, k) for k in ("size", "netG", "ngf", "ndf", "device", "warmup", "steps")}
        options["norms"] = norms
        old, new = [], []
        for number in range(args.rounds):
            order = [(args.old, old), (args.new, new)]
            for checkout, times in order if number % 2 == 0 else order[::-1]:
                times.append(block(checkout, options))
            print(
                f"round {number + 1}: old {old[-1]:.4f} s, new {new[-1]:.4f} s", file=sys.stderr, flush=True
            )
        ratio = ratio_interval(new, old)
        print(json.dumps({"options": options, "old_s": old, "new_s": new, "new_over_old": ratio}))
        low, high = ("-", "-") if ratio["low"] is None else (f"{ratio['low']:.3f}", f"{ratio['high']:.3f}")
        print(f"{norms}: new / old step time {ratio['ratio']:.3f} [{low}-{high}] over {ratio['n']} rounds")


if __name__ == "__main__":
    main()
