"""Tests for commentrank.metrics and the metrics/comment_ndcg evaluate module."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import dcg_score, ndcg_score

from commentrank import metrics as M

LOG3 = 1 / math.log2(3)  # discount of the second position


def _random_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    n = int(rng.integers(2, 13))
    relevance = rng.integers(0, 4, size=n).astype(float)  # few levels: many relevance ties, sometimes all 0
    if rng.random() < 0.5:
        scores = rng.integers(0, 3, size=n).astype(float)  # deliberately tied scores
    else:
        scores = rng.normal(size=n)
        scores[rng.integers(0, n)] = scores[0]  # at least one tie half of the time
    return relevance, scores, int(rng.integers(1, 7))


def test_ndcg_and_dcg_match_sklearn_on_random_inputs():
    rng = np.random.default_rng(0)
    n_tied, n_zero = 0, 0
    for _ in range(400):
        rel, sc, k = _random_case(rng)
        n_tied += len(np.unique(sc)) < len(sc)
        n_zero += not rel.any()
        assert M.ndcg_at_k(rel, sc, k) == pytest.approx(ndcg_score([rel], [sc], k=k), abs=1e-9)
        assert M.dcg_at_k(rel, sc, k) == pytest.approx(dcg_score([rel], [sc], k=k), abs=1e-9)
    assert n_tied > 100 and n_zero > 0  # the random cases really exercise ties and all-zero posts


def test_ndcg_hand_cases():
    # Tied block straddling k=1: mean gain (1 + 0) / 2 times discount 1 over ideal 1.
    assert M.ndcg_at_k([1, 0], [0.3, 0.3], k=1) == pytest.approx(0.5)
    assert M.ndcg_at_k([2, 1, 0], [3, 2, 1], k=3) == pytest.approx(1.0)
    assert M.ndcg_at_k([0, 1], [1.0, 0.0], k=2) == pytest.approx(LOG3)
    assert M.ndcg_at_k([0, 0, 0], [1, 2, 3], k=2) == 0.0  # ideal DCG 0 -> 0, like sklearn
    assert M.ndcg_at_k([2, 0, 1], [0.1, 0.5, 0.9], k=50) == pytest.approx(ndcg_score([[2, 0, 1]], [[0.1, 0.5, 0.9]]))
    assert M.ndcg_at_k([3], [0.2], k=5) == 1.0  # a single comment is allowed
    with pytest.raises(ValueError):
        M.ndcg_at_k([1, -1], [0, 1], k=2)
    with pytest.raises(ValueError):
        M.ndcg_at_k([1, 0], [0, 1, 2], k=2)


def test_mean_ndcg_averages_posts_of_varying_length():
    rels = [[2, 1, 0], [0, 1], [1, 0, 2, 3]]  # = n - 1 - rank of the ranks below
    scores = [[0.1, 0.2, 0.3], [5.0, 5.0], [1, 2, 3, 4]]
    expected = np.mean([ndcg_score([r], [s], k=2) for r, s in zip(rels, scores)])
    assert M.mean_ndcg(rels, scores, 2) == pytest.approx(expected, abs=1e-12)
    assert M.grouped_ndcg([[0, 1, 2], [1, 0], [2, 3, 1, 0]], scores, 2) == pytest.approx(expected, abs=1e-12)


def test_relevance_helpers():
    np.testing.assert_array_equal(M.relevance_from_ranks([0, 2, 1, 3]), [3, 1, 2, 0])
    np.testing.assert_array_equal(M.relevance_from_ranks([0]), [0])
    np.testing.assert_array_equal(M.relevance_from_votes([5, -2, 5, 0]), [7, 0, 7, 2])
    np.testing.assert_array_equal(M.relevance_from_votes([4, 4]), [0, 0])


def test_post_pair_accuracy_hand_cases():
    assert M.pair_accuracy([0, 1, 2], [3.0, 2.0, 1.0]) == 1.0
    assert M.pair_accuracy([0, 1, 2], [1.0, 2.0, 3.0]) == 0.0
    # pairs (0,1): win, (0,2): tie 0.5, (1,2): loss -> 1.5 / 3
    assert M.pair_accuracy([0, 1, 2], [2.0, 1.0, 2.0]) == pytest.approx(0.5)
    assert M.pair_accuracy([1, 0], [0.0, 0.0]) == 0.5
    assert M.pair_accuracy([2, 0, 1], [0.0, 1.0, 0.5]) == 1.0  # label order is taken from ranks, not position
    assert math.isnan(M.post_pair_accuracy([0], [1.0]))


def test_corpus_pair_accuracy_is_micro_average():
    ranks = [[0, 1], [0, 1, 2]]
    scores = [[0.0, 1.0], [3.0, 2.0, 1.0]]  # 0 of 1 pairs, 3 of 3 pairs
    assert M.pair_accuracy(ranks, scores) == pytest.approx(3 / 4)  # micro, not the macro 0.5
    assert M.corpus_pair_accuracy(ranks, scores) == pytest.approx(3 / 4)


def test_top1_ndcg_hand_cases():
    assert M.top1_ndcg([[0, 1, 2]], [[3, 2, 1]], k=5) == 1.0
    assert M.top1_ndcg([[1, 0, 2]], [[3, 2, 1]], k=5) == pytest.approx(LOG3)  # best comment predicted 2nd
    assert M.top1_ndcg([[1, 0, 2]], [[3, 2, 1]], k=1) == 0.0
    assert M.top1_ndcg([[2, 1, 0]], [[3, 2, 1]], k=5) == pytest.approx(0.5)  # 3rd: 1/log2(4)
    assert M.top1_ndcg([[1, 0]], [[2, 2]], k=1) == 0.5  # tied for first: the mean over positions 0 and 1
    assert M.top1_ndcg([[1, 0, 2]], [[2, 2, 2]], k=5) == pytest.approx((1 + LOG3 + 0.5) / 3)
    assert M.top1_ndcg([[0, 1], [1, 0]], [[1, 0], [1, 0]], k=5) == pytest.approx((1 + LOG3) / 2)


def test_equal_vote_pairs_counts_the_pairs_of_posts_with_votes_that_tie():
    posts = [{"votes": [5, 5, 1, 5]}, {"votes": [2, 1]}, {"votes": [3, None, 3]}, {"votes": None}]
    assert M.equal_vote_pairs(posts) == (3, 7)  # 3 of the first post's 6 pairs tie; the second's 1 does not


def test_top1_ndcg_is_sklearns_ndcg_of_the_best_comment_alone_with_ties():
    rng = np.random.default_rng(3)
    for _ in range(200):
        n, k = int(rng.integers(2, 7)), int(rng.integers(1, 6))
        ranks = rng.permutation(n)
        scores = rng.integers(0, 3, n).astype(float)  # many ties
        binary = (ranks == 0).astype(float)
        assert M.top1_ndcg([ranks], [scores], k=k) == pytest.approx(ndcg_score([binary], [scores], k=k), abs=1e-12)


def test_paired_ndcg_hand_cases_and_sklearn():
    assert M.paired_ndcg([1.0], [0.0], k=1) == 1.0
    assert M.paired_ndcg([0.0], [1.0], k=1) == 0.0
    assert M.paired_ndcg([0.5], [0.5], k=1) == 0.5
    assert M.paired_ndcg([0.0], [1.0], k=2) == pytest.approx(LOG3)
    assert M.paired_ndcg([0.5], [0.5]) == pytest.approx(0.8155, abs=1e-4)
    chosen, rejected = [1.0, 0.0, 0.3, 2.0], [0.0, 1.0, 0.3, 2.5]
    for k in (1, 2, 3):
        expected = np.mean([ndcg_score([[1, 0]], [[c, r]], k=k) for c, r in zip(chosen, rejected)])
        assert M.paired_ndcg(chosen, rejected, k=k) == pytest.approx(expected, abs=1e-12)


def _posts(with_votes: bool) -> list[dict]:
    posts = [
        {"ranks": [0, 1, 2], "scores": [0.9, 0.5, 0.1], "votes": [10, 3, 3]},
        {"ranks": [1, 0], "scores": [0.2, 0.4], "votes": [1, 7]},
    ]
    if not with_votes:
        posts[1]["votes"] = None
    return posts


def test_ranking_metrics_keys_and_values():
    out = M.ranking_metrics(_posts(with_votes=False), ks=(1, 3))
    assert set(out) == {"ndcg@1", "ndcg@3", "top1_ndcg@5", "pair_accuracy", "grouped_ndcg@5", "paired_ndcg@2",
                        "n_posts", "n_comments"}  # fmt: skip
    assert all(type(v) is float for v in out.values())
    assert out["ndcg@1"] == 1.0 and out["pair_accuracy"] == 1.0 and out["top1_ndcg@5"] == 1.0
    assert out["n_posts"] == 2 and out["n_comments"] == 5

    out = M.ranking_metrics(_posts(with_votes=True), ks=(1, 3))
    assert {"ndcg_votes@1", "ndcg_votes@3"} <= set(out)
    assert out["ndcg_votes@3"] == pytest.approx(1.0)


def test_ranking_metrics_report_the_cup_it_grouped_and_paired_ndcg():
    posts = [{"ranks": [2, 0, 1, 3], "scores": [0.3, 0.9, 0.1, 0.0]}, {"ranks": [1, 0], "scores": [0.5, 0.5]}]
    out = M.ranking_metrics(posts)
    assert out["grouped_ndcg@5"] == out["ndcg@5"] == M.grouped_ndcg([p["ranks"] for p in posts],
                                                                   [p["scores"] for p in posts], 5)  # fmt: skip
    # adjacent pairs: post 1: 0>1 (0.9 vs 0.1, win), 1>2 (0.1 vs 0.3, loss), 2>3 (0.3 vs 0.0, win); post 2: a tie
    chosen, rejected = M.adjacent_pair_rewards([p["ranks"] for p in posts], [p["scores"] for p in posts])
    assert chosen.tolist() == [0.9, 0.1, 0.3, 0.5] and rejected.tolist() == [0.1, 0.3, 0.0, 0.5]
    assert out["paired_ndcg@2"] == pytest.approx(ndcg_score([[1, 0]] * 4, np.stack([chosen, rejected], 1), k=2))


def test_ranking_metrics_detects_bad_rankings():
    posts = [{"ranks": [0, 1, 2], "scores": [0.1, 0.5, 0.9]}]
    out = M.ranking_metrics(posts, ks=(3,))
    assert out["ndcg@3"] == pytest.approx(ndcg_score([[2, 1, 0]], [[0.1, 0.5, 0.9]], k=3))
    assert out["pair_accuracy"] == 0.0 and out["top1_ndcg@5"] == pytest.approx(0.5)


def test_baselines():
    rng = np.random.default_rng(1)
    posts = []
    for _ in range(30):
        n = int(rng.integers(2, 7))
        lengths = rng.permutation(np.arange(1, n + 1) * 7)
        ranks = np.argsort(np.argsort(-lengths))  # longest comment = best rank
        posts.append({"ranks": ranks.tolist(), "comments": ["x" * int(m) for m in lengths], "votes": lengths.tolist()})
    out = M.baseline_metrics(posts, n_seeds=5, seed=0, ks=(1, 5))
    assert set(out) == {"random", "longest_first"}
    assert out["longest_first"]["ndcg@5"] == pytest.approx(1.0)
    assert out["longest_first"]["pair_accuracy"] == 1.0
    assert out["longest_first"]["ndcg_votes@1"] == pytest.approx(1.0)

    singles = []
    for s in range(5):
        gen = np.random.default_rng(s)
        singles.append(M.ranking_metrics([{**p, "scores": M.random_scores(len(p["ranks"]), gen)} for p in posts]))
    per_seed = [run["ndcg@5"] for run in singles]
    assert min(per_seed) < max(per_seed)
    assert min(per_seed) <= out["random"]["ndcg@5"] <= max(per_seed)
    assert out["random"]["ndcg@5"] == pytest.approx(np.mean(per_seed))
    assert out["random"]["ndcg@5"] < 0.99


def test_longest_and_random_scores():
    np.testing.assert_array_equal(M.longest_first_scores(["ab", "", "abcd"]), [2.0, 0.0, 4.0])
    a, b = M.random_scores(4, 3), M.random_scores(4, 3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (4,) and len(np.unique(a)) == 4


def test_evaluate_module_loads_and_agrees():
    evaluate = pytest.importorskip("evaluate")
    metric = evaluate.load(str(Path(__file__).parents[1] / "metrics" / "comment_ndcg"))
    rng = np.random.default_rng(2)
    rels, scores = [], []
    for _ in range(25):
        rel, sc, _ = _random_case(rng)
        rels.append(rel)
        scores.append(sc.astype(np.float32).astype(np.float64))  # the module's features are float32
    for k in (1, 3, 5):
        out = metric.compute(predictions=scores, references=rels, k=k)
        assert set(out) == {f"ndcg@{k}"}
        assert out[f"ndcg@{k}"] == pytest.approx(M.mean_ndcg(rels, scores, k), abs=1e-9)
    assert out["ndcg@5"] < 1.0  # random rewards: a module returning a constant would be caught


def test_metrics_of_a_huge_thread_need_memory_linear_in_comments():
    import tracemalloc

    rng = np.random.default_rng(0)
    n = 20_000
    ranks, scores = rng.permutation(n), rng.normal(size=n)
    tracemalloc.start()
    out = M.ranking_metrics([{"ranks": ranks, "scores": scores, "votes": (n - ranks) // 3}])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 200 * 2**20  # n x n arrays would take 400 MB (bool) to 3.2 GB (float64)
    assert out["pair_accuracy"] == pytest.approx(0.5, abs=0.01)
    small = rng.permutation(1500), rng.integers(0, 5, size=1500).astype(float)  # spans two blocks, score ties
    r, s = small
    better = r[:, None] < r[None, :]
    expected = (better & (s[:, None] > s[None, :])).sum() + 0.5 * (better & (s[:, None] == s[None, :])).sum()
    assert M.post_pair_accuracy(r, s) == pytest.approx(expected / better.sum())
