"""Options as dataclasses: one field = one command-line flag = one key in ``config.json``.

Each field's ``metadata`` holds its help text (and, where needed, its choices, flag name, metavar, or
``append`` for a repeatable flag); :func:`add_dataclass_arguments` turns the fields into ``argparse`` flags
and :func:`dataclass_from_args` builds the dataclass back. A run's ``config.json`` stores every field, so
``test`` needs no architecture flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import re
import types
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from pix2pix_ilm import __version__
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.models.norms import NORM_NAMES

GAN_MODES = ("vanilla", "lsgan", "wgangp")
PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")
DIRECTIONS = ("AtoB", "BtoA")
PRECISIONS = ("auto", "fp32", "bf16")
TEST_PRECISIONS = ("run", "fp32", "bf16")
VALIDATION_MODES = ("header", "full")
LOSS_PLOT_SCALES = ("linear", "log")
TABLE6_PRESETS = ("quick", "paper")
TABLE6_ROWS = ("in_in", "ilmin_in", "ilmin_ilmin", "ilmin_in_authors", "ilmin_ilmin_authors")
_NATIVE_CONV_HELP = (
    "run every convolution with torch's own kernel (default on CPU: small inputs with large weights, as in a "
    "U-Net's inner levels, run as one matrix product: the same convolution, faster, equal to float rounding)"
)
_PROGRESS_HELP = (
    "when stderr is not a terminal (a log file, nohup, CI): seconds between progress lines (count, losses, "
    "it/s, ETA); on a terminal a progress bar is shown instead"
)
_PRECISION_HELP = (
    "fp32, or bf16 autocast (fp32 weights, bf16 convolutions); auto: bf16 on CUDA GPUs with native bf16 "
    "(compute capability 8.0+, e.g. A100/H100), fp32 on older GPUs and on the CPU (bf16 stays opt-in there). "
    "config.json records the resolved value, which --continue and test reuse"
)
_CHANNELS_LAST_HELP = (
    "the channels-last memory format for weights and activations (--no-channels-last: the contiguous one); "
    "default auto: on with CUDA GPUs of compute capability 8.0+, off on older GPUs and on the CPU. "
    "config.json records the resolved value"
)
_VALIDATE_HELP = (
    "check of every image before any work: header (fast: size, A|B shape, and the end marker of each JPEG/PNG, "
    "which a truncated file lacks) or full (decode every image)"
)


def opt(default: Any, help: str, *, choices: tuple | None = None, flag: str | None = None, **kw: Any) -> Any:
    """A dataclass field carrying its command-line help (and choices / flag name)."""
    return field(default=default, metadata={"help": help, "choices": choices, "flag": flag, **kw})


@dataclass
class DataOptions:
    """Where the images come from and how they are prepared."""

    dataroot: str = opt("", "folder with <phase>/ subfolders of aligned A|B images", required=True)
    phase: str = opt("train", "subfolder of --dataroot to read (train, val, test, ...)")
    direction: str = opt(
        "AtoB", "AtoB: left half is the input; BtoA: right half is the input", choices=DIRECTIONS
    )
    preprocess: str = opt("resize_and_crop", "how images are scaled and cropped", choices=PREPROCESS_MODES)
    load_size: int = opt(286, "scale images to this size (before cropping)")
    crop_size: int = opt(256, "then crop to this size (the network's input size)")
    no_flip: bool = opt(False, "do not flip images horizontally at random")
    max_dataset_size: int | None = opt(None, "use at most this many images (after --subset)")
    subset: str | None = opt(
        None,
        "START:END slice of the naturally sorted file list (1.jpg, 2.jpg, ..., 10.jpg), e.g. 0:200 for the "
        "first 200 images; Python slice semantics",
    )
    input_nc: int = opt(3, "channels of the input image")
    output_nc: int = opt(3, "channels of the output image")
    skip_bad_images: bool = opt(
        False, "skip images that cannot be decoded (with a warning) instead of stopping"
    )
    validate_images: str = opt("header", _VALIDATE_HELP, choices=VALIDATION_MODES)
    num_workers: int = opt(0, "data-loading worker processes (0 = in the training process)")


@dataclass
class NetworkOptions:
    """Generator and discriminator architecture."""

    netG: str = opt(
        "unet_256", "generator: unet_<2^k> (unet_256 = 8 downsamplings), resnet_6blocks, resnet_9blocks"
    )
    netD: str = opt("basic", "discriminator: basic (70x70 PatchGAN), n_layers, pixel (1x1 PatchGAN)")
    n_layers_D: int = opt(3, "number of strided layers of the n_layers discriminator")
    ngf: int = opt(64, "generator filters in the last conv layer")
    ndf: int = opt(64, "discriminator filters in the first conv layer")
    netG_norm: str = opt("instance", "norm layers of the generator", choices=NORM_NAMES, flag="--netG-norm")
    netD_norm: str = opt(
        "instance", "norm layers of the discriminator", choices=NORM_NAMES, flag="--netD-norm"
    )
    ilm_group_size: int = opt(1, "ILM key-group size K (the paper uses 1 for pix2pix)")
    num_groups: int = opt(32, "groups of group / ilm_gn norms (one per channel in narrower layers)")
    ilm_mean_activation: str = opt(
        "tanh", "ILM decoder activation of D_mu", choices=("tanh", "sigmoid", "relu", "identity")
    )
    ilm_var_activation: str = opt(
        "sigmoid", "ILM decoder activation of D_gamma", choices=("tanh", "sigmoid", "relu", "identity")
    )
    ilm_init: str = opt(
        "pix2pix",
        "init of ILM's meta-network W1-W3: pix2pix (as every layer, --init-type) or pytorch (torch's default, "
        "as the authors' code)",
        choices=("pix2pix", "pytorch"),
    )
    ilm_variance: str = opt(
        "biased",
        "variance of ILM's standardisation: biased (as InstanceNorm2d) or unbiased (as the authors' code)",
        choices=("biased", "unbiased"),
    )
    no_dropout: bool = opt(False, "no dropout in the generator")
    init_type: str = opt("normal", "weight initialization", choices=INIT_TYPES)
    init_gain: float = opt(0.02, "scale of the weight initialization")


@dataclass
class TrainConfig(DataOptions, NetworkOptions):
    """Every option of a training run; saved as ``config.json`` in the run folder."""

    name: str = opt("", "run name: outputs go to <checkpoints-dir>/<name>/", required=True)
    checkpoints_dir: str = opt("checkpoints", "folder holding the run folders")
    gan_mode: str = opt("vanilla", "GAN objective", choices=GAN_MODES)
    lambda_l1: float = opt(100.0, "weight of the L1 loss")
    lambda_gp: float = opt(10.0, "weight of the gradient penalty (wgangp only)")
    lr: float = opt(2e-4, "Adam learning rate")
    beta1: float = opt(0.5, "Adam beta1")
    n_epochs: int = opt(100, "epochs at the initial learning rate")
    n_epochs_decay: int = opt(100, "epochs of linear decay of the learning rate to zero")
    batch_size: int = opt(1, "images per step")
    seed: int = opt(0, "random seed (weights, data order, augmentation, dropout)")
    device: str = opt("auto", "cpu, cuda, cuda:N, or auto (cuda when available)")
    precision: str = opt("auto", _PRECISION_HELP, choices=PRECISIONS)
    channels_last: bool | None = opt(None, _CHANNELS_LAST_HELP)
    compile: bool = opt(
        False,
        "torch.compile the generator and discriminator (off by default: tens of seconds to minutes of "
        "compiling per process, docs/gpu.md)",
    )
    native_conv: bool = opt(False, _NATIVE_CONV_HELP)
    sync_batch: bool = opt(False, "with batch norm under torchrun: synchronise statistics across processes")
    print_freq: int = opt(100, "log losses every N iterations")
    display_freq: int = opt(400, "update visdom / the HTML page every N iterations")
    save_latest_freq: int = opt(5000, "save latest.pt every N iterations (and at every epoch end)")
    save_epoch_freq: int = opt(5, "keep epoch_<n>.pt every N epochs")
    no_display: bool = opt(False, "no visdom previews")
    display_server: str = opt("http://127.0.0.1", "visdom server")
    display_port: int = opt(8097, "visdom port")
    display_env: str = opt("", "visdom environment (default: the run name)")
    no_html: bool = opt(False, "do not write web/index.html")
    loss_plot: str = opt(
        "linear", "y axis of web/loss.png (GAN terms and L1 in separate panels)", choices=LOSS_PLOT_SCALES
    )
    no_progress: bool = opt(False, "no progress bar or progress lines")
    progress_interval: float = opt(30.0, _PROGRESS_HELP)
    continue_train: bool = opt(False, "resume the run from its latest.pt", flag="--continue")
    overwrite: bool = opt(False, "delete an existing run of the same name and start again")

    @property
    def run_dir(self) -> Path:
        return Path(self.checkpoints_dir) / self.name

    @property
    def total_epochs(self) -> int:
        return self.n_epochs + self.n_epochs_decay


@dataclass
class TestConfig:
    """Options of ``pix2pix-ilm test``; the architecture comes from the run's ``config.json``."""

    name: str = opt("", "run name (a folder under --checkpoints-dir)", required=True)
    dataroot: str = opt("", "folder with <phase>/ subfolders of images", required=True)
    checkpoints_dir: str = opt("checkpoints", "folder holding the run folders")
    phase: str = opt("test", "subfolder of --dataroot to read")
    epoch: str = opt("latest", "which checkpoint: latest or an epoch number")
    results_dir: str = opt("results", "outputs go to <results-dir>/<name>/<phase>_<epoch>/")
    num_test: int | None = opt(None, "translate at most this many images")
    subset: str | None = opt(None, "START:END slice of the naturally sorted file list")
    single: bool = opt(False, "the images are single inputs (no B half); writes fake_B only")
    train_mode_dropout: bool = opt(
        False,
        "keep dropout active at test time, as the pix2pix paper does (default: eval mode, deterministic)",
    )
    batch_size: int = opt(1, "images per forward pass")
    device: str = opt("auto", "cpu, cuda, cuda:N, or auto")
    precision: str = opt(
        "run",
        "run: the precision the run trained with (its config.json), or fp32 / bf16 autocast, e.g. fp32 to "
        "test on a CPU a run that trained in bf16 on a GPU",
        choices=TEST_PRECISIONS,
    )
    native_conv: bool = opt(False, _NATIVE_CONV_HELP)
    seed: int = opt(0, "random seed (only matters with --train-mode-dropout)")
    skip_bad_images: bool = opt(False, "skip images that cannot be decoded instead of stopping")
    validate_images: str = opt("header", _VALIDATE_HELP, choices=VALIDATION_MODES)
    progress_interval: float = opt(30.0, _PROGRESS_HELP)


@dataclass
class Table6Config:
    """Options of ``pix2pix-ilm table6``; the protocol and its presets: docs/table6.md."""

    dataroot: str | None = opt(
        None, "facades folder (train/, test/); default: $PIX2PIX_ILM_FACADES, else datasets/facades, fetched"
    )
    out: str = opt("results/table6", "output folder")
    preset: str = opt("quick", "training setting: quick (small, for a CPU) or paper", choices=TABLE6_PRESETS)
    seeds: tuple[int, ...] = opt((0,), "training seeds", metavar="SEED")
    configs: tuple[str, ...] = opt(
        TABLE6_ROWS[:3],
        "rows: " + ", ".join(TABLE6_ROWS) + " or all",
        choices=(*TABLE6_ROWS, "all"),
        metavar="ROW",
    )
    eval_split: str = opt(
        "paper",
        "paper: train/201-400; test: test/; both: each run on both",
        choices=("paper", "test", "both"),
    )
    no_train: bool = opt(False, "only test and score the runs already trained; list the others as missing")
    jobs: int = opt(1, "training runs at a time, child processes sharing the CPU threads or the GPU")
    dry_run: bool = opt(False, "print the plan (runs, options, commands) and write nothing")
    lpips_backbone: str | None = opt(None, "local AlexNet weights for LPIPS (see 'eval --help')")
    test_dropout: str = opt("on", "dropout at test time, as in the pix2pix code", choices=("on", "off"))
    device: str = opt("auto", "cpu, cuda, cuda:N or auto")
    overrides: tuple[str, ...] = opt(
        (), "training option, e.g. n_epochs=2 (repeatable)", flag="--set", metavar="KEY=VALUE", append=True
    )
    eval_limit: int | None = opt(None, "evaluate only the first N images")
    no_progress: bool = opt(False, "no progress bars or progress lines")
    progress_interval: float = opt(30.0, _PROGRESS_HELP)


T = TypeVar("T")


def _field_type(tp: Any) -> tuple[type, bool]:
    """(base type, optional) for a field annotation."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_dataclass_arguments(
    parser: argparse.ArgumentParser, cls: type, *, required: bool = True, skip: tuple[str, ...] = ()
) -> None:
    """Add one flag per field of ``cls``; fields marked ``required`` are required when ``required`` is set."""
    hints = get_type_hints(cls)
    for f in fields(cls):
        if f.name in skip:
            continue
        base, optional = _field_type(hints[f.name])
        kwargs: dict[str, Any] = {"dest": f.name, "help": f.metadata.get("help", "")}
        if base is bool:
            # An optional bool is automatic until set: --flag / --no-flag.
            kwargs["action"] = argparse.BooleanOptionalAction if optional else "store_true"
            kwargs["default"] = f.default
        else:
            kwargs["type"] = base
            kwargs["default"] = f.default
            if get_origin(base) is tuple:  # tuple[X, ...]: --seeds 0 1 2, or with append: --set a=1 --set b=2
                kwargs.update(type=get_args(base)[0], default=list(f.default))
                kwargs.update({"action": "append"} if f.metadata.get("append") else {"nargs": "+"})
            if f.metadata.get("choices"):
                kwargs["choices"] = f.metadata["choices"]
            if required and f.metadata.get("required"):
                kwargs["required"] = True
            elif f.default not in (None, "", ()):
                shown = " ".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
                kwargs["help"] += f" (default: {shown})"
            kwargs["metavar"] = f.metadata.get("metavar") or (
                None if kwargs.get("choices") else f.name.upper()
            )
        names = [flag_name(f)]
        if "-" in names[0][2:]:
            names.append("--" + f.name)  # also accept the junyanz spelling, e.g. --netG_norm
        parser.add_argument(*names, **kwargs)


def dataclass_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Build ``cls`` from the parsed arguments (fields without a flag keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def parse_field_value(cls: type, name: str, text: str) -> Any:
    """``text`` typed as field ``name`` of ``cls``, as its flag takes it; ``none`` (and ``auto`` for an
    optional bool) gives None where the field allows it. :class:`UsageError` names the field."""
    base, optional = _field_type(get_type_hints(cls)[name])
    choices = next(f for f in fields(cls) if f.name == name).metadata.get("choices")
    if optional and text.lower() in ("", "none", *(("auto",) if base is bool else ())):
        return None
    if base is bool:
        if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise UsageError(f"{name}: expected true or false, got {text!r}")
        return text.lower() in ("1", "true", "yes")
    try:
        value = base(text)
    except ValueError as err:
        raise UsageError(f"{name}: {err}") from err
    if choices and value not in choices:
        raise UsageError(f"{name}: expected one of {', '.join(choices)}, got {text!r}")
    return value


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(cls: type[T], data: dict[str, Any], *, source: str = "config") -> T:
    """Rebuild ``cls`` from a dict; unknown keys are an error, missing keys take their defaults."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UsageError(f"{source}: unknown option(s) {', '.join(unknown)} (written by a newer version?)")
    return cls(**data)


def environment_info() -> dict[str, str]:
    """Versions recorded next to every run's options."""
    import torch

    return {
        "pix2pix_ilm": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def save_run_config(config: TrainConfig, path: Path) -> None:
    """Write ``config.json``: every option plus package and torch versions (atomically)."""
    from pix2pix_ilm.files import atomic_write_bytes

    payload = {"config": config_to_dict(config), "environment": environment_info()}
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def load_run_config(run_dir: Path) -> TrainConfig:
    """Read a run's ``config.json`` back into a :class:`TrainConfig`."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise UsageError(
            f"no trained run at {run_dir}: {path.name} not found (check --name and --checkpoints-dir)"
        )
    try:
        payload = json.loads(path.read_text())
        return config_from_dict(TrainConfig, payload["config"], source=str(path))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise UsageError(f"{path} is not a valid run config: {err}") from err


def plain_name_problem(flag: str, value: str) -> str | None:
    """Why ``value`` is not a plain folder name (one that stays inside its parent folder), or None."""
    if not value or value in (".", "..") or any(c in value for c in "/\\\0"):
        return f"{flag} must be a plain folder name (no path separators, not '..'), got {value!r}"
    return None


def parse_subset(text: str | None) -> slice | None:
    """``"START:END"`` → ``slice(START, END)``; either bound may be empty."""
    if text is None or text == "":
        return None
    match = re.fullmatch(r"\s*(-?\d*)\s*:\s*(-?\d*)\s*", text)
    if not match:
        raise UsageError(f"--subset must look like START:END (e.g. 0:200), got {text!r}")
    start, end = (int(v) if v else None for v in match.groups())
    return slice(start, end)


def config_differences(a: Any, b: Any, keys: tuple[str, ...] | None = None) -> list[str]:
    """``["netG: unet_256 != unet_128", ...]`` for the fields where two configs differ."""
    da, db = config_to_dict(a), config_to_dict(b)
    names = keys if keys is not None else tuple(da)
    return [f"{k}: {da.get(k)!r} != {db.get(k)!r}" for k in names if da.get(k) != db.get(k)]


ARCHITECTURE_KEYS: tuple[str, ...] = tuple(f.name for f in fields(NetworkOptions)) + ("input_nc", "output_nc")
