#!/usr/bin/env python
"""Fetch the pix2pix facades data set into <dest>/facades (or check a local copy).

Thin wrapper around :func:`pix2pix_ilm.data.facades.ensure_facades`; see datasets/README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from pix2pix_ilm.data.facades import FACADES_ENV, FACADES_URL, ensure_facades
    from pix2pix_ilm.errors import UsageError
except ImportError:  # run from a source checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pix2pix_ilm.data.facades import FACADES_ENV, FACADES_URL, ensure_facades
    from pix2pix_ilm.errors import UsageError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=f"Get the pix2pix facades data set: use a local copy, or download {FACADES_URL}, extract "
        "it to <dest>/facades and verify it (400 train, 106 test, 100 val images of 512x256).",
    )
    parser.add_argument(
        "--dest", default="datasets", help="folder that receives facades/ (default: datasets)"
    )
    parser.add_argument(
        "--from",
        dest="local",
        default=None,
        metavar="PATH",
        help="a local facades folder (used in place) or facades.tar.gz (extracted into --dest); "
        f"default: ${FACADES_ENV}, else download",
    )
    args = parser.parse_args(argv)
    try:
        path = ensure_facades(args.dest, args.local)
    except UsageError as err:
        print(f"download_facades: error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
