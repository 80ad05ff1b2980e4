#!/usr/bin/env python
"""Build aligned A|B pairs (photo | coloured label map) from the original CMP Facade release.

Thin wrapper around :func:`pix2pix_ilm.data.cmp.convert_cmp`; see datasets/README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from pix2pix_ilm.data.cmp import convert_cmp
    from pix2pix_ilm.errors import UsageError
except ImportError:  # run from a source checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pix2pix_ilm.data.cmp import convert_cmp
    from pix2pix_ilm.errors import UsageError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Convert the CMP Facade DB (cmp_*.jpg photos + cmp_*.png label maps) into aligned "
        "A|B images <out_dir>/train/<cmp stem>.jpg: photo on the left, label map in the pix2pix facades "
        "colours on the right, each size x size.",
    )
    parser.add_argument(
        "base_dir", help="the CMP 'base' (or 'extended') folder, or the folder that holds base/"
    )
    parser.add_argument("out_dir", help="output folder (receives train/ and, with --test-count, test/)")
    parser.add_argument("--size", type=int, default=256, help="side of each half in pixels (default: 256)")
    parser.add_argument(
        "--test-count",
        type=int,
        default=0,
        help="put the last N pairs (sorted by name) in test/ (default: 0)",
    )
    parser.add_argument(
        "--format",
        dest="image_format",
        choices=("jpg", "png"),
        default="jpg",
        help="output format (default: jpg)",
    )
    parser.add_argument("--limit", type=int, default=None, help="convert only the first N pairs")
    args = parser.parse_args(argv)
    try:
        written = convert_cmp(
            args.base_dir,
            args.out_dir,
            args.size,
            test_count=args.test_count,
            image_format=args.image_format,
            limit=args.limit,
        )
    except UsageError as err:
        print(f"cmp_to_aligned: error: {err}", file=sys.stderr)
        return 2
    for split, paths in written.items():
        print(f"{split}: {len(paths)} images in {Path(args.out_dir) / split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
