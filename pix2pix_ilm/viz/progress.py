"""Progress of long loops (training, test, Table 6): tqdm's bar on a terminal; elsewhere (nohup, CI, a log
file), where tqdm shows nothing, one plain line every ``interval`` seconds."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar

T = TypeVar("T")


def is_terminal(stream: IO[str]) -> bool:
    """Whether ``stream`` is a terminal that reports a width (a terminal of 0 columns cannot show a bar)."""
    try:
        return stream.isatty() and os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, OSError, ValueError):
        return False


def format_duration(seconds: float) -> str:
    """``3725`` → ``1:02:05``; ``65`` → ``1:05``."""
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(max(seconds, 0))), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Count the steps of a loop of ``total`` steps on ``stream`` (default stderr), e.g.
    ``[train facades] 1200/80000 it (1.5%) epoch 3/200 G_GAN 0.712 | 4.20 it/s, elapsed 4:45, ETA 5:12:03``;
    a last line at :meth:`close` if steps were counted since one was written. ``clock`` is for tests."""

    def __init__(
        self,
        total: int,
        label: str,
        *,
        initial: int = 0,
        unit: str = "it",
        interval: float = 30.0,
        enabled: bool = True,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"the progress interval must be > 0 seconds, got {interval}")
        self.total, self.label, self.unit, self.interval = int(total), label, unit, float(interval)
        self.count = self._start_count = self._printed_count = int(initial)
        self.stream = sys.stderr if stream is None else stream
        self._clock = clock
        self._started = self._last_line = clock()
        self._status = ""
        self._wrote = False
        self.enabled = enabled
        self._bar: Any = None
        if enabled and is_terminal(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total,
                initial=self.count,
                unit=unit,
                desc=label,
                dynamic_ncols=True,
                file=self.stream,
            )

    def update(self, n: int = 1, status: str = "") -> None:
        """Count ``n`` more steps; ``status`` (e.g. the epoch and losses) is shown with the count."""
        self.count += n
        if status:
            self.set_status(status)
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and self._clock() - self._last_line >= self.interval:
            self._write_line()

    def set_status(self, status: str) -> None:
        """Show ``status`` with the count from now on."""
        self._status = status
        if self._bar is not None:
            self._bar.set_postfix_str(status, refresh=False)

    def iterate(self, items: Iterable[T]) -> Iterator[T]:
        """Yield ``items``, counting one step after each."""
        for item in items:
            yield item
            self.update()

    def _write_line(self) -> None:
        now = self._clock()
        elapsed = now - self._started
        rate = (self.count - self._start_count) / elapsed if elapsed > 0 else math.nan
        line = f"[{self.label}] {self.count}/{self.total} {self.unit}"
        if self.total > 0:
            line += f" ({100.0 * self.count / self.total:.1f}%)"
        speed = f"{rate:.2f}" if math.isfinite(rate) else "?"
        remaining = (self.total - self.count) / rate if rate > 0 else math.nan
        print(
            f"{line}{' ' + self._status if self._status else ''} | {speed} {self.unit}/s, "
            f"elapsed {format_duration(elapsed)}, ETA {format_duration(remaining)}",
            file=self.stream,
            flush=True,
        )
        self._last_line, self._printed_count, self._wrote = now, self.count, True

    def close(self) -> None:
        """End the bar, or write the last line (none for a loop shorter than one interval: its caller's own
        summary says enough)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self._wrote and self.count != self._printed_count:
            self._write_line()
        self.enabled = False
