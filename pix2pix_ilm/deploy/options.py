"""Options of the translate, export and import commands (see :mod:`pix2pix_ilm.config` for how options become flags); no torch."""

from __future__ import annotations

from dataclasses import dataclass

from pix2pix_ilm.config import DIRECTIONS
from pix2pix_ilm.flags import opt

EXPORT_FORMATS = ("onnx", "torchscript")


@dataclass
class ExportConfig:
    """Options of ``pix2pix-ilm export``."""

    name: str = opt("", "run name (a folder under --checkpoints-dir)", required=True)
    checkpoints_dir: str = opt("checkpoints", "folder holding the run folders")
    epoch: str = opt("latest", "which checkpoint: latest or an epoch number")
    format: str = opt("onnx", "onnx (needs the export extra) or torchscript", choices=EXPORT_FORMATS)
    out: str = opt("", "the file to write, e.g. facades.onnx", required=True)
    dynamic: bool = opt(
        False,
        "any input height and width that are multiples of the generator's size step (2^depth for a U-Net, 4 "
        "for a ResNet) and any batch size; default: the run's crop size",
    )
    overwrite: bool = opt(False, "replace --out if it exists (never a file of the run)")


@dataclass
class TranslateConfig:
    """Options of ``pix2pix-ilm translate``."""

    inputs: tuple[str, ...] = opt(
        (), "image files or folders of images", positional=True, metavar="IMAGE_OR_DIR"
    )
    out: str = opt("", "folder for the outputs, one <stem>.png per input", required=True)
    name: str | None = opt(None, "run name (a folder under --checkpoints-dir); or --onnx")
    checkpoints_dir: str = opt("checkpoints", "folder holding the run folders")
    epoch: str = opt("latest", "which checkpoint: latest or an epoch number")
    onnx: str | None = opt(None, "an exported .onnx file to run with onnxruntime instead of a run")
    device: str = opt("auto", "cpu, cuda, cuda:N or auto (a run only)")
    overwrite: bool = opt(False, "replace outputs that exist already (never an input)")
    skip_bad_images: bool = opt(
        False, "skip images that cannot be decoded (every image is checked before any is translated)"
    )


REFERENCE_NORMS = ("instance", "batch")


@dataclass
class ImportConfig:
    """Options of ``pix2pix-ilm import``: a model trained with the pix2pix reference code."""

    name: str = opt("", "run name for the new run folder", required=True)
    checkpoints_dir: str = opt("checkpoints", "folder holding the run folders")
    G: str = opt("", "the reference's generator file, e.g. latest_net_G.pth", required=True, flag="--G")
    D: str | None = opt(None, "its discriminator file (latest_net_D.pth); default: a new D, initialised")
    netG: str = opt("unet_256", "the reference's --netG")
    ngf: int = opt(64, "the reference's --ngf")
    netD: str = opt("basic", "the reference's --netD")
    n_layers_D: int = opt(3, "the reference's --n_layers_D")
    ndf: int = opt(64, "the reference's --ndf")
    norm: str = opt("instance", "the reference's --norm (in G and D)", choices=REFERENCE_NORMS)
    direction: str = opt("AtoB", "the reference's --direction", choices=DIRECTIONS)
    input_nc: int = opt(3, "the reference's --input_nc")
    output_nc: int = opt(3, "the reference's --output_nc")
    no_dropout: bool = opt(False, "the reference's --no_dropout")
    load_size: int = opt(286, "the reference's --load_size")
    crop_size: int = opt(256, "the reference's --crop_size")
    epochs_done: int = opt(0, "epochs the reference run trained (for the schedule of train --continue)")
    n_epochs: int = opt(100, "--n-epochs of the imported run (train --continue may change it)")
    n_epochs_decay: int = opt(100, "--n-epochs-decay of the imported run")
    overwrite: bool = opt(False, "replace an existing run of the same name")
