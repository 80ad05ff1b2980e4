"""A trained generator as a file that runs without this package: ONNX (onnxruntime) or TorchScript, with the
preprocessing contract in its metadata (docs/deploy.md)."""

from __future__ import annotations

import importlib.util
import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.deploy.options import ExportConfig
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.files import atomic_write_bytes, check_output_files
from pix2pix_ilm.models.networks import unet_depth
from pix2pix_ilm.models.norms import ILMNorm
from pix2pix_ilm.training.inference import checkpoint_path, load_generator_for_inference, trained_counters
from pix2pix_ilm.version import __version__

CONTRACT_KEY = "pix2pix_ilm"
"""The metadata key (ONNX ``metadata_props``, TorchScript extra file ``pix2pix_ilm.json``) of the contract."""
EXPORT_EXTRA = "pip install 'pix2pix-ilm[export]'"


def size_multiple(net_g: str) -> int:
    """Input sides the generator takes are multiples of this: 2^depth for a U-Net, 4 for a ResNet."""
    depth = unet_depth(net_g)
    return 2**depth if depth is not None else 4


def contract(
    config: TrainConfig, name: str, checkpoint: str, counters: dict[str, int], dynamic: bool
) -> dict:
    """What the file expects and gives, and how a plain image becomes its input (test's transform)."""
    return {
        "package": f"pix2pix-ilm {__version__}",
        "run": name,
        "checkpoint": checkpoint,
        "trained": trained_counters(counters, config.total_epochs),
        "netG": config.netG,
        "direction": config.direction,
        "input": "float32 (N, input_nc, H, W), pixel / 127.5 - 1",
        "output": "float32 (N, output_nc, H, W) in [-1, 1]; pixel = round((x + 1) * 127.5)",
        "input_nc": config.input_nc,
        "output_nc": config.output_nc,
        "value_range": [-1, 1],
        "height": None if dynamic else config.crop_size,
        "width": None if dynamic else config.crop_size,
        "size_multiple": size_multiple(config.netG),
        "preprocess": {
            "preprocess": config.preprocess,
            "load_size": config.load_size,
            "crop_size": config.crop_size,
        },
    }


def plain_graph(generator: nn.Module) -> nn.Module:
    """The generator with every ILM layer on its general graph (plain tensor ops; no autograd function)."""
    for module in generator.modules():
        if isinstance(module, ILMNorm):
            module.fused = False
    return generator


def export_generator(options: ExportConfig) -> Path:
    """Write the run's generator (eval mode, fp32, CPU) to ``options.out``; returns the path."""
    if options.format == "onnx":
        missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
        if missing:
            raise UsageError(f"--format onnx needs {' and '.join(missing)}: {EXPORT_EXTRA}")
    run_dir = Path(options.checkpoints_dir) / options.name
    checkpoint = checkpoint_path(run_dir, options.epoch)
    run_files = [*run_dir.glob("*"), checkpoint]  # the run's files, none of them replaced
    (out,) = check_output_files([options.out], "--out", run_files, overwrite=options.overwrite)
    generator, config, counters = load_generator_for_inference(run_dir, options.epoch, "cpu")
    generator = plain_graph(generator.float().eval())
    meta = contract(config, options.name, checkpoint.name, counters, options.dynamic)
    # A dynamic export is traced at two size steps: at one, a U-Net's innermost map is 1x1, which fixes the size.
    side = 2 * size_multiple(config.netG) if options.dynamic else config.crop_size
    example = torch.rand(1, config.input_nc, side, side) * 2 - 1
    # Serialised in memory, then written by Python: a full disk is an OSError, never a truncated file.
    if options.format == "onnx":
        data = _export_onnx(generator, example, meta, options.dynamic)
    else:
        data = _export_torchscript(generator, example, meta)
    atomic_write_bytes(out, data)
    print(f"exported {options.name} ({meta['checkpoint']}) to {out} ({options.format})")
    return out


def _export_onnx(generator: nn.Module, example: torch.Tensor, meta: dict[str, Any], dynamic: bool) -> bytes:
    shapes = None
    if dynamic:
        step = meta["size_multiple"]
        height, width = (step * torch.export.Dim(f"{side}_steps", min=1, max=4096) for side in ("h", "w"))
        shapes = ({0: torch.export.Dim("batch", min=1, max=1024), 2: height, 3: width},)
    program = torch.onnx.export(
        generator,
        (example,),
        dynamo=True,
        input_names=["input"],
        output_names=["output"],
        dynamic_shapes=shapes,
        verbose=False,
    )
    model = program.model_proto
    entry = model.metadata_props.add()
    entry.key, entry.value = CONTRACT_KEY, json.dumps(meta)
    return model.SerializeToString()


def _export_torchscript(generator: nn.Module, example: torch.Tensor, meta: dict[str, Any]) -> bytes:
    with torch.no_grad(), warnings.catch_warnings():
        # Known and harmless: torch's notices that TorchScript is deprecated (it still loads everywhere), and
        # the tracer's note on the layers' channel checks, which hold for the one input size traced.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
        warnings.filterwarnings("ignore", "Converting a tensor to a Python boolean", torch.jit.TracerWarning)
        traced = torch.jit.trace(generator, example, check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={f"{CONTRACT_KEY}.json": json.dumps(meta)})
    return buffer.getvalue()
