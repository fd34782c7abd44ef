"""Uncertainty for every number sealbench reports (scipy.stats).

Items (passages, ARC tasks, continual sequences) are the unit of resampling: one adapter answers
all the questions of a passage, so its questions are correlated. Confidence intervals are 95%
percentile bootstraps over items; comparisons between contenders are paired over the same items
with a two-sided paired permutation test (each pair's sign flipped; exact for n <= 13).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats as st

PAIRED_TEST = "paired permutation test (sign flip), two-sided"


def mean_ci(values, seed: int = 0, level: float = 0.95, n_resamples: int = 2000) -> dict:
    """{mean, ci_low, ci_high, n}: the mean and its percentile-bootstrap CI (NaN CI for n < 2 or
    when every value is the same: then the CI is the value itself)."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    n = len(x)
    if n == 0:
        return {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
    mean = float(x.mean())
    if n == 1:
        return {"mean": mean, "ci_low": math.nan, "ci_high": math.nan, "n": 1}
    if np.all(x == x[0]):
        return {"mean": mean, "ci_low": mean, "ci_high": mean, "n": n}
    res = st.bootstrap((x,), np.mean, confidence_level=level, n_resamples=n_resamples, method="percentile",
                       rng=np.random.default_rng(seed))
    return {"mean": mean, "ci_low": float(res.confidence_interval.low),
            "ci_high": float(res.confidence_interval.high), "n": n}


def paired_difference(a, b, seed: int = 0) -> dict:
    """Mean of a - b over paired items with its bootstrap CI and the paired permutation p-value.
    Raises ValueError if the sides differ in length."""
    if len(a) != len(b):
        raise ValueError("paired_difference needs the same items on both sides")
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    out = mean_ci(list(x - y), seed=seed)
    if len(x) == 0:
        out["p_value"] = math.nan
    elif np.all(x == y) or len(x) == 1:
        out["p_value"] = 1.0  # one pair: both sign flips are as extreme as the data
    else:
        res = st.permutation_test((x, y), lambda u, v, axis: np.mean(u - v, axis=axis), vectorized=True,
                                  permutation_type="samples", n_resamples=9999, alternative="two-sided",
                                  rng=np.random.default_rng(seed))
        out["p_value"] = float(res.pvalue)
    out["test"] = PAIRED_TEST
    return out


def median_iqr(values) -> dict:
    """{mean: the median, ci_low/ci_high: the quartiles, n} for timings (not a confidence interval)."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    if len(x) == 0:
        return {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    return {"mean": float(med), "ci_low": float(q1), "ci_high": float(q3), "n": len(x)}


def edit_costs(ok: list[dict], timings: tuple[str, ...], train: tuple[str, ...] = ("steps",),
               counts: dict[str, str] | None = None) -> dict[str, list]:
    """Per-edit cost samples of `ok` unit rows, by metric, in row order (`timing_rows`):
    seconds_per_edit (the sum of `timings` in each row's `timing`, a missing one 0), each of
    `timings`, train_<f> for each field f of `train` (rows that trained), each count of `counts`
    ({metric: row field}, rows where it is nonzero) and peak_mem_mb (rows that recorded one)."""
    t = [r.get("timing", {}) for r in ok]
    trained = [r["train"] for r in ok if r.get("train")]
    samples = {"seconds_per_edit": [sum(x.get(k) or 0.0 for k in timings) for x in t]}
    samples.update((key, [x.get(key) for x in t]) for key in timings)
    samples.update((f"train_{f}", [x[f] for x in trained]) for f in train)
    samples.update((metric, [r[field] for r in ok if r.get(field)]) for metric, field in (counts or {}).items())
    samples["peak_mem_mb"] = [x["peak_mem_mb"] for x in t if x.get("peak_mem_mb")]
    return samples


def timing_rows(samples: dict[str, list]) -> list[dict]:
    """The results table's timing and cost rows (unit edits; docs/reports.md) from per-edit
    samples {metric: values}, in `samples`' order, as row fields {metric, value, ci_low, ci_high,
    n, unit} (the caller adds the run's and contender's fields): each metric's median with its
    quartiles as the interval (`median_iqr`), peak_mem_mb the max with no interval. None values
    are dropped; a metric with no value gives no row."""
    out = []
    for metric, values in samples.items():
        x = [v for v in values if v is not None]
        if not x:
            continue
        if metric == "peak_mem_mb":
            stat = {"mean": float(max(x)), "ci_low": math.nan, "ci_high": math.nan, "n": len(x)}
        else:
            stat = median_iqr(x)
        out.append({"metric": metric, "value": stat["mean"], "ci_low": stat["ci_low"], "ci_high": stat["ci_high"],
                    "n": stat["n"], "unit": "edits"})
    return out


def answer_words(questions: list[dict]) -> list[float]:
    """Words per cut answer (whitespace-separated), one per question row (`prediction`; None or
    missing counts as no words): the answer length that tables carry beside accuracy (issue 20).
    Here, not in grading/: a grader's version hashes its package's code (regrade.py)."""
    return [float(len(str(q.get("prediction") or "").split())) for q in questions]
