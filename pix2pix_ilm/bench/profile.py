"""``bench --profile``: where one training step's time goes, per operation class, and its convolution FLOPs.

One job (:class:`ProfileContestant`) runs in a ``bench --worker`` process like every measurement: the step's
unprofiled time, then ``--iters`` steps under ``torch.profiler`` with module hooks that name each module's
ops, then the real data path's time per batch. The attribution rules, the FLOP formula and what "% of peak"
means: docs/bench.md ("Per-operation profile"); the table and the figure: ``profile_report.py``.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.autograd import DeviceType
from torch.autograd.profiler_util import FunctionEvent
from torch.profiler import ProfilerActivity, profile, record_function

from pix2pix_ilm.bench.conv_layers import measure_layers
from pix2pix_ilm.bench.flops import conv_flops
from pix2pix_ilm.bench.interleave import summarize_blocks
from pix2pix_ilm.bench.options import parse_path
from pix2pix_ilm.bench.probes import sync
from pix2pix_ilm.bench.worker import TrainContestant, TrainStep, _write_inference_inputs
from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.models.losses import GANLoss
from pix2pix_ilm.models.norms import ILMNorm

#: Operation classes of the forward and the backward pass, in table order; each has a "fwd" and a "bwd" row.
CLASSES = ("conv", "norm_in", "norm_ilm", "norm_other", "activation", "concat_copy", "loss", "other")
ADAM = "adam"  # torch.optim's own ranges: Optimizer.step#Adam.step and Optimizer.zero_grad#Adam.zero_grad
OUTSIDE = "outside_ops"  # time of the step in no op: Python and framework code between the ops
UNATTRIBUTED = "unattributed"  # wall time of the step less every row above (profiler gaps, idle device)
DATA = "data"  # the real data path per batch, measured apart from the step
RANGE = "p2p::"  # the hooks' profiler ranges are "p2p::<class>::<module type>"
STEP_RANGE = "p2p::step"
#: the profiler's own range around each scheduled step ("ProfilerStep#N"): its time is not the step's
PROFILER_STEP = "ProfilerStep"
EVALUATE = "autograd::engine::evaluate_function: "  # one backward node, with its forward op's sequence_nr
OPTIMIZER = "Optimizer."
VIEW_COPY_NODES = ("torch::autograd::CopySlices", "AsStridedBackward")
#: Ops that have a class when no classified module encloses them (the outermost such caller counts).
OP_CLASSES = {
    "aten::cat": "concat_copy",
    "aten::stack": "concat_copy",
    "aten::copy_": "concat_copy",
    "aten::clone": "concat_copy",
    "aten::_to_copy": "concat_copy",
    "aten::l1_loss": "loss",
    "aten::binary_cross_entropy_with_logits": "loss",
    "aten::mse_loss": "loss",
    "aten::convolution": "conv",
}
#: (crop size → load size) of the Table 6 presets; other sizes scale the paper's 286/256
PRESET_LOAD_SIZES = {256: 286, 128: 142}
FACADES_HALF = 256  # facades files are 512x256: A|B halves of 256x256


def module_class(module: nn.Module) -> str | None:
    """The operation class of a module's whole forward (ops inside it and their backward), or None."""
    if isinstance(module, nn.modules.conv._ConvNd):  # the matrix-product route of cpu_speed.py included
        return "conv"
    if isinstance(module, ILMNorm):  # meta-network and standardisation together
        return "norm_ilm"
    if isinstance(module, nn.InstanceNorm2d):
        return "norm_in"
    if isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)):
        return "norm_other"
    if isinstance(module, (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.modules.dropout._DropoutNd)):
        return "activation"
    if isinstance(module, (GANLoss, nn.modules.loss._Loss)):
        return "loss"
    return None


def classified_modules(roots: Iterable[nn.Module]) -> Iterable[tuple[nn.Module, str]]:
    """Every module of ``roots`` with a class, outermost first; nothing inside a classified module (ILM's
    linear layers belong to ILM)."""
    seen: set[int] = set()
    stack = list(roots)[::-1]
    while stack:
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        cls = module_class(module)
        if cls is not None:
            yield module, cls
        else:
            stack.extend(list(module.children())[::-1])


class ModuleRanges:
    """Forward hooks on the classified modules of ``roots`` while in use: every call runs inside a profiler
    range ``p2p::<class>::<type>``, and every convolution call adds its FLOPs to :attr:`conv_flops`."""

    def __init__(self, roots: Iterable[nn.Module]) -> None:
        self.roots = list(roots)
        self.conv_flops = {"fwd": 0, "bwd": 0}
        self._open: dict[int, list[record_function]] = defaultdict(list)
        self._handles: list[Any] = []

    def __enter__(self) -> ModuleRanges:
        for module, cls in classified_modules(self.roots):
            self._handles.append(
                module.register_forward_pre_hook(self._opener(f"{RANGE}{cls}::{type(module).__name__}"))
            )
            self._handles.append(module.register_forward_hook(self._closer(cls), always_call=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _opener(self, name: str) -> Callable:
        def hook(module: nn.Module, inputs: Any) -> None:
            scope = record_function(name)
            scope.__enter__()
            self._open[id(module)].append(scope)

        return hook

    def _closer(self, cls: str) -> Callable:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            self._open[id(module)].pop().__exit__(None, None, None)
            if cls == "conv" and inputs and isinstance(output, torch.Tensor):
                forward, backward = conv_flops(module, inputs[0], output)
                self.conv_flops["fwd"] += forward
                self.conv_flops["bwd"] += backward

        return hook


def _place(event: FunctionEvent) -> tuple[str, Any, str]:
    """Where an event's self time goes, from its callers: ``("bwd", (node keys, innermost first), node name)``,
    ``("fwd", class, op name)``, ``(ADAM, None, name)`` or ``(OUTSIDE, None, name)``."""
    module_cls = op_cls = None
    node_keys = []
    node: FunctionEvent | None = event
    while node is not None:
        name = node.name
        if node.sequence_nr >= 0 and not name.startswith("aten::"):  # a backward node (or a forward range)
            node_keys.append((node.fwd_thread, node.sequence_nr))
        if name.startswith(EVALUATE):
            return "bwd", node_keys, name[len(EVALUATE) :]
        if name.startswith(OPTIMIZER):
            return ADAM, None, name
        if name.startswith(RANGE) and name != STEP_RANGE and module_cls is None:
            module_cls = name.split("::")[1]
        op_cls = OP_CLASSES.get(name, op_cls)  # walking outwards: the outermost classified op wins
        node = node.cpu_parent
    if event.name == STEP_RANGE:
        return OUTSIDE, None, event.name
    return "fwd", module_cls or op_cls or "other", event.name


def _backward_class(node_keys: list, node_name: str, forward_class: dict) -> str:
    """The class of a backward op: that of the forward op behind its innermost known autograd node. Nodes with
    no forward op are autograd's own: the copies of an in-place op on a view (CopySlices, which runs the
    in-place op's own node inside it, and AsStridedBackward), or AccumulateGrad (other)."""
    for key in node_keys:
        if key in forward_class:
            return forward_class[key]
    return "concat_copy" if node_name.startswith(VIEW_COPY_NODES) else "other"


def attribute(
    events: Iterable[FunctionEvent], self_time: Callable[[FunctionEvent], float]
) -> tuple[Counter, Counter]:
    """Self time summed per row (``"<class> fwd"``, ``"<class> bwd"``, adam, outside_ops) and, for the
    ``other`` rows, per op (forward) or backward node name.

    A backward op belongs to the class of the forward op that created its autograd node: the node's
    ``sequence_nr`` is the forward op's. Ops that share a number without creating a node start before the op
    that creates it, so the last op to start with a number decides.
    """
    cpu = sorted(
        (e for e in events if e.device_type == DeviceType.CPU and not e.name.startswith(PROFILER_STEP)),
        key=lambda e: e.time_range.start,
    )
    places = [_place(e) for e in cpu]
    forward_class = {}
    for event, (kind, cls, _) in zip(cpu, places, strict=True):
        if kind == "fwd" and event.sequence_nr >= 0:
            forward_class[(event.thread, event.sequence_nr)] = cls
    rows: Counter = Counter()
    other: Counter = Counter()
    for event, (kind, value, label) in zip(cpu, places, strict=True):
        row = kind
        if kind == "bwd":
            row = f"{_backward_class(value, label, forward_class)} bwd"
        elif kind == "fwd":
            row = f"{value} fwd"
        rows[row] += self_time(event)
        if row.startswith("other "):
            other[f"{label} ({row.split()[1]})"] += self_time(event)
    return rows, other


def _self_time(device: torch.device) -> Callable[[FunctionEvent], float]:
    """µs of an event that count: its own CPU time on CPU, its own kernels' time on CUDA."""
    if device.type == "cuda":
        return lambda e: getattr(e, "self_device_time_total", None) or e.self_cuda_time_total
    return lambda e: e.self_cpu_time_total


def profile_steps(step: TrainStep, steps: int, device: torch.device) -> dict[str, Any]:
    """``steps`` calls of ``step`` under ``torch.profiler`` with :class:`ModuleRanges`, after one profiled call
    that is discarded (the profiler's and the hooks' first-call costs): ms per step per row, the wall time per
    step, the ``other`` rows' biggest ops, and the convolution GFLOP per step."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    schedule = torch.profiler.schedule(wait=0, warmup=1, active=steps, repeat=1)
    wall = 0.0
    with ModuleRanges(step.modules) as ranges, profile(activities=activities, schedule=schedule) as prof:
        for n in range(1 + steps):
            if n == 1:
                ranges.conv_flops = {"fwd": 0, "bwd": 0}
            sync(device)
            start = time.perf_counter()
            with record_function(STEP_RANGE):
                step.run()
                sync(device)
            wall += (time.perf_counter() - start) if n else 0.0
            prof.step()
    rows_us, other_us = attribute(prof.events(), _self_time(device))
    wall_ms = 1000 * wall / steps
    rows = {row: us / 1000 / steps for row, us in rows_us.items()}
    rows[UNATTRIBUTED] = wall_ms - sum(rows.values())
    return {
        "profiled_steps": steps,
        "timer": "self device time" if device.type == "cuda" else "self CPU time",
        "wall_ms": wall_ms,
        "rows": rows,
        "other_ops": {name: us / 1000 / steps for name, us in other_us.most_common(8)},
        "conv_gflop": {phase: flops / steps / 1e9 for phase, flops in ranges.conv_flops.items()},
    }


def data_loading(config: TrainConfig, batches: int, device: torch.device) -> dict[str, Any]:
    """ms per batch of the real training data path (``epoch_batches``: DataLoader, AlignedDataset decode,
    resize, random crop and flip, to tensor, collate; pinned memory on CUDA) on synthetic facades-like JPEGs;
    one batch of warm-up."""
    from pix2pix_ilm.training.distributed import Distributed
    from pix2pix_ilm.training.loop import epoch_batches, training_dataset
    from pix2pix_ilm.training.state import Counters

    half = max(config.crop_size, FACADES_HALF)
    load_size = PRESET_LOAD_SIZES.get(config.crop_size, config.crop_size * 286 // 256)
    with tempfile.TemporaryDirectory(prefix="pix2pix-ilm-profile-") as tmp:
        _write_inference_inputs(Path(tmp) / "train", (batches + 1) * config.batch_size, half)
        data_config = dataclasses.replace(config, dataroot=tmp, phase="train", load_size=load_size)
        dataset = training_dataset(data_config)
        loader = epoch_batches(dataset, data_config, Counters(), Distributed(0, 1, device))
        next(loader)
        start = time.perf_counter()
        count = sum(1 for _ in loader)
        elapsed = time.perf_counter() - start
    return {
        "data_ms": 1000 * elapsed / count,
        "data_batches": count,
        "data_input": f"{2 * half}x{half} JPEG, load {load_size}, crop {config.crop_size}, "
        f"{config.num_workers} workers",
    }


class ProfileContestant(TrainContestant):
    """A profile job: its one block is the unprofiled step time (median of ``--repeats`` blocks of ``--iters``
    steps), the profiled rows (:func:`profile_steps`, ``--iters`` steps), the data path (:func:`data_loading`)
    and every convolution call timed alone (conv_layers.py)."""

    def __init__(self, job: dict) -> None:
        if parse_path(job["path"])[0].get("compile"):
            raise UsageError("--profile cannot attribute a compiled step (its modules run as one graph)")
        super().__init__(job)

    def block(self) -> dict:
        timed = []
        for _ in range(
            self.options["repeats"]
        ):  # a loop: super() does not work in a comprehension before 3.12
            timed.append(super().block())
        timing = summarize_blocks(timed, self.options["iters"])
        with self._threads():
            result = profile_steps(self.step, self.options["iters"], self.device)
            result |= data_loading(self.config, max(2, self.options["iters"]), self.device)
            # train_step lists G and D first
            networks = dict(zip(("G", "D"), self.step.modules[:2], strict=True))
            result["conv_layers"] = measure_layers(self.step.run, networks, self.device)
            threads = torch.get_num_threads()
        return result | {
            "step_ms": 1000 / timing["median"],
            "step_ms_range": [1000 / timing["max"], 1000 / timing["min"]],
            "cpu_wait": timing["cpu_wait"],
            "threads": threads,
        }
