"""What a run shows while it trains: progress, ``loss_log.jsonl``, visdom previews, the run's web page,
TensorBoard event files. Each is a :class:`ReportSink`; :class:`Reporter` decides when, and is the only reader
of the losses on the device."""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.training.distributed import Distributed
from pix2pix_ilm.training.state import Counters
from pix2pix_ilm.training.stopping import TrainingDiverged

Visuals = dict[str, torch.Tensor]


class ReportSink:
    """One output of the reporter; every hook is optional. Main process only."""

    def step(self, counters: Counters) -> None:
        """After every step (must not read tensors: that would synchronise with the device)."""

    def log(self, entry: dict[str, Any]) -> None:
        """A ``loss_log.jsonl`` entry: iteration, epoch, epoch_progress, lr, time and the losses."""

    def preview(self, epoch: int, epoch_progress: float, visuals: Visuals, losses: dict[str, float]) -> None:
        """The latest real_A / fake_B / real_B and losses, every ``--display-freq`` steps."""

    def epoch_end(self, epoch: int, visuals: Visuals) -> None:
        """After each epoch (``visuals`` is empty when the run resumed right at an epoch's end)."""

    def close(self) -> None:
        """The run ended (finished, stopped or failed)."""


class ProgressLines(ReportSink):
    """The count with the live epoch and the losses of the last logged step, marked with that step
    (``epoch 3/200 G_GAN 0.712 G_L1 35.2 D_real 0.69 D_fake 0.70 @1200``)."""

    def __init__(self, config: TrainConfig, total: int, initial: int) -> None:
        from pix2pix_ilm.viz.progress import Progress

        self.total_epochs, self.epoch, self.losses = config.total_epochs, 0, ""
        self.progress = Progress(
            total, f"train {config.name}", initial=initial, interval=config.progress_interval
        )

    def step(self, counters: Counters) -> None:
        if counters.epoch != self.epoch:
            self.epoch = counters.epoch
            self._show()
        self.progress.update(1)

    def log(self, entry: dict[str, Any]) -> None:
        losses = " ".join(f"{k} {v:.3f}" for k, v in entry.items() if k not in LOG_FIELDS)
        self.losses = f" {losses} @{entry['iteration']}"
        self._show()

    def _show(self) -> None:
        self.progress.set_status(
            f"epoch {min(self.epoch, self.total_epochs)}/{self.total_epochs}{self.losses}"
        )

    def close(self) -> None:
        self.progress.close()


class LossLog(ReportSink):
    def __init__(self, path: Path) -> None:
        self.path = path

    def log(self, entry: dict[str, Any]) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(entry) + "\n")


class VisdomPreviews(ReportSink):
    def __init__(self, config: TrainConfig) -> None:
        from pix2pix_ilm.viz.display import VisdomDisplay

        self.display = VisdomDisplay(
            server=config.display_server, port=config.display_port, env=config.display_env or config.name
        )

    def preview(self, epoch: int, epoch_progress: float, visuals: Visuals, losses: dict[str, float]) -> None:
        self.display.show_images(visuals, epoch=epoch)
        self.display.plot_losses(epoch_progress, losses)

    def epoch_end(self, epoch: int, visuals: Visuals) -> None:
        if visuals:
            self.display.show_images(visuals, epoch=epoch)


class WebPage(ReportSink):
    """``web/index.html`` with ``web/loss.png``; it stops reloading itself once the run has ended."""

    def __init__(self, config: TrainConfig, counters: Counters) -> None:
        from pix2pix_ilm.viz.pages import TrainingPages

        self.counters = counters  # the loop's own, updated in place
        self.pages = TrainingPages(
            config.run_dir / "web",
            config.name,
            total_epochs=config.total_epochs,
            loss_log=config.run_dir / "loss_log.jsonl",
            log_scale=config.loss_plot == "log",
        )

    def preview(self, epoch: int, epoch_progress: float, visuals: Visuals, losses: dict[str, float]) -> None:
        self.pages.update(epoch, visuals, iteration=self.counters.iteration)

    def epoch_end(self, epoch: int, visuals: Visuals) -> None:
        if visuals:
            self.pages.update(epoch, visuals, iteration=self.counters.iteration)

    def close(self) -> None:
        done, total = self.counters.epoch - 1, self.pages.total_epochs
        self.pages.finish(done, self.counters.iteration, stopped=bool(total) and done < total)


class TensorBoard(ReportSink):
    """Event files in ``tensorboard/`` (``--tensorboard``): ``loss/<name>`` and ``lr`` with each log entry, one
    real_A | fake_B | real_B image (the batch's first sample) with each preview; the step is the iteration."""

    def __init__(self, config: TrainConfig, counters: Counters) -> None:
        from torch.utils.tensorboard import SummaryWriter  # optional: pix2pix-ilm[tensorboard]

        self.counters = counters  # the loop's own, updated in place
        # Resumed: TensorBoard hides what a crashed run wrote after its checkpoint, as loss_log.jsonl drops it.
        purge = counters.iteration + 1 if counters.iteration else None
        self.writer = SummaryWriter(log_dir=str(config.run_dir / "tensorboard"), purge_step=purge)

    def log(self, entry: dict[str, Any]) -> None:
        step = entry["iteration"]
        self.writer.add_scalar("lr", entry["lr"], step)
        for name, value in entry.items():
            if name not in LOG_FIELDS:
                self.writer.add_scalar(f"loss/{name}", value, step)

    def preview(self, epoch: int, epoch_progress: float, visuals: Visuals, losses: dict[str, float]) -> None:
        from pix2pix_ilm.viz.images import tensor_to_image

        row = np.concatenate([tensor_to_image(visuals[k][0]) for k in PREVIEW_KEYS], axis=1)
        self.writer.add_image(PREVIEW_TAG, row, self.counters.iteration, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()  # flushes


LOG_FIELDS = ("iteration", "epoch", "epoch_progress", "lr", "time")
PREVIEW_KEYS = ("real_A", "fake_B", "real_B")
PREVIEW_TAG = "images/" + "|".join(PREVIEW_KEYS)


def default_sinks(config: TrainConfig, total_iterations: int, counters: Counters) -> list[ReportSink]:
    """The outputs the options ask for (main process)."""
    return [
        *([] if config.no_progress else [ProgressLines(config, total_iterations, counters.iteration)]),
        LossLog(config.run_dir / "loss_log.jsonl"),
        *([] if config.no_display else [VisdomPreviews(config)]),
        *([] if config.no_html else [WebPage(config, counters)]),
        *([TensorBoard(config, counters)] if config.tensorboard else []),
    ]


class Reporter:
    """Reads the losses when something is due, checks them (all processes agree), and feeds the sinks."""

    def __init__(
        self, config: TrainConfig, dist: Distributed, batches_per_epoch: int, counters: Counters
    ) -> None:
        self.config, self.dist, self.batches_per_epoch = config, dist, batches_per_epoch
        total = batches_per_epoch * config.total_epochs
        self.sinks = default_sinks(config, total, counters) if dist.is_main else []
        self.start_time = time.time()
        self.first_iteration = counters.iteration + 1  # logged too: losses are shown from the start

    def step(self, counters: Counters, lr: float, losses: dict[str, torch.Tensor], visuals: Visuals) -> None:
        self._report(counters, lr, losses, visuals)
        self._each("step", counters)

    def _each(self, hook: str, *args: Any) -> None:
        """Call ``hook`` of every sink. A sink that cannot write (a full disk, a folder made read-only) is
        dropped with one warning: training goes on, and the checkpoints say whether the disk still takes them."""
        for sink in list(self.sinks):
            try:
                getattr(sink, hook)(*args)
            except OSError as err:
                self.sinks.remove(sink)
                warnings.warn(
                    f"{type(sink).__name__} stopped: {err}; training goes on without it", RuntimeWarning, 2
                )

    def _report(
        self, counters: Counters, lr: float, losses: dict[str, torch.Tensor], visuals: Visuals
    ) -> None:
        log_due = (
            counters.iteration % self.config.print_freq == 0
            or counters.batches_done == self.batches_per_epoch
            or counters.iteration == self.first_iteration
        )
        preview_due = counters.iteration % self.config.display_freq == 0
        if not (log_due or preview_due):
            return
        values = self._checked_values(losses, counters)  # the only host/device synchronisation of a step
        epoch_progress = counters.epoch - 1 + counters.batches_done / self.batches_per_epoch
        entry = {
            "iteration": counters.iteration,
            "epoch": counters.epoch,
            "epoch_progress": round(epoch_progress, 6),
            "lr": lr,
            "time": round(time.time() - self.start_time, 3),
            **values,
        }
        if log_due:
            self._each("log", entry)
        if preview_due:
            self._each("preview", counters.epoch, epoch_progress, visuals, values)

    def _checked_values(self, losses: dict[str, torch.Tensor], counters: Counters) -> dict[str, float]:
        values = {k: float(v) for k, v in losses.items()}
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if self.dist.agreed_max(int(bool(bad))):
            found = ", ".join(f"{k}={values[k]}" for k in bad) or "in another process"
            raise TrainingDiverged(
                f"non-finite loss {found} at iteration {counters.iteration} (epoch {counters.epoch}); the last "
                f"good checkpoint {self.config.run_dir / 'latest.pt'} is kept — try a lower --lr or --precision fp32"
            )
        return values

    def epoch_end(self, epoch: int, visuals: Visuals) -> None:
        self._each("epoch_end", epoch, visuals)

    def close(self) -> None:
        self._each("close")
