"""Small statistics shared by Table 6 (differences over seeds) and the bench (ratios over rounds)."""

from __future__ import annotations

import math
import statistics
from typing import Any

CONFIDENCE = 0.95


def mean_std(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (n - 1; 0 for one value) and n."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def t_interval(values: list[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Mean ± Student-t half-width (``ci`` None for one value)."""
    from scipy.stats import t

    out = mean_std(values)
    if out["n"] < 2:
        return out | {"ci": None}
    half = float(t.ppf(0.5 + confidence / 2, out["n"] - 1)) * out["std"] / math.sqrt(out["n"])
    return out | {"ci": [out["mean"] - half, out["mean"] + half]}


def ratio_interval(numerators: list[float], denominators: list[float]) -> dict[str, Any]:
    """Paired ratio numerator/denominator: ``{"ratio", "low", "high", "n"}``, the geometric mean over pairs with
    a t interval on the log ratios (``low``/``high`` None for one pair)."""
    logs = [math.log(a / b) for a, b in zip(numerators, denominators, strict=True)]
    out = t_interval(logs)
    low, high = (None, None) if out["ci"] is None else (math.exp(out["ci"][0]), math.exp(out["ci"][1]))
    return {"ratio": math.exp(out["mean"]), "low": low, "high": high, "n": out["n"]}
