"""Uncertainty for every number sealbench reports.

Passages are the unit of resampling: questions of one passage are correlated (one adapter answers
them all), so confidence intervals bootstrap over passages, and comparisons between contenders are
paired over the same passages.
"""
from __future__ import annotations

import math
import random
from statistics import fmean


def mean_ci(values: list[float], n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Mean with a percentile-bootstrap CI (deterministic for a given seed)."""
    n = len(values)
    if n == 0:
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    mean = fmean(values)
    if n == 1:
        return {"mean": mean, "ci_low": float("nan"), "ci_high": float("nan"), "n": 1}
    rng = random.Random(seed)
    boots = sorted(fmean(rng.choices(values, k=n)) for _ in range(n_boot))
    lo = boots[int((1 - level) / 2 * n_boot)]
    hi = boots[min(n_boot - 1, int((1 + level) / 2 * n_boot))]
    return {"mean": mean, "ci_low": lo, "ci_high": hi, "n": n}


def paired_difference(a: list[float], b: list[float], n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean of a-b over paired items, bootstrap CI, and a two-sided sign-flip permutation p-value."""
    if len(a) != len(b):
        raise ValueError("paired_difference needs the same items on both sides")
    diffs = [x - y for x, y in zip(a, b)]
    out = mean_ci(diffs, n_boot=n_boot, seed=seed)
    out["p_value"] = sign_flip_p_value(diffs, seed=seed)
    return out


def sign_flip_p_value(diffs: list[float], n_perm: int = 5000, seed: int = 0) -> float:
    """Two-sided paired permutation test: under H0 each difference's sign is a coin flip."""
    n = len(diffs)
    if n == 0:
        return float("nan")
    observed = abs(sum(diffs))
    if observed == 0:
        return 1.0
    if n <= 14:  # exact enumeration is cheap
        hits = 0
        for mask in range(1 << n):
            s = sum(d if (mask >> i) & 1 else -d for i, d in enumerate(diffs))
            hits += abs(s) >= observed - 1e-12
        return hits / (1 << n)
    rng = random.Random(seed)
    hits = sum(abs(sum(d if rng.random() < 0.5 else -d for d in diffs)) >= observed - 1e-12
               for _ in range(n_perm))
    return (hits + 1) / (n_perm + 1)


def fmt_ci(stat: dict, scale: float = 100.0, digits: int = 1) -> str:
    """'47.0 [41.2, 52.9]' — a mean with its CI, in percent by default."""
    if not stat or stat.get("n", 0) == 0 or math.isnan(stat["mean"]):
        return "–"
    m = f"{stat['mean'] * scale:.{digits}f}"
    if math.isnan(stat.get("ci_low", float("nan"))):
        return m
    return f"{m} [{stat['ci_low'] * scale:.{digits}f}, {stat['ci_high'] * scale:.{digits}f}]"
