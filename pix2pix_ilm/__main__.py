"""``python -m pix2pix_ilm`` runs the command-line interface (also under ``torchrun``)."""

from pix2pix_ilm.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
