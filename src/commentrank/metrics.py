"""Ranking metrics for reward models that rank the comments under a post (pure numpy).

Conventions
-----------
* ``scores`` are model rewards, higher = better.
* ``ranks`` are labels, 0 = best comment, unique within a post (see :class:`commentrank.records.Comment`).
* ``relevance`` is a non-negative graded gain, higher = better.

NDCG uses linear gain (``DCG = sum_i rel_i / log2(i + 2)``) and reproduces ``sklearn.metrics.ndcg_score`` exactly,
including its tie handling (``ignore_ties=False``): comments with tied predicted scores share the average of their
gains over the discounts of the positions the tied block occupies (McSherry & Najork, 2008). A post whose ideal
DCG is 0 (all relevance 0) scores 0, as in sklearn. Unlike sklearn, a post with a single comment is allowed
(NDCG 1.0 if its relevance is positive, else 0.0).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "adjacent_pair_rewards",
    "baseline_metrics",
    "corpus_pair_accuracy",
    "dcg_at_k",
    "grouped_ndcg",
    "longest_first_scores",
    "mean_ndcg",
    "ndcg_at_k",
    "pair_accuracy",
    "paired_ndcg",
    "post_pair_accuracy",
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
    discount_cumsum = np.cumsum(_discount(rel.size, k))
    _, inv, counts = np.unique(-sc, return_inverse=True, return_counts=True)
    block_gain = np.zeros(counts.size)
    np.add.at(block_gain, inv.reshape(-1), rel)
    block_gain /= counts
    block_end = np.cumsum(counts) - 1
    block_discount = np.diff(discount_cumsum[block_end], prepend=0.0)
    return float((block_gain * block_discount).sum())


def _ideal_dcg(rel: np.ndarray, k: int | None) -> float:
    return float(_discount(rel.size, k).dot(np.sort(rel)[::-1]))


def ndcg_at_k(relevance: ArrayLike, scores: ArrayLike, k: int | None = None) -> float:
    """NDCG@k of one post, equal to ``sklearn.metrics.ndcg_score([relevance], [scores], k=k)``.

    ``relevance`` must be non-negative (as sklearn requires). Returns 0.0 when the ideal DCG is 0.
    """
    rel, sc = _as_pair(relevance, scores)
    if (rel < 0).any():
        raise ValueError("NDCG should not be used on negative relevance values")
    ideal = _ideal_dcg(rel, k)
    if ideal == 0:
        return 0.0
    return dcg_at_k(rel, sc, k) / ideal


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


_PAIR_BLOCK = 1024


def _pair_counts(ranks: ArrayLike, scores: ArrayLike) -> tuple[float, int]:
    """(credit, number of label-ordered pairs) of one post; a win is 1, a score tie 0.5, a loss 0."""
    r = np.asarray(ranks, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if r.ndim != 1 or r.shape != s.shape:
        raise ValueError(f"ranks and scores must be 1-D of equal length, got {r.shape} and {s.shape}")
    credit, n_pairs = 0.0, 0
    for start in range(0, r.size, _PAIR_BLOCK):  # blocks of rows: memory O(block x n), also for huge threads
        rows = slice(start, start + _PAIR_BLOCK)
        better = r[rows, None] < r[None, :]  # i has a better (smaller) rank than j; tied ranks form no pair
        credit += (better & (s[rows, None] > s[None, :])).sum() + 0.5 * (better & (s[rows, None] == s[None, :])).sum()
        n_pairs += int(better.sum())
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

    Per post: ``1 / log2(p + 2)`` if the best comment's predicted 0-based position ``p < k``, else 0. With tied
    scores ``p`` is the number of comments with a strictly higher score (ties resolved in the best comment's favour,
    optimistic; this differs from sklearn's tie averaging). NaN for no posts.
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
        p = int((s_arr > s_arr[np.argmin(r_arr)]).sum())
        values.append(1.0 / np.log2(p + 2) if p < k else 0.0)
    return float(np.mean(values))


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


def ranking_metrics(posts: Sequence[Mapping[str, Any]], ks: Iterable[int] = (1, 2, 3, 4, 5)) -> dict[str, float]:
    """Standard report over posts given as dicts with ``ranks``, ``scores`` (higher = better), optional ``votes``.

    Keys: ``ndcg@k`` (relevance from rank) for each k; ``ndcg_votes@k`` (relevance ``votes - min``) for each k, only
    when every post has complete votes; ``top1_ndcg@5``; ``pair_accuracy`` (micro average over all pairs); the CUP IT
    solution's ``grouped_ndcg@5`` (:func:`grouped_ndcg`, the same value as ``ndcg@5``) and ``paired_ndcg@2``
    (:func:`paired_ndcg` over the adjacent pairs of each post, :func:`adjacent_pair_rewards`); ``n_posts``;
    ``n_comments``.
    """
    ks = tuple(ks)
    ranks = [np.asarray(p["ranks"], dtype=np.float64) for p in posts]
    scores = [np.asarray(p["scores"], dtype=np.float64) for p in posts]
    rel_ranks = [relevance_from_ranks(r) for r in ranks]
    out: dict[str, float] = {f"ndcg@{k}": mean_ndcg(rel_ranks, scores, k) for k in ks}
    if posts and all(_has_votes(p) for p in posts):
        rel_votes = [relevance_from_votes(p["votes"]) for p in posts]
        out.update({f"ndcg_votes@{k}": mean_ndcg(rel_votes, scores, k) for k in ks})
    out["top1_ndcg@5"] = top1_ndcg(ranks, scores, 5)
    out["pair_accuracy"] = corpus_pair_accuracy(ranks, scores)
    out["grouped_ndcg@5"] = grouped_ndcg(ranks, scores, 5)  # the CUP IT solution's names for its two metrics
    out["paired_ndcg@2"] = paired_ndcg(*adjacent_pair_rewards(ranks, scores), k=2)
    out["n_posts"] = float(len(posts))
    out["n_comments"] = float(sum(r.size for r in ranks))
    return {key: float(value) for key, value in out.items()}


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
    if n_seeds < 1:
        raise ValueError(f"n_seeds must be >= 1, got {n_seeds}")
    ks = tuple(ks)
    runs = []
    for i in range(n_seeds):
        rng = np.random.default_rng(seed + i)
        runs.append(ranking_metrics([{**p, "scores": random_scores(len(p["ranks"]), rng)} for p in posts], ks))
    random_avg = {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}
    longest = ranking_metrics([{**p, "scores": longest_first_scores(p["comments"])} for p in posts], ks)
    return {"random": random_avg, "longest_first": longest}
