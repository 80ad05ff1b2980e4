"""Every command's options as a dataclass: one field = one command-line flag = one key in ``config.json``.

A run's ``config.json`` stores every :class:`TrainConfig` field, so ``test`` needs no architecture flags.
How fields become flags: :mod:`pix2pix_ilm.flags`. No torch here: ``--help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from pix2pix_ilm.errors import UsageError, first_line
from pix2pix_ilm.files import atomic_write_bytes
from pix2pix_ilm.flags import config_from_dict, opt
from pix2pix_ilm.models.norm_specs import (
    ILM_ACTIVATIONS,
    ILM_HIDDEN_RULES,
    ILM_INITS,
    ILM_VARIANCES,
    NORM_NAMES,
)
from pix2pix_ilm.version import __version__

GAN_MODES = ("vanilla", "lsgan", "wgangp")
PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")
DIRECTIONS = ("AtoB", "BtoA")
PRECISIONS = ("auto", "fp32", "bf16")
TEST_PRECISIONS = ("run", "fp32", "bf16")
VALIDATION_MODES = ("header", "full")
DATASET_MODES, CHANNELS = ("aligned", "paired"), (1, 3)
LOSS_PLOT_SCALES = ("linear", "log")
LR_SCHEDULES = ("pix2pix", "delayed")
AUTO_ON_OFF = ("auto", "on", "off")
PROGRESS_HELP = (
    "when stderr is not a terminal (a log file, nohup, CI): seconds between progress lines (count, losses, "
    "it/s, ETA); on a terminal a progress bar is shown instead"
)
_PRECISION_HELP = (
    "fp32, or bf16 autocast (fp32 weights, bf16 convolutions); auto: bf16 on CUDA GPUs with native bf16 "
    "(compute capability 8.0+, e.g. A100/H100), fp32 on older GPUs and on the CPU (bf16 stays opt-in there). "
    "config.json records the resolved value, which --continue and test reuse"
)
_CHANNELS_LAST_HELP = (
    "the channels-last memory format for weights and activations (--no-channels-last: the contiguous one, "
    "the default: instance norms return contiguous tensors, so channels-last costs a copy after each; "
    "docs/gpu.md). config.json records the resolved value"
)
_VALIDATE_HELP = (
    "check of every image before any work: header (fast: size, A|B shape, and the end marker of each JPEG/PNG, "
    "which a truncated file lacks) or full (decode every image)"
)


@dataclass
class DataOptions:
    """Where the images come from and how they are prepared."""

    dataroot: str = opt("", "folder laid out as --dataset-mode says (required; --continue: the run's own)")
    phase: str = opt("train", "subfolder of --dataroot to read (train, val, test, ...)")
    dataset_mode: str = opt(
        "aligned",
        "aligned: <phase>/ holds A|B images side by side; paired: A images in <phase>_A/ and B in <phase>_B/, "
        "matched by file stem (docs/data.md)",
        choices=DATASET_MODES,
    )
    direction: str = opt(
        "AtoB", "AtoB: A (the left half, or <phase>_A/) is the input; BtoA: B is", choices=DIRECTIONS
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
    input_nc: int = opt(3, "channels of the input image: 3 (RGB) or 1 (grey)", choices=CHANNELS)
    output_nc: int = opt(3, "channels of the output image: 3 (RGB) or 1 (grey)", choices=CHANNELS)
    skip_bad_images: bool = opt(
        False, "skip images that cannot be decoded (with a warning) instead of stopping"
    )
    validate_images: str = opt("header", _VALIDATE_HELP, choices=VALIDATION_MODES)
    num_workers: int | None = opt(
        None,
        "data-loading worker processes (0: in the training process); default: on CUDA up to 4 persistent "
        "workers (cores - 1) with pinned memory, on the CPU 0",
    )
    data_on_device: str = opt(
        "auto",
        "keep the training set on the device, decoded and resized once, each step's crop and flip taken there "
        "(the batches are the DataLoader's, bit for bit): on, off, or auto: on a CUDA device where the set "
        "takes at most 10%% of its free memory and every image decodes. config.json records what ran",
        choices=AUTO_ON_OFF,
    )


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
    ilm_mean_activation: str = opt("tanh", "ILM decoder activation of D_mu", choices=ILM_ACTIVATIONS)
    ilm_var_activation: str = opt("sigmoid", "ILM decoder activation of D_gamma", choices=ILM_ACTIVATIONS)
    ilm_init: str = opt(
        "pix2pix",
        "init of ILM's meta-network W1-W3: pix2pix (as every layer, --init-type) or pytorch (torch's default, "
        "as the authors' code)",
        choices=ILM_INITS,
    )
    ilm_variance: str = opt(
        "biased",
        "variance of ILM's standardisation: biased (as InstanceNorm2d) or unbiased (as the authors' code)",
        choices=ILM_VARIANCES,
    )
    ilm_hidden: str = opt(
        "ours",
        "width M of ILM's encoder from the N_k key groups: ours max(2, N_k // 16); authors N_k // 16 if N_k > 16 "
        "(>= 16 with GN) else 2, as the authors' code (they differ for 17-31 key groups, and GN with 16)",
        choices=ILM_HIDDEN_RULES,
    )
    no_dropout: bool = opt(False, "no dropout in the generator")
    init_type: str = opt("normal", "weight initialization", choices=INIT_TYPES)
    init_gain: float = opt(0.02, "scale of the weight initialization")


@dataclass
class TrainConfig(DataOptions, NetworkOptions):
    """Every option of a training run; saved as ``config.json`` in the run folder."""

    # What a config saved before an option existed meant (the code's behaviour then, not today's default).
    UNSAVED: ClassVar[dict[str, Any]] = {"lr_schedule": "delayed"}

    name: str = opt("", "run name: outputs go to <checkpoints-dir>/<name>/", required=True)
    checkpoints_dir: str = opt("checkpoints", "folder holding the run folders")
    gan_mode: str = opt("vanilla", "GAN objective", choices=GAN_MODES)
    lambda_l1: float = opt(100.0, "weight of the L1 loss")
    lambda_gp: float = opt(10.0, "weight of the gradient penalty (wgangp only)")
    lr: float = opt(2e-4, "Adam learning rate")
    beta1: float = opt(0.5, "Adam beta1")
    n_epochs: int = opt(100, "epochs at the initial learning rate")
    n_epochs_decay: int = opt(100, "epochs of linear decay of the learning rate to zero")
    lr_schedule: str = opt(
        "pix2pix",
        "pix2pix: the pix2pix code's factors, 1 - max(0, epoch + 1 - n_epochs) / (n_epochs_decay + 1), reaching 0 "
        "in the last epoch (3 + 3 epochs: 1, 1, .75, .5, .25, 0); delayed: the same one epoch later "
        "(1, 1, 1, .75, .5, .25), what runs saved without this option used",
        choices=LR_SCHEDULES,
    )
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
    cuda_graph: str = opt(
        "auto",
        "capture the whole training step (G, D and both Adam updates) as one CUDA graph after a few eager "
        "steps, then replay it: on, off, or auto: on with CUDA, except with --compile, --gan-mode wgangp or "
        "torchrun, where the step runs eager (docs/gpu.md). config.json records what ran",
        choices=AUTO_ON_OFF,
    )
    sync_batch: bool = opt(False, "with batch norm under torchrun: synchronise statistics across processes")
    print_freq: int = opt(
        100,
        "log losses every N iterations (also at the first step and at each epoch end); the progress line shows "
        "the latest, marked with their step (G_L1 35.2 @1200), next to the live epoch",
    )
    display_freq: int = opt(400, "update visdom / the HTML page every N iterations")
    save_latest_freq: int = opt(5000, "save latest.pt every N iterations")
    save_latest_minutes: float = opt(
        10.0,
        "also save latest.pt at the first epoch end M minutes or more after the last save (0: every epoch end); "
        "it is always saved at the end and when the run is stopped",
    )
    save_epoch_freq: int = opt(5, "keep epoch_<n>.pt every N epochs (0: only the last epoch's)")
    no_display: bool = opt(False, "no visdom previews")
    display_server: str = opt("http://127.0.0.1", "visdom server")
    display_port: int = opt(8097, "visdom port")
    display_env: str = opt("", "visdom environment (default: the run name)")
    no_html: bool = opt(False, "do not write web/index.html")
    tensorboard: bool = opt(
        False,
        "also write TensorBoard event files to <run folder>/tensorboard/ (view with tensorboard --logdir "
        "checkpoints/RUN/tensorboard): losses and learning rate with each loss_log.jsonl entry (--print-freq), "
        "real_A | fake_B | real_B every --display-freq iterations, independent of visdom; needs the optional "
        "extra: pip install 'pix2pix-ilm[tensorboard]'",
    )
    loss_plot: str = opt(
        "linear", "y axis of web/loss.png (GAN terms and L1 in separate panels)", choices=LOSS_PLOT_SCALES
    )
    no_progress: bool = opt(False, "no progress bar or progress lines")
    progress_interval: float = opt(30.0, PROGRESS_HELP)
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
    dataroot: str = opt("", "folder with <phase>/ (paired runs: <phase>_A/, <phase>_B/)", required=True)
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
    seed: int = opt(0, "random seed (only matters with --train-mode-dropout)")
    skip_bad_images: bool = opt(False, "skip images that cannot be decoded instead of stopping")
    validate_images: str = opt("header", _VALIDATE_HELP, choices=VALIDATION_MODES)
    no_progress: bool = opt(False, "no progress bar or progress lines")
    progress_interval: float = opt(30.0, PROGRESS_HELP)


@dataclass
class BenchConfig:
    """Options of ``pix2pix-ilm bench``: the training step per speed setting and norm pair (docs/bench.md)."""

    settings: str = opt(
        "default",
        "comma-separated speed settings: default (what train picks for the device), or features joined by + "
        "that turn on exactly those (fp32, bf16, channels_last, compile), e.g. default,bf16+channels_last",
    )
    norms: str = opt(
        "IN/IN,ILM+IN/ILM+IN",
        "comma-separated G/D norm pairs: IN, ILM+IN, BN, GN, LN, ILM+GN, ILM+LN or norm names",
    )
    size: int = opt(256, "image size")
    netG: str = opt("unet_256", "generator")
    netD: str = opt("basic", "discriminator")
    ngf: int = opt(64, "generator width")
    ndf: int = opt(64, "discriminator width")
    batch_size: int = opt(1, "images per training step and per inference forward")
    device: str = opt("auto", "cpu, cuda, cuda:N, or auto")
    warmup: int = opt(
        3,
        "untimed training steps before the timed ones (compile compiles here; a CUDA graph is captured here)",
    )
    min_time: float = opt(10.0, "seconds of timed training steps per row, and again of inference forwards")
    seed: int = opt(0, "seed of the weights and the random input images")
    runs: int = opt(
        1,
        "runs measured at once, each in its own process as table6 --jobs trains them (seeds --seed, --seed + 1, "
        "...): their timed steps start together; total it/s adds their rates",
    )
    runs_as: str = opt(
        "processes",
        "how --runs run at once: processes (one each, as table6 --jobs), or streams (all in one process, each "
        "step captured as a CUDA graph and replayed on a CUDA stream of its own; CUDA only)",
        choices=("processes", "streams"),
    )
    json_path: str | None = opt(
        None, "also write the JSON report (the last line of the output) here", flag="--json"
    )
    overwrite: bool = opt(False, "replace the --json file if it exists")


@dataclass
class ModelsConfig:
    """Options of ``pix2pix-ilm models``."""

    netG: str = opt("unet_256", "generator")
    netD: str = opt("basic", "discriminator")
    ngf: int = opt(64, "generator width")
    ndf: int = opt(64, "discriminator width")
    ilm_group_size: int = opt(1, "ILM key-group size K")


@dataclass
class VisdomConfig:
    """Options of ``pix2pix-ilm visdom``."""

    port: int = opt(8097, "port")
    host: str = opt("127.0.0.1", "address to bind; 0.0.0.0 only on a network you trust")
    env_path: str | None = opt(None, "where visdom stores environments (default: ~/.visdom)")
    fetch_assets: bool = opt(
        False,
        "put visdom's browser files into their cache and exit: visdom's own download where its CDNs answer, "
        "else the npm registry (needs npm); the cache is $PIX2PIX_ILM_VISDOM_ASSETS, else "
        "<venv>/share/pix2pix-ilm/visdom-<version> (outside a venv: ~/.cache/pix2pix-ilm/...)",
    )


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


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
        payload = json.loads(path.read_text(encoding="utf-8"))
        return config_from_dict(TrainConfig, payload["config"], source=str(path))
    except (OSError, ValueError, KeyError, TypeError) as err:  # unreadable, not JSON (or UTF-8), not a config
        raise UsageError(
            f"{path} is not a valid run config ({first_line(err)}); restore it from a backup, or train the run again"
        ) from err


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
