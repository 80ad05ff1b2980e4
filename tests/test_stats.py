"""Intervals shared by Table 6 and the bench, against hand computations."""

from __future__ import annotations

import math

import pytest

from pix2pix_ilm.stats import mean_std, ratio_interval, t_interval


def test_mean_std_uses_n_minus_one():
    assert mean_std([1.0, 2.0, 6.0]) == {"mean": 3.0, "std": pytest.approx(math.sqrt(7.0)), "n": 3}
    assert mean_std([4.0]) == {"mean": 4.0, "std": 0.0, "n": 1}


def test_t_interval_by_hand():
    out = t_interval([1.0, 2.0, 6.0])
    half = 4.302652729911275 * math.sqrt(7.0) / math.sqrt(3)  # t(0.975, 2)
    assert out["ci"] == [pytest.approx(3.0 - half), pytest.approx(3.0 + half)]
    assert t_interval([5.0])["ci"] is None


def test_ratio_interval_is_symmetric_in_log_space():
    out = ratio_interval([2.0, 2.0, 2.0], [1.0, 1.0, 1.0])
    assert out == {"ratio": pytest.approx(2.0), "low": pytest.approx(2.0), "high": pytest.approx(2.0), "n": 3}
    out = ratio_interval([1.1, 1.0], [1.0, 1.1])
    assert out["ratio"] == pytest.approx(1.0)
    assert out["low"] * out["high"] == pytest.approx(1.0)  # exp(-h), exp(+h)
