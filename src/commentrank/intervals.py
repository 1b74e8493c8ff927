"""Uncertainty of ranking metrics: bootstrap intervals over posts, paired differences between rankers on the same
resamples, and the per-site breakdown, all from `commentrank.metrics.PostStats` (each metric as per-post numerators
and denominators, so a resample's metric is a ratio of sums)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from commentrank.metrics import PostStats

BOOTSTRAP_METHOD = "BCa"


class Interval(NamedTuple):
    """A point estimate with its bootstrap interval; ``method`` is "BCa", "percentile" (BCa was degenerate) or
    "none" (fewer than two posts count: no interval)."""

    point: float
    low: float
    high: float
    method: str

    def as_text(self, signed: bool = False) -> str:
        """``0.812 [0.795, 0.828]`` (three decimals); ``signed``: a difference, as :func:`difference_text` writes it
        (``+0.011 [-0.004, +0.027]``)."""
        if signed:
            return difference_text(self.point, self.low, self.high)
        return f"{self.point:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _signed(x: float, excludes_zero: bool) -> str:
    """``x`` with its sign and three decimals; in an interval that excludes 0, as many more decimals as it takes to
    show that a nonzero ``x`` is not 0 (``+0.0004``, not ``+0.000``)."""
    text = f"{x:+.3f}"
    if excludes_zero and math.isfinite(x) and x != 0 and float(text) == 0:
        text = f"{x:+.{-math.floor(math.log10(abs(x)))}f}"
    return text


def difference_text(point: float, low: float | None = None, high: float | None = None) -> str:
    """A difference between two rankers as every report prints it: ``+0.011 [-0.004, +0.027]`` (the point alone
    without both bounds), three decimals. Where the interval excludes 0 (the verdict "above" or "below"), a number
    that three decimals would show as 0 gets the decimals that show its sign: ``+0.004 [+0.0004, +0.008]``."""
    if low is None or high is None:
        return _signed(point, False)
    excludes_zero = low > 0 or high < 0
    return f"{_signed(point, excludes_zero)} [{_signed(low, excludes_zero)}, {_signed(high, excludes_zero)}]"


def ratio_statistic(num: np.ndarray, den: np.ndarray, axis: int = -1) -> np.ndarray:
    """``sum(num) / sum(den)`` along ``axis`` (NaN where ``sum(den)`` is 0): a metric on resampled posts."""
    total = np.sum(den, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, np.sum(num, axis=axis) / np.where(total > 0, total, 1.0), np.nan)


def difference_statistic(num_a, den_a, num_b, den_b, axis: int = -1) -> np.ndarray:
    """Ranker a minus ranker b, each :func:`ratio_statistic`, on the same resampled posts."""
    return ratio_statistic(num_a, den_a, axis) - ratio_statistic(num_b, den_b, axis)


def _rng_argument(seed: int) -> dict:
    """The seeded generator under the keyword the installed scipy takes (``rng`` from 1.15, else ``random_state``)."""
    import inspect

    from scipy.stats import bootstrap

    name = "rng" if "rng" in inspect.signature(bootstrap).parameters else "random_state"
    return {name: np.random.default_rng(seed)}


def _bootstrap(data: tuple[np.ndarray, ...], statistic, n_resamples: int, seed: int, confidence: float) -> Interval:
    """scipy's paired, vectorized BCa bootstrap of ``statistic`` over the posts; the percentile interval of the same
    resamples where BCa is undefined (a constant bootstrap distribution, or resamples where the metric is NaN)."""
    import warnings

    from scipy.stats import bootstrap

    point = float(statistic(*data))
    n = data[0].size
    if n < 2 or not np.isfinite(point):
        return Interval(point, float("nan"), float("nan"), "none")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # scipy's DegenerateDataWarning and 0/0 in the acceleration: handled below
        res = bootstrap(data, statistic, n_resamples=n_resamples, batch=max(1, min(n_resamples, 200_000 // n)),
                        vectorized=True, paired=True, confidence_level=confidence, method=BOOTSTRAP_METHOD,
                        **_rng_argument(seed))  # fmt: skip
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if np.isfinite(low) and np.isfinite(high):
        return Interval(point, low, high, BOOTSTRAP_METHOD)
    alpha = (1 - confidence) / 2
    low, high = np.nanquantile(res.bootstrap_distribution, [alpha, 1 - alpha])
    return Interval(point, float(low), float(high), "percentile")


def bootstrap_interval(
    stats: PostStats, key: str, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> Interval:
    """The metric ``key`` of one ranker with its bootstrap interval over posts (the posts that count for it:
    positive denominator, e.g. posts with pairs), resampled ``n_resamples`` times with ``default_rng(seed)``."""
    counts = stats.den[key] > 0
    return _bootstrap((stats.num[key][counts], stats.den[key][counts]), ratio_statistic, n_resamples, seed, confidence)


def paired_difference_interval(
    a: PostStats, b: PostStats, key: str, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> Interval:
    """Ranker ``a`` minus ranker ``b`` on the metric ``key``, with a paired bootstrap interval: both recomputed on
    the same resampled posts, so what the posts share cancels out. The posts are those that count for both
    (positive denominator in both): for a metric whose posts depend only on the labels (NDCG, pair accuracy,
    shorter-better pairs) every post that counts at all, so the point is ``a``'s value minus ``b``'s; for
    ``length_spearman``, which leaves out a post where a ranker's scores are all tied, the posts neither leaves out,
    so that both means are over the same posts."""
    if a.n_posts != b.n_posts:
        raise ValueError(f"paired rankers must score the same posts: {a.n_posts} != {b.n_posts}")
    counts = (a.den[key] > 0) & (b.den[key] > 0)
    data = (a.num[key][counts], a.den[key][counts], b.num[key][counts], b.den[key][counts])
    return _bootstrap(data, difference_statistic, n_resamples, seed, confidence)


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def bootstrap_report(
    rankers: Mapping[str, PostStats],
    reference: str = "model",
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Intervals of every metric of every ranker, and ``reference`` minus each other ranker (paired).

    Returns ``intervals`` (ranker -> metric -> [low, high]), ``differences`` (other ranker -> metric ->
    {point, low, high}) and ``bootstrap`` (method, resamples, seed, confidence, and the intervals where BCa was
    degenerate and the percentile interval was used). Bounds that do not exist are None. Every interval draws its
    resamples with ``default_rng(seed)``: where the same posts count for a metric (every post for NDCG, the posts
    with pairs for the pair metrics; the posts of ``length_spearman`` depend on the ranker's ties), the intervals of
    all rankers and the differences use the very same resampled posts. A difference is over the posts that count
    for both rankers (`paired_difference_interval`): for ``length_spearman`` it can differ from the difference of
    the two rankers' values when one of them leaves out a post the other counts.
    """
    intervals: dict[str, dict] = {}
    fallback: list[str] = []
    for name, stats in rankers.items():
        intervals[name] = {}
        for key in stats.keys:
            iv = bootstrap_interval(stats, key, n_resamples, seed, confidence)
            intervals[name][key] = [_finite_or_none(iv.low), _finite_or_none(iv.high)]
            fallback += [f"{name}/{key}"] if iv.method == "percentile" else []
    differences: dict[str, dict] = {}
    for name, stats in rankers.items():
        if name == reference:
            continue
        differences[name] = {}
        for key in (k for k in rankers[reference].keys if k in stats.num):
            iv = paired_difference_interval(rankers[reference], stats, key, n_resamples, seed, confidence)
            differences[name][key] = {"point": _finite_or_none(iv.point), "low": _finite_or_none(iv.low),
                                      "high": _finite_or_none(iv.high)}  # fmt: skip
            fallback += [f"{reference}-{name}/{key}"] if iv.method == "percentile" else []
    info = {"method": BOOTSTRAP_METHOD, "fallback_method": "percentile", "n_resamples": n_resamples, "seed": seed,
            "confidence": confidence, "unit": "post", "percentile_fallback": fallback}  # fmt: skip
    return {"intervals": intervals, "differences": differences, "bootstrap": info}


def per_site_metrics(
    rankers: Mapping[str, PostStats], sites: Sequence[str | None], keys: Sequence[str] = ("ndcg@5", "pair_accuracy")
) -> dict[str, dict]:
    """site -> {"n_posts", ranker -> {metric: value}} for the posts of each site (a missing site is "unknown"),
    sites in decreasing number of posts."""
    labels = ["unknown" if s is None else str(s) for s in sites]
    out = {}
    for site, count in sorted(Counter(labels).items(), key=lambda item: (-item[1], item[0])):
        mask = np.array([label == site for label in labels])
        out[site] = {"n_posts": count}
        for name, stats in rankers.items():
            sub = stats.subset(mask)
            out[site][name] = {key: _finite_or_none(sub.value(key)) for key in keys if key in stats.num}
    return out
