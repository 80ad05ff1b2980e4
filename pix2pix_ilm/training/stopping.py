"""How a run stops early: a signal (finish the step, save, exit 128 + signal) or divergence (NaN, exit 3)."""

from __future__ import annotations

import contextlib
import signal
from types import FrameType

from pix2pix_ilm.training.distributed import Distributed

DIVERGED_EXIT_CODE = 3


class TrainingStopped(Exception):
    """Training was stopped by SIGINT / SIGTERM after saving ``latest.pt``; callers must not go on."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"stopped by {signal_name}")
        self.signal_name = signal_name
        self.exit_code = 128 + int(getattr(signal.Signals, signal_name))


class TrainingDiverged(Exception):
    """A loss or a weight became NaN or infinite: not a usage mistake; the last good checkpoint is kept."""

    exit_code = DIVERGED_EXIT_CODE


class StopRequest:
    """While active, SIGINT / SIGTERM ask the loop to finish the current step, save and stop; a second one
    aborts at once. Under torchrun a signal may reach one process only, so after every step all processes
    agree on whether any of them got one: they stop together, after the same step."""

    def __init__(self, dist: Distributed) -> None:
        self.dist = dist
        self.received = 0  # signal number seen by this process
        self.signal_name: str | None = None  # set once the processes agreed to stop
        self._previous: dict[int, object] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.received:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not in the main thread
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)  # type: ignore[arg-type]

    def requested(self) -> bool:
        """Whether this or any other process got a signal (a collective call under torchrun)."""
        signum = self.dist.agreed_max(self.received)
        if signum:
            self.signal_name = signal.Signals(signum).name
        return bool(signum)
