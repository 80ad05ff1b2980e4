"""How much ILM's meta-network output depends on the input, in a trained generator.

    .venv/bin/python scripts/ilm_meta_spread.py RUN_DIR [RUN_DIR ...] [--epoch N] [--images 40] [--dataroot D]

For each ILM layer of G, the decoders' outputs D_γ (→ ω = D_γ + B_ω) and D_μ (→ β = D_μ + B_β) are computed
for the first ``--images`` evaluation inputs of the paper split (train/201.jpg ...); printed: their mean, and
their spread over the images (std per channel, averaged over channels and layers). A spread near 0 means the
layer acts as IN followed by a fixed per-channel affine map. Assumes key-group size 1 (Table 6).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from pix2pix_ilm.config import load_run_config
from pix2pix_ilm.data.images import list_images, load_rgb
from pix2pix_ilm.models.networks import generator_from_config
from pix2pix_ilm.models.norms import ACTIVATIONS, ILMNorm
from pix2pix_ilm.training.checkpoint import load_checkpoint


def decoder_outputs(layer: ILMNorm, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(D_γ, D_μ) of one ILM layer for its input ``x`` (K = 1: per-channel key features, unbiased γ)."""
    mu, gamma = x.mean((2, 3)), x.var((2, 3), unbiased=True)
    d_gamma = ACTIVATIONS[layer.var_activation](layer.var_decoder(torch.relu(layer.encoder(gamma))))
    d_mu = ACTIVATIONS[layer.mean_activation](layer.mean_decoder(torch.relu(layer.encoder(mu))))
    return d_gamma, d_mu


def spread(run: Path, epoch: str, count: int, dataroot: Path) -> str:
    config = load_run_config(run)
    generator = generator_from_config(config)
    generator.load_state_dict(load_checkpoint(run / f"epoch_{epoch}.pt", only="generator")["generator"])
    generator.eval()
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for name, layer in generator.named_modules():
        if isinstance(layer, ILMNorm):
            layer.register_forward_hook(
                lambda m, i, o, name=name: seen.setdefault(name, []).append(decoder_outputs(m, i[0]))
            )
    size = config.crop_size
    with torch.no_grad():
        for path in list_images(dataroot / "train")[200 : 200 + count]:
            pair = np.asarray(load_rgb(path).resize((2 * size, size), resample=3))
            labels = pair[:, size:] if config.direction == "BtoA" else pair[:, :size]
            generator(torch.from_numpy(labels.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1)
    gammas = [torch.cat([g for g, _ in outs]) for outs in seen.values()]
    mus = [torch.cat([m for _, m in outs]) for outs in seen.values()]
    mean = np.mean([g.mean().item() for g in gammas])
    sg = np.mean([g.std(0).mean().item() for g in gammas])
    sm = np.mean([m.std(0).mean().item() for m in mus])
    return (
        f"{run.name} epoch {epoch} ({config.ilm_init} init, {config.ilm_variance} variance), {len(seen)} ILM "
        f"layers, {count} images: D_gamma mean {mean:.3f}, spread D_gamma {sg:.4f}, D_mu {sm:.4f}"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--epoch", default="20")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument(
        "--dataroot",
        type=Path,
        default=Path("datasets/facades"),
        help="facades folder (default: datasets/facades)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for run in args.runs:
        print(spread(run, args.epoch, args.images, args.dataroot))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
