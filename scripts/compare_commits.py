"""Training-step speed of two checkouts of this project, measured interleaved in one run.

    python scripts/compare_commits.py OLD_CHECKOUT NEW_CHECKOUT [--size 256 --netG unet_256 --rounds 12]

Each checkout's ``Pix2PixModel`` step (the default path, with the CLI's heap setting) runs in its own process
with that checkout first on ``sys.path``; the two take turns, one block of ``--iters`` steps each per round
(bench/interleave.py), and the ratio new ÷ old time comes with its 95 % interval over rounds. Used for
issue 12's "the renovation costs no speed".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pix2pix_ilm.bench.interleave import RemoteContestant, paired_ratio, run_rounds  # noqa: E402

# Runs in the worker process, with one checkout first on sys.path; answers "block" lines like bench --worker.
WORKER = r"""
import json, sys, time
sys.path.insert(0, CHECKOUT)
import torch
try:
    from pix2pix_ilm.models.pix2pix import Pix2PixModel
    from pix2pix_ilm.cpu_speed import retain_freed_memory
except ImportError:  # the layout before issue 12
    from pix2pix_ilm.model import Pix2PixModel
    from pix2pix_ilm.allocator import retain_freed_memory
    Pix2PixModel.optimize_parameters = Pix2PixModel.train_step
from pix2pix_ilm.config import TrainConfig
retain_freed_memory()
o = OPTIONS
config = TrainConfig(dataroot="", name="ab", netG=o["netG"], netD="basic", ngf=o["ngf"], ndf=o["ngf"],
                     netG_norm=o["norm"], netD_norm=o["norm"], load_size=o["size"], crop_size=o["size"], device="cpu")
torch.manual_seed(0)
a, b = torch.rand(2, 1, 3, o["size"], o["size"]) * 2 - 1
model = Pix2PixModel(config, torch.device("cpu"))
for _ in range(o["warmup"]):
    model.optimize_parameters(a, b)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    if line.strip() != "block":
        break
    start = time.perf_counter()
    for _ in range(o["iters"]):
        model.optimize_parameters(a, b)
    print(json.dumps({"seconds": time.perf_counter() - start, "cpu_wait": None}), flush=True)
"""


def side(checkout: str, options: dict) -> RemoteContestant:
    """One checkout's worker process, spoken to like a bench contestant."""
    code = WORKER.replace("CHECKOUT", repr(str(Path(checkout).resolve()))).replace("OPTIONS", repr(options))
    return RemoteContestant({}, command=[sys.executable, "-c", code])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--netG", default="unet_256")
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--norm", default="instance")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    options = {k: getattr(args, k) for k in ("size", "netG", "ngf", "norm", "iters", "warmup")}
    sides = {"old": side(args.old, options), "new": side(args.new, options)}
    blocks, _, _ = run_rounds(sides, args.rounds, retries=0)
    for worker in sides.values():
        worker.close()
    ratio = paired_ratio(blocks["new"], blocks["old"])
    rates = {k: [round(options["iters"] / b["seconds"], 3) for b in v] for k, v in blocks.items()}
    print(json.dumps({"options": options, "it_s_per_round": rates, "time_new_over_old": ratio}))
    print(
        f"new / old step time: {ratio['ratio']:.3f} [{ratio['low']:.3f}-{ratio['high']:.3f}] "
        f"over {ratio['n']} rounds ({args.norm}, {args.size}², {args.netG} ngf {args.ngf})"
    )


if __name__ == "__main__":
    main()
