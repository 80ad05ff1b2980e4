"""Inference with a trained run: ``config.json`` + checkpoint → G → images and an HTML page.

No architecture flags: everything about the networks comes from the run's ``config.json``, checked against
the config stored inside the checkpoint. Preprocessing is the training one without randomness:
``resize_and_crop`` resizes straight to the crop size (the whole image is seen), ``crop`` takes the centre,
and nothing is flipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pix2pix_ilm.config import (
    ARCHITECTURE_KEYS,
    TestConfig,
    TrainConfig,
    config_differences,
    config_from_dict,
    load_run_config,
    parse_subset,
    plain_name_problem,
)
from pix2pix_ilm.data.aligned import AlignedDataset, SingleDataset, collate_skipping_none
from pix2pix_ilm.data.images import BAD_IMAGES_FILE, record_bad_images, select_files, validate_images
from pix2pix_ilm.data.paired import PairedDataset, phase_items
from pix2pix_ilm.data.transforms import TransformSpec
from pix2pix_ilm.device import autocast, resolve_device, with_device_defaults
from pix2pix_ilm.errors import UsageError, first_line
from pix2pix_ilm.files import atomic_write_text, check_output_folder, data_folders, replacing_folder
from pix2pix_ilm.locks import results_folder
from pix2pix_ilm.models.networks import generator_from_config, unet_depth
from pix2pix_ilm.training.checkpoint import load_checkpoint
from pix2pix_ilm.viz.images import save_image, tensor_to_image
from pix2pix_ilm.viz.pages import TEST_INFO, write_test_page
from pix2pix_ilm.viz.progress import Progress


def checkpoint_path(run_dir: Path, epoch: str) -> Path:
    """``latest`` → ``latest.pt``; ``N`` → ``epoch_N.pt``."""
    if epoch == "latest":
        return run_dir / "latest.pt"
    if not epoch.isdigit():
        raise UsageError(f"--epoch must be 'latest' or an epoch number, got {epoch!r}")
    return run_dir / f"epoch_{int(epoch)}.pt"


def load_generator_for_inference(
    run_dir: Path, epoch: str = "latest", device: str = "auto"
) -> tuple[nn.Module, TrainConfig, dict[str, int]]:
    """The run's generator in eval mode with the weights of ``epoch`` (config from ``config.json``, verified),
    its config and the checkpoint's training counters (``epoch``, ``batches_done``, ``iteration``; {} if none).

    Only G is built and read: the checkpoint is memory-mapped and G's weights are verified by their own
    digest, so D's weights and Adam's moments (3/4 of a ``unet_256`` checkpoint) are never loaded.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"no run at {run_dir} (check --name and --checkpoints-dir)")
    config = load_run_config(run_dir)
    path = checkpoint_path(run_dir, epoch)
    if not path.is_file():
        available = sorted(p.name for p in run_dir.glob("*.pt"))
        raise UsageError(f"checkpoint {path} not found; available: {', '.join(available) or 'none'}")
    state = load_checkpoint(path, only="generator")
    if "config" in state:
        stored = config_from_dict(TrainConfig, state["config"], source=str(path))
        diffs = config_differences(config, stored, ARCHITECTURE_KEYS)
        if diffs:
            raise UsageError(f"{path} does not match {run_dir / 'config.json'}: " + "; ".join(diffs))
    weights = state.get("generator")
    if not isinstance(weights, dict):
        raise UsageError(f"checkpoint {path} holds no generator weights")
    non_finite = [
        key
        for key, tensor in weights.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if non_finite:
        raise UsageError(
            f"{path} holds NaN or infinite values in {len(non_finite)} generator tensor(s), e.g. {non_finite[0]}; "
            "its outputs would be meaningless (use an earlier --epoch)"
        )
    with torch.device("meta"):  # no init work: every tensor comes from the checkpoint
        generator = generator_from_config(config)
    try:
        generator.load_state_dict(weights, assign=True)
    except (RuntimeError, ValueError) as err:
        raise UsageError(f"checkpoint does not fit the configured networks: {first_line(err)}") from err
    left = [name for name, t in (*generator.named_parameters(), *generator.named_buffers()) if t.is_meta]
    if left:
        raise UsageError(f"checkpoint {path} lacks generator tensor(s) {', '.join(left[:3])}")
    counters = state.get("counters")
    counters = {k: int(v) for k, v in counters.items()} if isinstance(counters, dict) else {}
    target = resolve_device(device)
    # config.json of train holds resolved values; one written by other code may still say auto.
    config = with_device_defaults(config, target)
    return generator.to(target).eval(), config, counters


def describe_checkpoint(name: str, counters: dict[str, int], total_epochs: int) -> tuple[str, str]:
    """What a checkpoint holds, from its counters: ``("epoch 5 of 200", "latest.pt: epoch 5 of 200 done,
    iteration 2000")``; mid-epoch checkpoints say ``during epoch 6 of 200``."""
    if "epoch" not in counters:
        return f"checkpoint {name}", f"{name} (no training counters recorded)"
    epoch, batches = counters["epoch"], counters.get("batches_done", 0)
    short = f"during epoch {epoch} of {total_epochs}" if batches else f"epoch {epoch - 1} of {total_epochs}"
    done = "" if batches else " done"
    return short, f"{name}: {short}{done}, iteration {counters.get('iteration', '?')}"


@torch.inference_mode()
def translate(
    generator: nn.Module, real_a: torch.Tensor, config: TrainConfig, train_mode_dropout: bool = False
) -> torch.Tensor:
    """G(real_A) on G's device: eval mode unless ``train_mode_dropout`` (pix2pix's test-time dropout);
    ``config``'s precision and memory format (the run's, unless ``test --precision`` says otherwise)."""
    device = next(generator.parameters()).device
    generator.train(train_mode_dropout)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    real_a = real_a.to(device).contiguous(memory_format=memory_format)
    with autocast(device, config.precision):
        return generator(real_a).float()


def run_test(options: TestConfig) -> Path:
    """Translate the images of ``--phase`` (in the run's ``--dataset-mode`` layout); returns the output folder.

    The folder holds exactly this test's results: they are written beside it and replace the previous ones
    (scores included) only once complete, so ``eval`` can never mix images of two tests.
    """
    _check_test_options(options)
    run_dir = Path(options.checkpoints_dir) / options.name
    suffix = "_single" if options.single else ""
    out_dir = Path(options.results_dir) / options.name / f"{options.phase}_{options.epoch}{suffix}"
    inputs = [*data_folders(options.dataroot, options.phase), run_dir]
    check_output_folder(out_dir, "--results-dir", inputs, replaced=True)
    with results_folder(out_dir):
        return _test_into(options, run_dir, out_dir)


def _test_into(options: TestConfig, run_dir: Path, out_dir: Path) -> Path:
    generator, config, counters = load_generator_for_inference(run_dir, options.epoch, options.device)
    if options.precision != "run":
        config = dataclasses.replace(config, precision=options.precision)
    loader, skipped, source = _test_loader(options, config)
    record = test_record(options, config)  # before translating: a later change of the inputs shows
    labels = ("fake_B",) if options.single else ("real_A", "fake_B", "real_B")
    start = time.time()
    with replacing_folder(out_dir) as staging:
        if options.skip_bad_images:
            loader.dataset.bad_list = staging / BAD_IMAGES_FILE
            record_bad_images(loader.dataset.bad_list, skipped)
        stems = _translate_all(generator, loader, config, options, labels, staging / "images")
        checkpoint = checkpoint_path(run_dir, options.epoch).name
        short, full = describe_checkpoint(checkpoint, counters, config.total_epochs)
        mode = "train-mode dropout" if options.train_mode_dropout else "eval mode"
        info: dict[str, Any] = {
            "title": f"{options.name}: {options.phase}, {short}",
            "description": f"{len(stems)} images of {source}, translated with {full}; {mode}.",
            "checkpoint": checkpoint,
            "trained": trained_counters(counters, config.total_epochs),
            "labels": list(labels),
            "images": stems,
            "test_id": secrets.token_hex(8),  # the scores of this test name it
            **record,
        }
        atomic_write_text(staging / TEST_INFO, json.dumps(info, indent=2) + "\n", fsync=False)
        write_test_page(staging, fsync=False, final_dir=out_dir)
    print(f"translated {len(stems)} images in {time.time() - start:.1f} s -> {out_dir}")
    return out_dir


def _check_test_options(options: TestConfig) -> None:
    # --name and --phase name the output folder: they must not lead out of --results-dir.
    problems = [plain_name_problem("--name", options.name), plain_name_problem("--phase", options.phase)]
    if options.num_test is not None and options.num_test < 1:
        problems.append(f"--num-test must be >= 1, got {options.num_test}")
    if options.batch_size < 1:
        problems.append(f"--batch-size must be >= 1, got {options.batch_size}")
    if not options.progress_interval > 0:
        problems.append(f"--progress-interval must be > 0 seconds, got {options.progress_interval}")
    if any(problems):
        raise UsageError("; ".join(p for p in problems if p))


def test_inputs(options: TestConfig, config: TrainConfig) -> tuple[str, list[Path] | list[tuple[Path, Path]]]:
    """Where ``--phase`` is read from and the files (or pairs) ``--subset`` and ``--num-test`` select there."""
    paired = config.dataset_mode == "paired" and not options.single
    source, items = phase_items(options.dataroot, options.phase, paired)
    files = select_files(items, parse_subset(options.subset), options.num_test)
    if not files:
        raise UsageError(f"no images in {source}")
    return source, files


def test_record(options: TestConfig, config: TrainConfig) -> dict[str, Any]:
    """What a test's outputs depend on besides its checkpoint, as its test.json records it: its options (not how
    progress is shown) and a digest of its inputs' names, sizes and modification times."""
    digest = hashlib.sha256()
    for item in test_inputs(options, config)[1]:
        for path in item if isinstance(item, tuple) else (item,):
            stat = path.stat()
            digest.update(f"{path.name}/{stat.st_size}/{stat.st_mtime_ns}\n".encode())
    shown = {"no_progress", "progress_interval"}
    options_dict = {key: value for key, value in dataclasses.asdict(options).items() if key not in shown}
    return {"options": options_dict, "inputs": digest.hexdigest()[:16]}


def _test_loader(options: TestConfig, config: TrainConfig) -> tuple[DataLoader, list[str], str]:
    """The checked images of ``--phase`` as batches, preprocessed as in training but without randomness, the
    reasons for the files skipped as bad, and where they were read (``--single``: a plain folder of inputs)."""
    source, files = test_inputs(options, config)
    paired = config.dataset_mode == "paired" and not options.single
    transform = TransformSpec(config.preprocess, config.load_size, config.crop_size, flip=False, train=False)
    depth = unet_depth(config.netG)
    files, skipped = validate_images(
        files,
        aligned=not options.single,
        skip_bad=options.skip_bad_images,
        mode=options.validate_images,
        transform=transform,
        size_multiple=2**depth if depth is not None else 4,
    )
    bad_image = "drop" if options.skip_bad_images else "error"
    if options.single:
        dataset: Dataset = SingleDataset(files, transform, config.input_nc, bad_image=bad_image)
    else:
        dataset = (PairedDataset if paired else AlignedDataset)(
            files, transform, config.direction, config.input_nc, config.output_nc, bad_image=bad_image
        )
    loader = DataLoader(
        dataset, batch_size=options.batch_size, shuffle=False, collate_fn=collate_skipping_none
    )
    return loader, skipped, source


def _translate_all(
    generator: nn.Module,
    loader: DataLoader,
    config: TrainConfig,
    options: TestConfig,
    labels: tuple[str, ...],
    image_dir: Path,
) -> list[str]:
    """Write ``<stem>_<label>.png`` for every image; single inputs get their output at their own size."""
    torch.manual_seed(options.seed)
    stems: list[str] = []
    progress = Progress(
        len(loader),
        f"test {options.name}",
        unit="batch",
        interval=options.progress_interval,
        enabled=not options.no_progress,
    )
    for batch in progress.iterate(loader):
        if batch is None:  # every image of the batch failed to decode (--skip-bad-images)
            continue
        fake_b = translate(generator, batch["A"], config, options.train_mode_dropout).cpu()
        visuals = {"real_A": batch["A"], "fake_B": fake_b, "real_B": batch.get("B")}
        for i, path in enumerate(batch["path"]):
            stem = Path(path).stem
            for label in labels:
                image = tensor_to_image(visuals[label][i], keep_grey=True)
                if options.single:  # back to the input's own size and aspect ratio
                    size = (int(batch["size"][0][i]), int(batch["size"][1][i]))
                    image = np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))
                save_image(image, image_dir / f"{stem}_{label}.png", fsync=False)
            stems.append(stem)
    progress.close()
    return stems


def trained_counters(counters: dict[str, int], total_epochs: int) -> dict[str, int]:
    """How far a checkpoint's run had trained, counted as everywhere a user reads it: epochs completed."""
    if "epoch" not in counters:
        return {}
    return {
        "epochs_done": counters["epoch"] - 1,
        "total_epochs": total_epochs,
        "batches_into_next_epoch": counters.get("batches_done", 0),
        "iteration": counters.get("iteration", 0),
    }
