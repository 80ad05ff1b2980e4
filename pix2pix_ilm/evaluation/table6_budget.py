"""What Table 6 may spend: ``--budget-min`` (measure the first runs' speed, project the whole table, then keep
the schedule, fit it with fewer epochs, or refuse with the projection) and the disk its checkpoints need
(docs/table6.md)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.evaluation.table6_jobs import run_finished, say

PLAN_FILE = "budget_plan.json"


def scoring_seconds(run: TrainConfig, lpips_model: Any, device: str) -> tuple[float, float]:
    """Measured with ``run``'s generator (untrained weights cost the same): seconds per image to translate,
    write, read back and score four images (RMSE, SSIM, LPIPS), and per result folder to draw its score plot.
    The second of two passes counts: the first pays for one-time set-up (a GPU's kernel selection)."""
    import numpy as np
    import torch
    from PIL import Image

    from pix2pix_ilm.device import resolve_device
    from pix2pix_ilm.evaluation.metrics import lpips_scorer, rmse, ssim
    from pix2pix_ilm.models.networks import generator_from_config
    from pix2pix_ilm.viz.plots import render_score_strips, save_png

    target = resolve_device(device)
    generator = generator_from_config(run).to(target).eval()
    images = torch.rand(4, run.input_nc, run.crop_size, run.crop_size, device=target) * 2 - 1
    scorers = {"rmse": rmse, "ssim": ssim, "lpips": lpips_scorer(lpips_model, target)}

    def one_pass(folder: Path) -> tuple[float, float]:
        started = time.perf_counter()
        fake = generator(images).float().cpu().permute(0, 2, 3, 1).numpy()
        for i, array in enumerate(((fake + 1) * 127.5).clip(0, 255).astype(np.uint8)):
            Image.fromarray(array.squeeze()).save(folder / f"{i}.png")
        read = np.stack([np.asarray(Image.open(folder / f"{i}.png").convert("RGB")) for i in range(4)])
        scores = {name: scorer(read, read) for name, scorer in scorers.items()}
        per_image = (time.perf_counter() - started) / 4
        started = time.perf_counter()
        document = {str(i): {name: float(values[i]) for name, values in scores.items()} for i in range(4)}
        save_png(render_score_strips(document, list(scores), {}), folder / "scores.png", fsync=False)
        return per_image, time.perf_counter() - started

    with torch.inference_mode(), tempfile.TemporaryDirectory() as folder:
        one_pass(Path(folder))
        return one_pass(Path(folder))


@dataclass(frozen=True)
class Measured:
    """One training process's loss log: where it is and how fast it goes."""

    iteration: int
    steps_per_epoch: float
    rate: float  # steps per second, between its first and last log entries
    startup: float  # seconds from its start to its first step


def measure(run: TrainConfig, started: float) -> Measured | None:
    """From ``loss_log.jsonl``, once it holds two entries of this process (None before)."""
    path = run.run_dir / "loss_log.jsonl"
    try:
        entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        written = os.path.getmtime(path)
    except (OSError, ValueError):
        return None
    if len(entries) < 2 or entries[-1]["time"] <= entries[0]["time"]:
        return None
    first, last = entries[0], entries[-1]
    rate = (last["iteration"] - first["iteration"]) / (last["time"] - first["time"])
    return Measured(
        iteration=last["iteration"],
        steps_per_epoch=last["iteration"] / last["epoch_progress"],
        rate=rate,
        startup=max(0.0, written - started - last["time"]),
    )


def project(
    active: list[Measured], pending: int, jobs: int, epochs: int, rate: float, startup: float, restart: bool
) -> float:
    """Seconds until the last run has trained ``epochs``: the active runs finish theirs (``restart``: after a
    new start-up), then the ``pending`` ones take the first free of ``jobs`` slots (a start-up and their steps
    at ``rate`` each)."""
    per_epoch = sum(m.steps_per_epoch for m in active) / len(active)
    again = startup if restart else 0.0
    slots = [again + max(0.0, (epochs * m.steps_per_epoch - m.iteration) / rate) for m in active]
    slots += [0.0] * (jobs - len(slots))
    for _ in range(pending):
        slots.sort()
        slots[0] += startup + epochs * per_epoch / rate
    return max(slots)


class BudgetPlanner:
    """Called while the runs train; once the first ones have run ``window`` seconds it decides, once: the
    schedule fits (None), or the runs with fewer epochs, or a :class:`UsageError` with the projection. A tenth
    of the budget is kept for what is not measured (stopping and restarting runs, the report)."""

    def __init__(
        self, minutes: float, started: float, runs: list[TrainConfig], jobs: int, scoring: float
    ) -> None:
        self.budget, self.started, self.scoring = 60 * minutes, started, scoring
        self.runs, self.jobs = runs, jobs
        self.reserve = 0.1 * self.budget  # for what is not measured: stopping and restarting runs, the report
        self.window = min(60.0, max(10.0, 0.1 * self.budget))
        self.plan: dict[str, Any] | None = None

    def __call__(self, active: list[tuple[TrainConfig, float]], now: float) -> list[TrainConfig] | None:
        if self.plan is not None or not active or now - min(s for _, s in active) < self.window:
            return None
        measured = [measure(run, started) for run, started in active]
        if any(m is None for m in measured):
            return None
        done = [m for m in measured if m is not None]
        rate = sum(m.rate for m in done) / len(done)
        startup = sum(m.startup for m in done) / len(done)
        pending = len(self.runs) - len(active) - sum(run_finished(run) for run in self.runs)
        first = self.runs[0]
        epochs = first.n_epochs + first.n_epochs_decay
        elapsed = now - self.started
        available = self.budget - self.reserve - elapsed - self.scoring
        projected = {
            e: project(done, pending, self.jobs, e, rate, startup, restart=e < epochs)
            for e in range(1, epochs + 1)
        }
        begun = max(math.ceil(m.iteration / m.steps_per_epoch) for m in done)
        fitting = [e for e in range(max(1, begun), epochs + 1) if projected[e] <= available]
        minutes = (elapsed + projected[epochs] + self.scoring) / 60
        say(
            f"budget: {rate:.2f} steps/s per run with {len(active)} at a time, start-up {startup:.0f} s, "
            f"scoring {self.scoring / 60:.1f} min; {epochs} epochs project {minutes:.1f} of {self.budget / 60:g} min"
        )
        if not fitting:
            least = max(1, begun)
            raise UsageError(
                f"--budget-min {self.budget / 60:g} is too short: {epochs} epochs project {minutes:.1f} min "
                f"and even {least} epoch(s) {(elapsed + projected[least] + self.scoring) / 60:.1f} min "
                f"({rate:.2f} steps/s per run, {self.jobs} at a time); the runs saved latest.pt"
            )
        fitted = max(fitting)
        n_epochs = min(fitted, max(begun, math.ceil(fitted * first.n_epochs / epochs)))
        self.plan = {
            "budget_min": self.budget / 60,
            "steps_per_s_per_run": round(rate, 3),
            "runs_at_a_time": len(active),
            "requested_epochs": [first.n_epochs, first.n_epochs_decay],
            "epochs": [n_epochs, fitted - n_epochs],
            "projected_min": round((elapsed + projected[fitted] + self.scoring) / 60, 2),
        }
        if fitted == epochs:
            say(f"budget: the schedule fits ({self.plan['projected_min']} min projected)")
            return None
        say(
            f"budget: fitted to {n_epochs} + {fitted - n_epochs} epochs instead of {first.n_epochs} + "
            f"{first.n_epochs_decay} ({self.plan['projected_min']} min projected); the runs continue from latest.pt"
        )
        return [
            dataclasses.replace(r, n_epochs=n_epochs, n_epochs_decay=fitted - n_epochs) for r in self.runs
        ]


def check_disk_space(runs: list[TrainConfig], out: Path) -> None:
    """Refuse before training when the runs' checkpoints would not fit on ``out``'s disk: each keeps
    ``latest.pt``, its kept epochs and, while saving, one temporary copy (G, D and Adam's two moments)."""
    import torch

    from pix2pix_ilm.models.networks import discriminator_from_config, generator_from_config

    need = 0
    for run in runs:
        with torch.device("meta"):
            parameters = sum(
                p.numel()
                for net in (generator_from_config(run), discriminator_from_config(run))
                for p in net.parameters()
            )
        kept = run.total_epochs // run.save_epoch_freq if run.save_epoch_freq else 1
        need += 3 * 4 * parameters * (2 + kept)
    folder = next(p for p in (out, *out.parents) if p.exists())
    free = shutil.disk_usage(folder).free
    if need > free:
        raise UsageError(
            f"the runs' checkpoints need about {_size(need)} and {folder} has {_size(free)} free; "
            "free some space, choose another --out, or keep fewer epochs (--set save_epoch_freq=0)"
        )


def _size(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.2g} MiB"
