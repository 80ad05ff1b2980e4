"""Models trained with the pix2pix reference code (junyanz/pytorch-CycleGAN-and-pix2pix) as runs of this
package: their ``latest_net_G.pth`` / ``latest_net_D.pth`` state dicts, checked key by key (docs/deploy.md)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import torch
from torch import nn

from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.deploy.options import ImportConfig
from pix2pix_ilm.errors import UsageError, first_line
from pix2pix_ilm.files import check_output_folder, replacing_folder

# The reference's module names where ours differ (ResnetBlock.conv_block, PixelDiscriminator.net).
_RENAMES = ((re.compile(r"\.conv_block\."), ".block."), (re.compile(r"^net\."), "model."))
# Older PyTorch saved running statistics of InstanceNorm2d layers, which the reference drops when loading.
_INSTANCE_NORM_STATS = ("running_mean", "running_var", "num_batches_tracked")


def reference_state(path: Path, network: nn.Module, what: str) -> dict[str, torch.Tensor]:
    """The reference's state dict at ``path`` with our module names, checked against ``network``: every key,
    and every shape; a mismatch is refused with the keys listed."""
    if not path.is_file():
        raise UsageError(f"{what} file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle that is not plain tensors, a truncated file
        raise UsageError(f"{path} cannot be loaded as a state dict of tensors: {first_line(err)}") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"{path} is not a state dict (a mapping of names to tensors)")
    non_finite = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if non_finite:
        raise UsageError(
            f"{path} holds NaN or infinite values in {len(non_finite)} tensor(s), e.g. {non_finite[0]}: the "
            "model it saved is unusable; import a checkpoint saved before that happened"
        )
    renamed = {}
    for key, value in state.items():
        key = key.removeprefix("module.")  # saved from DataParallel
        for pattern, new in _RENAMES:
            key = pattern.sub(new, key)
        renamed[key] = value
    expected = network.state_dict()
    instance_norms = {n for n, m in network.named_modules() if isinstance(m, nn.InstanceNorm2d)}
    renamed = {
        k: v
        for k, v in renamed.items()
        if not (k.rsplit(".", 1)[0] in instance_norms and k.endswith(_INSTANCE_NORM_STATS))
    }
    problems = []
    if unknown := sorted(set(renamed) - set(expected)):
        problems.append(f"unknown keys {', '.join(unknown[:6])}{' ...' if len(unknown) > 6 else ''}")
    if missing := sorted(set(expected) - set(renamed)):
        problems.append(f"missing keys {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
    shapes = [
        f"{k} {tuple(renamed[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in renamed and renamed[k].shape != v.shape
    ]
    if shapes:
        problems.append(f"shapes differ: {'; '.join(shapes[:4])}{' ...' if len(shapes) > 4 else ''}")
    if problems:
        raise UsageError(
            f"{path} does not fit {what} as configured ({'; '.join(problems)}); check --netG/--netD, "
            "--ngf/--ndf, --norm, --n-layers-D and the channel counts"
        )
    return renamed


def import_reference(options: ImportConfig) -> Path:
    """Write ``<checkpoints-dir>/<name>/`` (config.json, latest.pt) from the reference's files; returns it."""
    from pix2pix_ilm.models.pix2pix import Pix2PixModel
    from pix2pix_ilm.training.distributed import Distributed
    from pix2pix_ilm.training.run_dir import check_train_config, start_run_folder
    from pix2pix_ilm.training.state import CheckpointSaver, Counters

    # Every option of the reference run that is one of ours too, by name; its one --norm for G and D.
    shared = {f.name for f in dataclasses.fields(TrainConfig)} & {f.name for f in dataclasses.fields(options)}
    given = {name: getattr(options, name) for name in shared - {"overwrite"}}
    config = TrainConfig(**given, netG_norm=options.norm, netD_norm=options.norm)
    check_train_config(dataclasses.replace(config, dataroot="-"))  # the data comes with train --continue
    if config.run_dir.exists() and not options.overwrite:
        raise UsageError(f"{config.run_dir} already exists; use --overwrite to replace it, or another --name")
    sources = [Path(options.G), *([Path(options.D)] if options.D else [])]
    check_output_folder(config.run_dir, "--name", sources, replaced=True)
    torch.manual_seed(0)
    model = Pix2PixModel(config, torch.device("cpu"))
    model.generator.load_state_dict(reference_state(Path(options.G), model.generator, "the generator"))
    if options.D:
        model.discriminator.load_state_dict(
            reference_state(Path(options.D), model.discriminator, "the discriminator")
        )
    with replacing_folder(config.run_dir, in_place=True):  # a failed import leaves no folder behind
        start_run_folder(config, resumed_at=None)
        saver = CheckpointSaver(model, config, Distributed(rank=0, world=1, device=torch.device("cpu")))
        # G, D, fresh Adam, counters, RNG: as train writes them
        saver.save_latest(Counters(epoch=options.epochs_done + 1))
    d_source = f"D from {options.D}" if options.D else "a new D"
    print(f"imported G from {options.G} and {d_source} -> {config.run_dir}")
    return config.run_dir
