"""Progress of long loops (training, test, Table 6): a bar on a terminal, plain lines in a log.

tqdm draws nothing when stderr is not a terminal, so a run under nohup, in CI or with stderr sent to a file
showed nothing until it finished. :class:`Progress` keeps tqdm's bar on a terminal and otherwise writes one
line every ``interval`` seconds (and one at the end of a loop that wrote any) with the count, the caller's status, the rate and ETA.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar

T = TypeVar("T")
DEFAULT_INTERVAL = 30.0


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
    seconds = int(round(max(seconds, 0)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Count steps of a loop of ``total`` steps and show them on ``stream`` (default stderr).

    On a terminal this is a tqdm bar; elsewhere one line per ``interval`` seconds, e.g.
    ``[train facades] 1200/80000 it (1.5%) epoch 3/200 G_GAN 0.712 | 4.20 it/s, ETA 5:12:03``.
    ``enabled=False`` shows nothing. ``clock`` is for tests.
    """

    def __init__(
        self,
        total: int,
        label: str,
        *,
        initial: int = 0,
        unit: str = "it",
        interval: float = DEFAULT_INTERVAL,
        enabled: bool = True,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"the progress interval must be > 0 seconds, got {interval}")
        self.total, self.label, self.unit = int(total), label, unit
        self.count = self._start_count = int(initial)
        self.interval = float(interval)
        self.stream = sys.stderr if stream is None else stream
        self._clock = clock
        self._started = self._last_line = clock()
        self._printed_count = self.count
        self._status = ""
        self._bar: Any = None
        self.enabled = enabled
        self.lines_written = 0
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
            self._status = status
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            if status:
                self._bar.set_postfix_str(status, refresh=False)
            return
        now = self._clock()
        if now - self._last_line >= self.interval:
            self._write_line(now)

    def set_status(self, status: str) -> None:
        """Show ``status`` (e.g. the epoch and losses) with the count from now on."""
        self._status = status
        if self._bar is not None:
            self._bar.set_postfix_str(status, refresh=False)

    def iterate(self, items: Iterable[T], status: Callable[[T], str] | None = None) -> Iterator[T]:
        """Yield ``items``, counting one step after each (``status(item)`` as the status line)."""
        for item in items:
            yield item
            self.update(1, status(item) if status is not None else "")

    def line(self, now: float | None = None) -> str:
        """The plain progress line for the current count."""
        now = self._clock() if now is None else now
        elapsed = now - self._started
        done = self.count - self._start_count
        rate = done / elapsed if elapsed > 0 else math.nan
        parts = [f"[{self.label}] {self.count}/{self.total} {self.unit}"]
        if self.total > 0:
            parts[0] += f" ({100.0 * self.count / self.total:.1f}%)"
        if self._status:
            parts.append(self._status)
        speed = f"{rate:.2f} {self.unit}/s" if math.isfinite(rate) else f"? {self.unit}/s"
        remaining = (self.total - self.count) / rate if rate > 0 else math.nan
        return (
            " ".join(parts)
            + f" | {speed}, elapsed {format_duration(elapsed)}, ETA {format_duration(remaining)}"
        )

    def _write_line(self, now: float) -> None:
        print(self.line(now), file=self.stream, flush=True)
        self._last_line = now
        self._printed_count = self.count
        self.lines_written += 1

    def close(self) -> None:
        """End the bar, or write a last line when steps were counted since the last line (none for a loop
        shorter than one interval: its caller's own summary says enough)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self.lines_written and self.count != self._printed_count:
            self._write_line(self._clock())
        self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
