"""Progress lines without a terminal: one per interval, with count, status, rate and ETA."""

from __future__ import annotations

import io

import pytest

from pix2pix_ilm.viz.progress import Progress, format_duration, is_terminal


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return 2


def test_one_line_per_interval_without_a_terminal():
    clock, stream = _Clock(), io.StringIO()
    progress = Progress(200, "train run", interval=30, stream=stream, clock=clock)
    for step in range(100):  # one step per second
        clock.now += 1.0
        progress.update(1, status=f"epoch 1/2 G_L1 {step:.3f}")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3  # at 30, 60 and 90 s
    assert lines[0] == (
        "[train run] 30/200 it (15.0%) epoch 1/2 G_L1 29.000 | 1.00 it/s, elapsed 0:30, ETA 2:50"
    )
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4 and lines[-1].startswith("[train run] 100/200 it (50.0%) epoch 1/2 G_L1 99.000")
    progress.close()  # a second close writes nothing
    assert len(stream.getvalue().splitlines()) == 4


def test_resumed_count_and_rate():
    clock, stream = _Clock(), io.StringIO()
    progress = Progress(1000, "x", initial=400, interval=10, stream=stream, clock=clock)
    clock.now += 20.0
    progress.update(100)
    assert stream.getvalue().splitlines() == ["[x] 500/1000 it (50.0%) | 5.00 it/s, elapsed 0:20, ETA 1:40"]


def test_disabled_and_quiet_cases():
    clock, stream = _Clock(), io.StringIO()
    progress = Progress(10, "x", interval=1, stream=stream, clock=clock, enabled=False)
    clock.now += 5
    progress.update(5)
    progress.close()
    assert stream.getvalue() == ""
    progress = Progress(10, "x", interval=1, stream=stream, clock=clock)
    progress.close()  # nothing counted: no line
    assert stream.getvalue() == ""
    progress = Progress(10, "x", interval=30, stream=stream, clock=clock)
    clock.now += 5
    progress.update(10)
    progress.close()  # done within one interval: no line either
    assert stream.getvalue() == ""
    with pytest.raises(ValueError, match="interval"):
        Progress(10, "x", interval=0)


def test_terminal_detection(monkeypatch):
    assert not is_terminal(io.StringIO())
    monkeypatch.setattr("os.get_terminal_size", lambda fd: __import__("os").terminal_size((0, 0)))
    assert not is_terminal(_Terminal())  # a terminal that reports 0 columns gets plain lines
    clock, stream = _Clock(), _Terminal()
    progress = Progress(10, "x", interval=1, stream=stream, clock=clock)
    clock.now += 2
    progress.update(1)
    assert stream.getvalue().startswith("[x] 1/10 it")
    monkeypatch.setattr("os.get_terminal_size", lambda fd: __import__("os").terminal_size((80, 24)))
    assert is_terminal(_Terminal())


def test_format_duration():
    assert format_duration(65) == "1:05"
    assert format_duration(3725) == "1:02:05"
    assert format_duration(float("nan")) == "?"
