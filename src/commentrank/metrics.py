"""Ranking metrics for reward models that rank the comments under a post (numpy).

Conventions
-----------
* ``scores`` are model rewards, higher = better.
* ``ranks`` are labels, 0 = best comment, unique within a post (see :class:`commentrank.data.records.Comment`).
* ``relevance`` is a non-negative graded gain, higher = better.

NDCG uses linear gain (``DCG = sum_i rel_i / log2(i + 2)``) and reproduces ``sklearn.metrics.ndcg_score`` exactly,
including its tie handling (``ignore_ties=False``): comments with tied predicted scores share the average of their
gains over the discounts of the positions the tied block occupies (McSherry & Najork, 2008). A post whose ideal
DCG is 0 (all relevance 0) scores 0, as in sklearn. Unlike sklearn, a post with a single comment is allowed
(NDCG 1.0 if its relevance is positive, else 0.0: with rank relevance, 0, which is why the reports evaluate posts with
two or more comments only).

One implementation of each metric: :func:`post_stats` keeps every metric as per-post numerators and denominators
(computed once), :func:`ranking_metrics` and :func:`baseline_metrics` aggregate them, and
:mod:`commentrank.intervals` resamples them for bootstrap intervals (a resample's metric is two sums; pair accuracies
stay micro averages). :func:`length_metrics` asks whether a ranker just measures comment length.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "PostStats",
    "adjacent_pair_rewards",
    "baseline_metrics",
    "baseline_post_stats",
    "corpus_pair_accuracy",
    "dcg_at_k",
    "grouped_ndcg",
    "length_metrics",
    "longest_first_scores",
    "mean_ndcg",
    "ndcg_at_k",
    "pair_accuracy",
    "paired_ndcg",
    "post_pair_accuracy",
    "post_stats",
    "random_scores",
    "ranking_metrics",
    "relevance_from_ranks",
    "relevance_from_votes",
    "top1_ndcg",
]


# --------------------------------------------------------------------------------------------------------------------
# NDCG for one post
# --------------------------------------------------------------------------------------------------------------------


def _as_pair(relevance: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    rel = np.asarray(relevance, dtype=np.float64)
    sc = np.asarray(scores, dtype=np.float64)
    if rel.ndim != 1 or sc.ndim != 1:
        raise ValueError(f"expected 1-D arrays for one post, got shapes {rel.shape} and {sc.shape}")
    if rel.shape != sc.shape:
        raise ValueError(f"relevance and scores differ in length: {rel.shape[0]} != {sc.shape[0]}")
    if rel.size == 0:
        raise ValueError("a post needs at least one comment")
    if not (np.isfinite(rel).all() and np.isfinite(sc).all()):
        raise ValueError("relevance and scores must be finite")
    return rel, sc


def _discount(n: int, k: int | None) -> np.ndarray:
    """Per-position discounts ``1 / log2(i + 2)``, zero from position ``k`` on (same arithmetic as sklearn)."""
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    discount = 1 / (np.log(np.arange(n) + 2) / np.log(2))
    if k is not None:
        discount[k:] = 0
    return discount


def dcg_at_k(relevance: ArrayLike, scores: ArrayLike, k: int | None = None) -> float:
    """Tie-averaged DCG@k of one post (``sklearn.metrics.dcg_score([relevance], [scores], k=k)``).

    Comments are ordered by decreasing score; a block of tied scores contributes its mean gain times the sum of the
    discounts of the positions it occupies (discounts beyond ``k`` are 0, so a block straddling ``k`` is partially
    counted). ``k=None`` uses every position; ``k`` larger than the number of comments is fine.
    """
    rel, sc = _as_pair(relevance, scores)
    return float(_dcg_at_ks(rel, (k,), _tie_blocks(sc))[0][0])


def _tie_blocks(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(block of each comment, size of each block) of the tied scores, blocks in decreasing score order."""
    _, inv, counts = np.unique(-scores, return_inverse=True, return_counts=True)
    return inv.reshape(-1), counts


def _dcg_at_ks(rel: np.ndarray, ks: tuple, blocks: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(DCG, ideal DCG) of one post for each k at once (the one implementation of the project's NDCG): a block of
    tied scores contributes its mean gain times the sum of the discounts of the positions it occupies."""
    inv, counts = blocks
    table, cumulative = _discount_table(rel.size, ks)
    block_gain = np.bincount(inv, weights=rel, minlength=counts.size) / counts
    block_end = np.cumsum(counts) - 1
    block_discount = np.diff(cumulative[:, block_end], axis=1, prepend=0.0)
    return block_discount @ block_gain, table @ np.sort(rel)[::-1]


def ndcg_at_k(relevance: ArrayLike, scores: ArrayLike, k: int | None = None) -> float:
    """NDCG@k of one post, equal to ``sklearn.metrics.ndcg_score([relevance], [scores], k=k)``.

    ``relevance`` must be non-negative (as sklearn requires). Returns 0.0 when the ideal DCG is 0.
    """
    rel, sc = _as_pair(relevance, scores)
    if (rel < 0).any():
        raise ValueError("NDCG should not be used on negative relevance values")
    return float(_ndcg_at_ks(rel, (k,), _tie_blocks(sc))[0])


def mean_ndcg(relevances: Sequence[ArrayLike], scores: Sequence[ArrayLike], k: int | None = None) -> float:
    """Mean of :func:`ndcg_at_k` over posts (each post may have a different number of comments).

    Every post counts once (macro average), as ``ndcg_score`` averages over samples. NaN for no posts.
    """
    if len(relevances) != len(scores):
        raise ValueError(f"{len(relevances)} relevance lists but {len(scores)} score lists")
    if len(relevances) == 0:
        return float("nan")
    return float(np.mean([ndcg_at_k(r, s, k) for r, s in zip(relevances, scores)]))


# --------------------------------------------------------------------------------------------------------------------
# Relevance helpers
# --------------------------------------------------------------------------------------------------------------------


def relevance_from_ranks(ranks: ArrayLike) -> np.ndarray:
    """Linear relevance ``n - 1 - rank``: the best comment (rank 0) gets ``n - 1``, the worst gets 0.

    For ranks that are not exactly ``0..n-1`` (e.g. after dropping comments) the rank is first replaced by the number
    of comments with a strictly better rank, so relevance stays in ``0..n-1``; for proper ranks this is the identity.
    """
    r = np.asarray(ranks, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"expected a 1-D array of ranks, got shape {r.shape}")
    dense = np.searchsorted(np.sort(r), r, side="left")  # comments with a strictly better rank: O(n log n) memory O(n)
    return (r.size - 1 - dense).astype(np.float64)


def relevance_from_votes(votes: ArrayLike) -> np.ndarray:
    """Graded relevance ``votes - min(votes)``: non-negative, equal votes give equal relevance."""
    v = np.asarray(votes, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"expected a non-empty 1-D array of votes, got shape {v.shape}")
    return v - v.min()


# --------------------------------------------------------------------------------------------------------------------
# Pairwise accuracy
# --------------------------------------------------------------------------------------------------------------------


def _pair_counts(ranks: ArrayLike, scores: ArrayLike) -> tuple[float, int]:
    """(credit, number of label-ordered pairs) of one post; a win is 1, a score tie 0.5, a loss 0."""
    r = np.asarray(ranks, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if r.ndim != 1 or r.shape != s.shape:
        raise ValueError(f"ranks and scores must be 1-D of equal length, got {r.shape} and {s.shape}")
    credit, n_pairs, _, _ = _pair_stats(r, s, None)
    return float(credit), n_pairs


def post_pair_accuracy(ranks: ArrayLike, scores: ArrayLike) -> float:
    """Pair accuracy of one post: fraction of pairs (i ranked better than j) with ``score_i > score_j``.

    A tie in scores counts 0.5. NaN for a post with fewer than two comments (no pairs).
    """
    credit, n_pairs = _pair_counts(ranks, scores)
    return credit / n_pairs if n_pairs else float("nan")


def corpus_pair_accuracy(ranks_list: Sequence[ArrayLike], scores_list: Sequence[ArrayLike]) -> float:
    """Micro-averaged pair accuracy: credit summed over all pairs of all posts / total number of pairs.

    Posts with many comments weigh more (a post with n comments has n(n-1)/2 pairs). NaN when there are no pairs.
    """
    if len(ranks_list) != len(scores_list):
        raise ValueError(f"{len(ranks_list)} rank lists but {len(scores_list)} score lists")
    total_credit, total_pairs = 0.0, 0
    for r, s in zip(ranks_list, scores_list):
        credit, n_pairs = _pair_counts(r, s)
        total_credit += credit
        total_pairs += n_pairs
    return total_credit / total_pairs if total_pairs else float("nan")


def _is_nested(x: Any) -> bool:
    if isinstance(x, np.ndarray):
        return x.dtype == object or x.ndim > 1
    return len(x) > 0 and not np.isscalar(x[0])


def pair_accuracy(ranks: Any, scores: Any) -> float:
    """Pair accuracy of one post or of a corpus.

    * ``ranks``/``scores`` 1-D (one post): :func:`post_pair_accuracy`.
    * lists of per-post arrays (several posts): :func:`corpus_pair_accuracy`, the micro average over all pairs of
      all posts (this is the ``pair_accuracy`` reported by :func:`ranking_metrics`).
    """
    if _is_nested(ranks):
        return corpus_pair_accuracy(ranks, scores)
    return post_pair_accuracy(ranks, scores)


# --------------------------------------------------------------------------------------------------------------------
# The CUP IT solution's views
# --------------------------------------------------------------------------------------------------------------------


def grouped_ndcg(ranks_list: Sequence[ArrayLike], scores_list: Sequence[ArrayLike], k: int | None = 5) -> float:
    """Mean sklearn NDCG@k over posts with relevance from rank (:func:`relevance_from_ranks`)."""
    return mean_ndcg([relevance_from_ranks(r) for r in ranks_list], scores_list, k)


def top1_ndcg(ranks_list: Sequence[ArrayLike], scores_list: Sequence[ArrayLike], k: int = 5) -> float:
    """Mean binary NDCG@k where only the best comment (smallest rank, normally 0) is relevant.

    Per post: ``1 / log2(p + 2)`` if the best comment's predicted 0-based position ``p < k``, else 0. A best comment
    tied with others gets the mean of that gain over the positions the tied block occupies, as every NDCG here
    (sklearn's tie averaging: ``ndcg_score`` with relevance 1 for the best comment, 0 for the rest). NaN for no posts.
    """
    if len(ranks_list) != len(scores_list):
        raise ValueError(f"{len(ranks_list)} rank lists but {len(scores_list)} score lists")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(ranks_list) == 0:
        return float("nan")
    values = []
    for r, s in zip(ranks_list, scores_list):
        r_arr = np.asarray(r, dtype=np.float64)
        s_arr = np.asarray(s, dtype=np.float64)
        if r_arr.shape != s_arr.shape or r_arr.ndim != 1 or r_arr.size == 0:
            raise ValueError(
                f"ranks and scores must be non-empty 1-D of equal length, got {r_arr.shape}, {s_arr.shape}"
            )
        values.append(_top1(r_arr, s_arr, k))
    return float(np.mean(values))


def _top1(ranks: np.ndarray, scores: np.ndarray, k: int) -> float:
    """One post's top-1 NDCG@k: ``1 / log2(p + 2)`` for the best comment's 0-based position ``p < k``, averaged over
    the positions of its block of tied scores."""
    best = scores[np.argmin(ranks)]
    higher, tied = int((scores > best).sum()), int((scores == best).sum())
    return float(sum(1.0 / np.log2(p + 2) for p in range(higher, min(higher + tied, k))) / tied)


def adjacent_pair_rewards(
    ranks_list: Sequence[ArrayLike], scores_list: Sequence[ArrayLike]
) -> tuple[np.ndarray, np.ndarray]:
    """(chosen, rejected) scores of the CUP IT pairs of every post: each comment against the next rank down
    (0>1, 1>2, ...); tied ranks form no pair."""
    chosen, rejected = [], []
    for r, s in zip(ranks_list, scores_list):
        r_arr, s_arr = np.asarray(r, dtype=np.float64), np.asarray(s, dtype=np.float64)
        order = np.argsort(r_arr, kind="stable")
        for a, b in zip(order[:-1], order[1:]):
            if r_arr[a] < r_arr[b]:
                chosen.append(s_arr[a])
                rejected.append(s_arr[b])
    return np.asarray(chosen), np.asarray(rejected)


def paired_ndcg(chosen_rewards: ArrayLike, rejected_rewards: ArrayLike, k: int = 2) -> float:
    """Mean over (chosen, rejected) pairs of ``sklearn.metrics.ndcg_score([[1, 0]], [[r_c, r_r]], k=k)``.

    Per pair: a win (``r_c > r_r``) is 1. A loss is ``1/log2(3)`` (~0.631) for ``k >= 2`` and 0 for ``k = 1``. A tie is
    sklearn's average ``(1 + 1/log2(3)) / 2`` (~0.8155) for ``k >= 2`` and 0.5 for ``k = 1``. NaN for no pairs.
    """
    c = np.asarray(chosen_rewards, dtype=np.float64).reshape(-1)
    r = np.asarray(rejected_rewards, dtype=np.float64).reshape(-1)
    if c.shape != r.shape:
        raise ValueError(f"{c.size} chosen but {r.size} rejected rewards")
    if c.size == 0:
        return float("nan")
    d0, d1 = _discount(2, k)
    per_pair = np.where(c > r, d0, np.where(c < r, d1, (d0 + d1) / 2))
    return float(per_pair.mean())


# --------------------------------------------------------------------------------------------------------------------
# Report over posts
# --------------------------------------------------------------------------------------------------------------------


def _has_votes(post: Mapping[str, Any]) -> bool:
    votes = post.get("votes")
    return votes is not None and all(v is not None for v in votes)


def equal_vote_pairs(posts: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """(pairs between comments with equal votes, label-ordered pairs) over the posts with votes on every comment: the
    share of pair accuracy and rank NDCG that rests on the data's tie-break (e.g. the earlier answer first)."""
    equal = pairs = 0
    for post in posts:
        if _has_votes(post):
            votes = np.asarray(post["votes"], dtype=np.float64)
            n = len(votes)
            pairs += n * (n - 1) // 2
            equal += int((votes[:, None] == votes[None, :]).sum() - n) // 2
    return equal, pairs


def ranking_metrics(posts: Sequence[Mapping[str, Any]], ks: Iterable[int] = (1, 2, 3, 4, 5)) -> dict[str, float]:
    """Standard report over posts given as dicts with ``ranks``, ``scores`` (higher = better), optional ``votes``.

    Keys: ``ndcg@k`` (relevance from rank) for each k; ``ndcg_votes@k`` (relevance ``votes - min``) for each k, only
    when every post has complete votes; ``top1_ndcg@5``; ``pair_accuracy`` (micro average over all pairs); the CUP IT
    solution's ``grouped_ndcg@5`` (:func:`grouped_ndcg`, the same value as ``ndcg@5``) and ``paired_ndcg@2``
    (:func:`paired_ndcg` over the adjacent pairs of each post, :func:`adjacent_pair_rewards`); ``n_posts``;
    ``n_comments``.
    """
    labeled = [{"ranks": p["ranks"], "scores": p["scores"], "votes": p.get("votes")} for p in posts]
    return report_values(post_stats(labeled, ks), posts)


def report_values(stats: PostStats, posts: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """`ranking_metrics`' report from per-post statistics: every metric but the length-controlled ones, and the
    counts `n_posts` and `n_comments`. One aggregation for the model and the baselines, with or without intervals."""
    length_keys = {k for key in LENGTH_KEYS for k in (key, LENGTH_COUNTS[key])}
    out = {key: value for key, value in stats.values().items() if key not in length_keys}
    out["n_posts"] = float(len(posts))
    out["n_comments"] = float(sum(len(p["ranks"]) for p in posts))
    return out


# --------------------------------------------------------------------------------------------------------------------
# Baseline rankers
# --------------------------------------------------------------------------------------------------------------------


def random_scores(n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Uniform random scores for ``n`` comments (a random ranking); ``rng`` is a Generator or a seed."""
    return np.random.default_rng(rng).random(n)


def longest_first_scores(texts: Sequence[str]) -> np.ndarray:
    """Score = character length: ranks the longest comment first (equal lengths tie)."""
    return np.array([len(t) for t in texts], dtype=np.float64)


def baseline_metrics(
    posts: Sequence[Mapping[str, Any]], n_seeds: int = 20, seed: int = 0, ks: Iterable[int] = (1, 2, 3, 4, 5)
) -> dict[str, dict[str, float]]:
    """:func:`ranking_metrics` of two reference rankers on the same posts (dicts with ``ranks``, ``comments``).

    ``random``: each key averaged over ``n_seeds`` runs with generators seeded ``seed, seed + 1, ...``.
    ``longest_first``: :func:`longest_first_scores` of ``comments``. Any ``scores`` in the posts are ignored.
    """
    return {name: report_values(stats, posts) for name, stats in baseline_post_stats(posts, n_seeds, seed, ks).items()}


# --------------------------------------------------------------------------------------------------------------------
# Per-post statistics, length-controlled metrics
# --------------------------------------------------------------------------------------------------------------------

LENGTH_KEYS = ("length_spearman", "shorter_better_pair_accuracy")
LENGTH_COUNTS = {
    "length_spearman": "length_spearman_n_posts",
    "shorter_better_pair_accuracy": "shorter_better_n_pairs",
}


@dataclass(frozen=True)
class PostStats:
    """Each metric of a ranker as per-post numerators and denominators: over any set of posts (all, a site, a
    bootstrap resample) the metric is ``num[key][posts].sum() / den[key][posts].sum()``.

    Macro averages (NDCG@k, top-1 NDCG) have denominator 1 per post; micro averages (pair accuracy, paired NDCG@2,
    shorter-better pair accuracy) have credit over pairs; ``length_spearman`` has the post's Spearman correlation
    over 1, or 0 over 0 for a post it leaves out.
    """

    num: dict[str, np.ndarray]
    den: dict[str, np.ndarray]

    @property
    def keys(self) -> tuple[str, ...]:
        """The metrics held."""
        return tuple(self.num)

    @property
    def n_posts(self) -> int:
        """The number of posts (counted or not)."""
        return int(next(iter(self.num.values())).size) if self.num else 0

    def value(self, key: str) -> float:
        """The metric over all posts (NaN where no post counts)."""
        total = self.den[key].sum()
        return float(self.num[key].sum() / total) if total > 0 else float("nan")

    def values(self) -> dict[str, float]:
        """Every metric over all posts, with the counts of the length-controlled ones."""
        out = {key: self.value(key) for key in self.keys}
        out.update({LENGTH_COUNTS[key]: float(self.den[key].sum()) for key in LENGTH_KEYS if key in self.num})
        return out

    def subset(self, index: ArrayLike) -> PostStats:
        """The statistics of the posts ``index`` (a boolean mask or positions, repeats allowed)."""
        index = np.asarray(index)
        return PostStats({k: v[index] for k, v in self.num.items()}, {k: v[index] for k, v in self.den.items()})


@dataclass(frozen=True)
class _Labels:
    """What a post's metrics need that does not depend on the scores, computed once per post."""

    ranks: np.ndarray
    rel_ranks: np.ndarray
    rel_votes: np.ndarray | None
    lengths: np.ndarray | None
    adjacent: tuple[np.ndarray, np.ndarray]  # (better, worse) positions of the adjacent label pairs
    pair_keys: _PairKeys


def _labels(post: Mapping[str, Any], with_votes: bool) -> _Labels:
    """The score-independent part of one post (``ranks``, ``votes`` when ``with_votes``, ``comments`` if any)."""
    ranks = np.asarray(post["ranks"], dtype=np.float64)
    order = np.argsort(ranks, kind="stable")
    keep = ranks[order[:-1]] < ranks[order[1:]]  # tied ranks form no pair, as in adjacent_pair_rewards
    comments = post.get("comments")
    lengths = None if comments is None else longest_first_scores(comments)
    return _Labels(
        ranks=ranks,
        rel_ranks=relevance_from_ranks(ranks),
        rel_votes=relevance_from_votes(post["votes"]) if with_votes else None,
        lengths=lengths,
        adjacent=(order[:-1][keep], order[1:][keep]),
        pair_keys=_pair_keys(ranks, lengths),
    )


def _discount_table(n: int, ks: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(discounts, their cumulative sums) of ``n`` positions, one row per k (:func:`_discount`); cached for the
    usual post sizes."""
    return _cached_discount_table(n, ks) if n <= 1024 else _make_discount_table(n, ks)


def _make_discount_table(n: int, ks: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    table = np.stack([_discount(n, k) for k in ks])
    cumulative = np.cumsum(table, axis=1)
    table.flags.writeable = cumulative.flags.writeable = False  # shared through the cache: read-only
    return table, cumulative


_cached_discount_table = functools.lru_cache(maxsize=256)(_make_discount_table)


def _ndcg_at_ks(rel: np.ndarray, ks: tuple, blocks: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """:func:`ndcg_at_k` of one post for each k at once, from the tie blocks ``(inverse, counts)`` of its scores
    (0 where the ideal DCG is 0, as sklearn)."""
    dcg, ideal = _dcg_at_ks(rel, ks, blocks)
    return np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal != 0)


@dataclass(frozen=True)
class _PairKeys:
    """The score-independent part of a post's pair counts (:func:`_pair_stats`), computed once per post: the dense
    ranks ``x`` and lengths ``y`` and the counts that need only them."""

    x: np.ndarray
    y: np.ndarray | None
    n_pairs: int  # pairs with x strictly ordered
    n_short: int  # ... and y ordered the same way: the better comment is strictly shorter
    tied: dict  # pairs tied in x, in y, in both


def _pair_keys(ranks: np.ndarray, lengths: np.ndarray | None) -> _PairKeys:
    x = _dense(ranks)
    n_pairs = _n_pairs(x.size) - _tied(x)
    if lengths is None:
        return _PairKeys(x, None, n_pairs, 0, {"x": _tied(x)})
    y = _dense(lengths)
    return _PairKeys(x, y, n_pairs, _concordant(x, y), {"x": _tied(x), "y": _tied(y), "xy": _tied(x, y)})


def _pair_stats(
    ranks: np.ndarray, scores: np.ndarray, lengths: np.ndarray | None, keys: _PairKeys | None = None
) -> tuple[float, int, float, int]:
    """(credit, pairs) over all label-ordered pairs of one post and over those whose better comment is strictly
    shorter; a win is 1, a score tie 0.5. Counted by sorting, never listed: O(n log n) time, O(n) memory (a
    40,000-comment post in a tenth of a second, where comparing every pair took seconds). ``keys``: :func:`_pair_keys`
    of the post.

    With x = rank (lower is better), y = length, z = -score (lower is a win), a pair is counted by the signs of its
    three differences: pairs = those with x strictly ordered; wins = x and z strictly concordant; ties = x strict, z
    tied. The shorter-better pairs are x and y strictly concordant; among them the wins are the pairs concordant in
    all three, from the pairwise concordances of the pairs tied in none (each such pair agrees in all three or
    disagrees in exactly one: all = (c_xy + c_xz + c_yz - pairs) / 2)."""
    keys = keys or _pair_keys(ranks, lengths)
    x, y, z = keys.x, keys.y, _dense(-scores)
    wins, tied_z, tied_xz = _concordant(x, z), _tied(z), _tied(x, z)
    credit = wins + 0.5 * (tied_z - tied_xz)
    if y is None:
        return credit, keys.n_pairs, 0.0, 0
    tied = keys.tied
    untied = _n_pairs(x.size) - (tied["x"] + tied["y"] + tied_z) + (tied["xy"] + tied_xz + _tied(y, z))
    untied -= _tied(x, y, z)
    short_ties = _concordant(x, y, z)  # x and y strictly concordant, z tied
    c_xy = keys.n_short - short_ties  # the concordances of the pairs tied in none of the three
    c_xz = wins - _concordant(x, z, y)
    c_yz = _concordant(y, z) - _concordant(y, z, x)
    short_wins = (c_xy + c_xz + c_yz - untied) // 2
    return credit, keys.n_pairs, short_wins + 0.5 * short_ties, keys.n_short


def _n_pairs(n: int) -> int:
    return n * (n - 1) // 2


def _dense(values: np.ndarray) -> np.ndarray:
    """Dense ranks 0..m-1 of ``values`` (equal values share one)."""
    return np.unique(values, return_inverse=True)[1].reshape(-1).astype(np.int64)


def _joint(*keys: np.ndarray) -> np.ndarray:
    """One dense id per distinct tuple of the dense ``keys``."""
    joint = keys[0]
    for key in keys[1:]:
        joint = _dense(joint * (int(key.max()) + 1) + key)
    return joint


def _tied(*keys: np.ndarray) -> int:
    """The pairs equal in every one of ``keys``."""
    counts = np.bincount(_joint(*keys))
    return int((counts * (counts - 1) // 2).sum())


def _concordant(a: np.ndarray, b: np.ndarray, group: np.ndarray | None = None) -> int:
    """The pairs (within one ``group`` value, when given) strictly ordered the same way by the dense keys ``a`` and
    ``b``: from Kendall's tau-b (``scipy.stats.kendalltau``, O(n log n)), which is (P - Q) / sqrt((P + Q + T_a) *
    (P + Q + T_b)), P concordant and Q discordant pairs, T_a and T_b the pairs tied in ``a`` only and in ``b`` only. P
    and Q are integers below n^2 / 2, recovered exactly by rounding (the float error is under 1e-3 up to a million
    comments).

    Within groups: keyed by (group, a) and (group, b), the pairs of different groups are concordant; they are taken
    off."""
    from scipy.stats import kendalltau

    cross = 0
    if group is not None:
        if _all_distinct(group):
            return 0
        cross = _n_pairs(group.size) - _tied(group)
        a, b = _joint(group, a), _joint(group, b)
    total, tied_a, tied_b = _n_pairs(a.size), _tied(a), _tied(b)
    if tied_a == total or tied_b == total:  # one key is constant: no pair is ordered by it
        return 0
    untied = total - tied_a - tied_b + _tied(a, b)  # P + Q
    difference = kendalltau(a, b).statistic * np.sqrt(total - tied_a) * np.sqrt(total - tied_b)  # P - Q
    return (untied + round(float(difference))) // 2 - cross


def _all_distinct(keys: np.ndarray) -> bool:
    """Whether the dense ``keys`` are all different (then no pair shares one)."""
    return int(keys.max()) + 1 == keys.size


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, ties sharing their average rank (``scipy.stats.rankdata``'s default)."""
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2)[inv.reshape(-1)]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation (Pearson of average ranks); NaN when either is constant."""
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    ra, rb = _average_ranks(a) - (a.size + 1) / 2, _average_ranks(b) - (b.size + 1) / 2
    return float(ra.dot(rb) / np.sqrt(ra.dot(ra) * rb.dot(rb)))


def _paired_ndcg_sum(labels: _Labels, scores: np.ndarray) -> tuple[float, float]:
    """(sum, count) of :func:`paired_ndcg` (k=2) over the post's adjacent label pairs."""
    chosen, rejected = scores[labels.adjacent[0]], scores[labels.adjacent[1]]
    return (float(paired_ndcg(chosen, rejected, k=2) * chosen.size), float(chosen.size)) if chosen.size else (0.0, 0.0)


def _post_values(labels: _Labels, scores: np.ndarray, ks: Sequence[int]) -> dict[str, tuple[float, float]]:
    """(numerator, denominator) of every metric for one post."""
    if scores.shape != labels.ranks.shape:
        raise ValueError(f"ranks and scores differ in shape: {labels.ranks.shape} and {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    blocks = _tie_blocks(scores)
    out = {f"ndcg@{k}": (float(v), 1.0) for k, v in zip(ks, _ndcg_at_ks(labels.rel_ranks, ks, blocks))}
    if labels.rel_votes is not None:
        votes = _ndcg_at_ks(labels.rel_votes, ks, blocks)
        out.update({f"ndcg_votes@{k}": (float(v), 1.0) for k, v in zip(ks, votes)})
    out["top1_ndcg@5"] = (_top1(labels.ranks, scores, 5), 1.0)
    credit, n_pairs, short_credit, n_short = _pair_stats(labels.ranks, scores, labels.lengths, labels.pair_keys)
    out["pair_accuracy"] = (credit, float(n_pairs))
    grouped = out["ndcg@5"][0] if 5 in ks else float(_ndcg_at_ks(labels.rel_ranks, (5,), blocks)[0])
    out["grouped_ndcg@5"] = (grouped, 1.0)
    out["paired_ndcg@2"] = _paired_ndcg_sum(labels, scores)
    if labels.lengths is not None:
        rho = _spearman(scores, labels.lengths)
        out["length_spearman"] = (0.0, 0.0) if np.isnan(rho) else (rho, 1.0)
        out["shorter_better_pair_accuracy"] = (short_credit, float(n_short))
    return out


def _stack(per_post: Sequence[Mapping[str, tuple[float, float]]]) -> PostStats:
    keys = per_post[0].keys() if per_post else ()
    return PostStats(
        {k: np.array([p[k][0] for p in per_post], dtype=np.float64) for k in keys},
        {k: np.array([p[k][1] for p in per_post], dtype=np.float64) for k in keys},
    )


def _all_labels(posts: Sequence[Mapping[str, Any]]) -> list[_Labels]:
    with_votes = bool(posts) and all(_has_votes(p) for p in posts)  # as ranking_metrics: votes NDCG needs every post
    return [_labels(p, with_votes) for p in posts]


def post_stats(posts: Sequence[Mapping[str, Any]], ks: Iterable[int] = (1, 2, 3, 4, 5)) -> PostStats:
    """Per-post statistics of every metric :func:`ranking_metrics` reports (same keys, without the counts), plus
    :data:`LENGTH_KEYS` when the posts carry ``comments`` (texts, for their character lengths).

    ``PostStats.value(key)`` equals ``ranking_metrics(posts)[key]`` up to float rounding.
    """
    ks = tuple(ks)
    labels = _all_labels(posts)
    return _stack([_post_values(lab, np.asarray(p["scores"], dtype=np.float64), ks) for lab, p in zip(labels, posts)])


def baseline_post_stats(
    posts: Sequence[Mapping[str, Any]], n_seeds: int = 20, seed: int = 0, ks: Iterable[int] = (1, 2, 3, 4, 5)
) -> dict[str, PostStats]:
    """:func:`post_stats` of the baselines of :func:`baseline_metrics`, with the same random scores.

    ``random``: each post's numerators and denominators are the mean over the ``n_seeds`` seeds (the post's value
    averaged over seeds), so the aggregates equal :func:`baseline_metrics`' random averages.
    """
    if n_seeds < 1:
        raise ValueError(f"n_seeds must be >= 1, got {n_seeds}")
    ks = tuple(ks)
    labels = _all_labels(posts)
    runs = []
    for i in range(n_seeds):
        rng = np.random.default_rng(seed + i)  # drawn post by post, as baseline_metrics does
        runs.append(_stack([_post_values(lab, random_scores(lab.ranks.size, rng), ks) for lab in labels]))
    keys = runs[0].keys
    random_stats = PostStats(
        {k: np.mean([r.num[k] for r in runs], axis=0) for k in keys},
        {k: np.mean([r.den[k] for r in runs], axis=0) for k in keys},
    )
    longest = _stack([_post_values(lab, longest_first_scores(p["comments"]), ks) for lab, p in zip(labels, posts)])
    return {"random": random_stats, "longest_first": longest}


def length_metrics(posts: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Does the ranker just measure length? Posts are dicts with ``ranks``, ``scores`` and ``comments`` (texts).

    * ``length_spearman``: mean over posts of the Spearman correlation between the scores and the comments'
      character lengths; posts where either is constant are left out, ``length_spearman_n_posts`` counts the rest.
    * ``shorter_better_pair_accuracy``: pair accuracy (micro) on the label-ordered pairs whose better comment is
      the strictly shorter one, ``shorter_better_n_pairs`` of them. Longest-first scores 0, a ranker that only
      measures length scores below 0.5.

    NaN where no post (pair) counts.
    """
    if not posts:
        return {"length_spearman": float("nan"), "length_spearman_n_posts": 0.0,
                "shorter_better_pair_accuracy": float("nan"), "shorter_better_n_pairs": 0.0}  # fmt: skip
    stats = post_stats([{"ranks": p["ranks"], "scores": p["scores"], "comments": p["comments"]} for p in posts], (5,))
    values = stats.values()
    return {key: values[key] for key in ("length_spearman", "length_spearman_n_posts",
                                         "shorter_better_pair_accuracy", "shorter_better_n_pairs")}  # fmt: skip
