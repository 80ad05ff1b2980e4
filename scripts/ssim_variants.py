"""SSIM of one test output folder under the usual conventions, as a Markdown table (docs/metrics.md).

    .venv/bin/python scripts/ssim_variants.py RESULTS_DIR [--limit N]

RESULTS_DIR holds ``images/<stem>_fake_B.png`` and ``<stem>_real_B.png`` (the output of ``pix2pix-ilm test``).
Conventions: value range and ``data_range`` (uint8 / 255; float [0, 1] / 1; float [0, 1] / 2, what
scikit-image's old ``compare_ssim`` inferred for any float image; float [-1, 1] / 2), colour (RGB, the SSIM
of each channel averaged, or grey from ``skimage.color.rgb2gray``) and window (7×7 uniform with sample
covariance, scikit-image's default; 11×11 Gaussian σ = 1.5 without sample covariance, Wang et al. 2004).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity

from pix2pix_ilm.data.images import load_rgb
from pix2pix_ilm.evaluation.evaluate import find_image_pairs

RANGES = {  # label -> (uint8 image -> array, data_range)
    "uint8, data_range 255": (lambda a: a, 255.0),
    "float [0, 1], data_range 1": (lambda a: a / 255.0, 1.0),
    "float [0, 1], data_range 2": (lambda a: a / 255.0, 2.0),
    "float [-1, 1], data_range 2": (lambda a: a / 127.5 - 1.0, 2.0),
}
WINDOWS = {
    "7×7 uniform": {"win_size": 7, "gaussian_weights": False, "use_sample_covariance": True},
    "11×11 Gaussian": {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False},
}


def ssim_variant(
    fake: np.ndarray, real: np.ndarray, scale, data_range: float, grey: bool, window: dict
) -> float:
    if grey:  # rgb2gray works on [0, 1]; the grey image is then put on the variant's range
        f, r = (scale(rgb2gray(x) * 255.0) for x in (fake, real))
        return structural_similarity(f, r, data_range=data_range, **window)
    f, r = scale(fake), scale(real)
    return structural_similarity(f, r, data_range=data_range, channel_axis=-1, **window)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    pairs = find_image_pairs(args.results_dir)[: args.limit]
    images = [(np.asarray(load_rgb(fake)), np.asarray(load_rgb(real))) for _, fake, real in pairs]
    print(f"SSIM of {len(images)} image pairs in {args.results_dir} (mean over images)\n")
    print("| value range, data_range | " + " | ".join(f"RGB, {w} | grey, {w}" for w in WINDOWS) + " |")
    print("|---|" + "---:|" * (2 * len(WINDOWS)))
    for label, (scale, data_range) in RANGES.items():
        cells = []
        for window in WINDOWS.values():
            for grey in (False, True):
                scores = [ssim_variant(f, r, scale, data_range, grey, window) for f, r in images]
                cells.append(f"{np.mean(scores):.3f}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
