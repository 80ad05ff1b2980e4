"""One image in, one image out: :class:`Translator` (a run's generator, or an exported ONNX file) and the
``translate`` command. An input is transformed as ``test --single`` does (the run's test-time resize or crop)
and the output resized back to the input's size."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pix2pix_ilm.data.images import list_images, load_rgb, to_8bit, validate_images
from pix2pix_ilm.data.transforms import TransformSpec, to_tensor
from pix2pix_ilm.deploy.export import CONTRACT_KEY, EXPORT_EXTRA
from pix2pix_ilm.deploy.options import TranslateConfig
from pix2pix_ilm.errors import UsageError, first_line
from pix2pix_ilm.files import check_output_files, check_output_folder, sync_to_disk
from pix2pix_ilm.viz.images import save_image, tensor_to_image

Network = Callable[[torch.Tensor], torch.Tensor]  # (1, C_in, H, W) in [-1, 1] -> (1, C_out, H, W)


class Translator:
    """``Translator.from_run("checkpoints/RUN")(pil_image)`` → the translated PIL image, at the input's size."""

    def __init__(self, network: Network, transform: TransformSpec, input_nc: int, output_nc: int) -> None:
        self.network, self.transform, self.input_nc, self.output_nc = network, transform, input_nc, output_nc

    @classmethod
    def from_run(cls, run_dir: str | Path, epoch: str = "latest", device: str = "auto") -> Translator:
        """The run's generator as ``test`` uses it (eval mode, the run's precision)."""
        from pix2pix_ilm.training.inference import load_generator_for_inference, translate

        generator, config, _ = load_generator_for_inference(Path(run_dir), epoch, device)
        transform = TransformSpec(
            config.preprocess, config.load_size, config.crop_size, flip=False, train=False
        )
        return cls(lambda x: translate(generator, x, config), transform, config.input_nc, config.output_nc)

    @classmethod
    def from_onnx(cls, path: str | Path) -> Translator:
        """An exported ONNX file run by onnxruntime, with the contract written into it."""
        try:
            import onnxruntime
        except ImportError as err:
            raise UsageError(f"running an ONNX file needs onnxruntime: {EXPORT_EXTRA}") from err
        if not Path(path).is_file():
            raise UsageError(f"ONNX file not found: {path}")
        damaged = f"{path} is not a usable ONNX model (truncated or damaged?); export it again"
        try:
            runtime = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            meta = runtime.get_modelmeta().custom_metadata_map.get(CONTRACT_KEY)
        except Exception as err:  # onnxruntime's own types: InvalidProtobuf, Fail, InvalidGraph, ...
            raise UsageError(f"{damaged}: {first_line(err)}") from err
        if meta is None:
            raise UsageError(f"{path} was not exported by pix2pix-ilm (no {CONTRACT_KEY} metadata)")
        try:
            contract = json.loads(meta)
            spec = contract["preprocess"]
            transform = TransformSpec(
                spec["preprocess"], spec["load_size"], spec["crop_size"], flip=False, train=False
            )
            channels = int(contract["input_nc"]), int(contract["output_nc"])
        except (ValueError, KeyError, TypeError) as err:
            raise UsageError(f"{damaged}: its {CONTRACT_KEY} metadata is unreadable ({err!r})") from err

        def network(x: torch.Tensor) -> torch.Tensor:
            try:
                return torch.from_numpy(runtime.run(None, {"input": x.numpy()})[0])
            except Exception as err:  # a graph whose damage only shows when it runs
                raise UsageError(f"{damaged}: {first_line(err)}") from err

        return cls(network, transform, *channels)

    def __call__(self, image: Image.Image) -> Image.Image:
        source = to_8bit(image, self.input_nc)
        (network_input,) = self.transform.apply([source], None)
        with torch.inference_mode():
            output = self.network(to_tensor(network_input).unsqueeze(0))
        pixels = tensor_to_image(output[0].float().cpu())
        result = Image.fromarray(pixels[:, :, 0] if self.output_nc == 1 else pixels)
        return result.resize(image.size, Image.BICUBIC) if result.size != image.size else result


def _inputs(paths: tuple[str, ...]) -> list[Path]:
    """The image files named, and those directly in the folders named."""
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if not path.exists():
            raise UsageError(f"input not found: {path}")
        files += list_images(path) if path.is_dir() else [path]
    stems = [f.stem for f in files]
    clash = sorted({s for s in stems if stems.count(s) > 1})
    if clash:
        raise UsageError(f"two inputs would write the same output {clash[0]}.png; translate them separately")
    if not files:
        raise UsageError(f"no images in {', '.join(paths)}")
    return files


def run_translate(options: TranslateConfig) -> Path:
    """The ``translate`` command: ``<out>/<stem>.png`` for every input image, each checked before any work."""
    if bool(options.name) == bool(options.onnx):
        raise UsageError("give either --name RUN (a trained run) or --onnx FILE (an exported model)")
    files = _inputs(options.inputs)
    # Not even the folder of an input file: a second translate of that folder would take the outputs as inputs.
    out = check_output_folder(options.out, "--out", [*options.inputs, *(path.parent for path in files)])
    check_output_files(
        [out / f"{path.stem}.png" for path in files], "--out", files, overwrite=options.overwrite
    )
    files, _ = validate_images(
        files, aligned=False, skip_bad=options.skip_bad_images, mode="full", listed_in_file=False
    )
    if options.onnx:
        translator = Translator.from_onnx(options.onnx)
    else:
        translator = Translator.from_run(
            Path(options.checkpoints_dir) / options.name, options.epoch, options.device
        )
    for path in files:
        result = translator(load_rgb(path, translator.input_nc))
        save_image(np.asarray(result), out / f"{path.stem}.png", fsync=False)
    sync_to_disk()
    print(f"translated {len(files)} image(s) -> {out}")
    return out
