"""Bootstrap intervals over posts, paired model-minus-baseline differences, length-controlled metrics and the
per-site breakdown (commentrank.metrics, commentrank.score.report, scripts/score.py, the model card)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import ndcg_score
from test_scoring import tiny_model

from commentrank import intervals as I
from commentrank import metrics as M
from commentrank.score.report import evaluate_rewards, evaluation_details, report_markdown, verdict

from conftest import SAMPLE, load_script


def make_posts(n_posts: int, seed: int = 0, noise: float = 2.0) -> list[dict]:
    """Posts of 2-9 comments with distinct ranks, votes, texts of random lengths and noisy scores (-rank + noise)."""
    rng = np.random.default_rng(seed)
    posts = []
    for _ in range(n_posts):
        n = int(rng.integers(2, 10))
        ranks = rng.permutation(n)
        posts.append({
            "ranks": ranks.tolist(), "votes": (3 * (n - ranks)).tolist(),
            "comments": ["x" * int(m) for m in rng.integers(1, 200, n)],
            "scores": (-ranks + noise * rng.normal(size=n)).tolist(),
        })  # fmt: skip
    return posts


@pytest.fixture(scope="module")
def posts():
    return make_posts(120)


def test_post_stats_match_sklearn_scipy_and_pairs_counted_one_by_one(posts):
    stats = M.post_stats(posts)
    assert set(stats.keys) == (set(M.ranking_metrics(posts)) - {"n_posts", "n_comments"}) | set(M.LENGTH_KEYS)
    wins = pairs = short_wins = short_pairs = 0
    for p in posts:
        ranks, scores, chars = p["ranks"], p["scores"], [len(c) for c in p["comments"]]
        for i, j in ((i, j) for i in range(len(ranks)) for j in range(len(ranks)) if ranks[i] < ranks[j]):
            win = 1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j] else 0.0
            wins, pairs = wins + win, pairs + 1
            if chars[i] < chars[j]:  # the better comment is the shorter one
                short_wins, short_pairs = short_wins + win, short_pairs + 1
    assert stats.value("pair_accuracy") == pytest.approx(wins / pairs, abs=1e-12)
    assert stats.value("shorter_better_pair_accuracy") == pytest.approx(short_wins / short_pairs, abs=1e-12)
    rhos = [spearmanr(p["scores"], [len(c) for c in p["comments"]])[0] for p in posts]
    assert stats.value("length_spearman") == pytest.approx(np.nanmean(rhos), abs=1e-12)
    for k in (1, 3, 5):
        by_rank = [ndcg_score([len(p["ranks"]) - 1 - np.asarray(p["ranks"])], [p["scores"]], k=k) for p in posts]
        by_votes = [ndcg_score([np.asarray(p["votes"]) - min(p["votes"])], [p["scores"]], k=k) for p in posts]
        assert stats.value(f"ndcg@{k}") == pytest.approx(np.mean(by_rank), abs=1e-12), k
        assert stats.value(f"ndcg_votes@{k}") == pytest.approx(np.mean(by_votes), abs=1e-12), k


def test_intervals_contain_the_point_and_are_reproducible(posts):
    stats = M.post_stats(posts)
    for key in stats.keys:
        iv = I.bootstrap_interval(stats, key, n_resamples=500, seed=7)
        assert iv.method in ("BCa", "percentile")
        assert iv.point == pytest.approx(stats.value(key)) and iv.low <= iv.point <= iv.high, key
        assert iv.low < iv.high, key  # noisy scores: no metric is constant over posts
        assert I.bootstrap_interval(stats, key, n_resamples=500, seed=7) == iv  # same seed, same interval
    other = [I.bootstrap_interval(stats, key, n_resamples=500, seed=8) for key in ("ndcg@5", "pair_accuracy")]
    same = [I.bootstrap_interval(stats, key, n_resamples=500, seed=7) for key in ("ndcg@5", "pair_accuracy")]
    assert other != same  # and the seed is really used


def _width(interval: I.Interval) -> float:
    return interval.high - interval.low


def test_intervals_narrow_with_more_posts():
    small, large = M.post_stats(make_posts(40, seed=1)), M.post_stats(make_posts(640, seed=2))
    for key in ("ndcg@5", "pair_accuracy", "top1_ndcg@5", "length_spearman", "shorter_better_pair_accuracy"):
        width_small, width_large = _width(I.bootstrap_interval(small, key)), _width(I.bootstrap_interval(large, key))
        assert 0 < width_large < width_small / 2, key  # 16x the posts: about 1/4 of the width


def test_paired_difference_of_a_ranker_with_itself_is_zero_and_an_oracle_beats_random(posts):
    stats = M.post_stats(posts)
    for key in stats.keys:
        assert tuple(I.paired_difference_interval(stats, stats, key)[:3]) == (0.0, 0.0, 0.0), key
    oracle = M.post_stats([{**p, "scores": M.relevance_from_ranks(p["ranks"])} for p in posts])
    random = M.baseline_post_stats(posts, n_seeds=5)["random"]
    for key in ("ndcg@1", "ndcg@5", "ndcg_votes@5", "top1_ndcg@5", "pair_accuracy", "paired_ndcg@2"):
        diff = I.paired_difference_interval(oracle, random, key, seed=1)
        assert diff.point == pytest.approx(oracle.value(key) - random.value(key))
        assert 0 < diff.low <= diff.point <= diff.high, key
        assert verdict({"point": diff.point, "low": diff.low, "high": diff.high}, {"confidence": 0.95}) == "above"
    undecided = {"point": 0.0, "low": -0.01, "high": 0.02}
    assert verdict(undecided, {"confidence": 0.95}) == "not distinguishable at 95%"


def test_micro_pair_accuracy_under_resampling_equals_a_brute_force_recomputation(posts):
    stats = M.post_stats(posts)
    rng = np.random.default_rng(5)
    index = rng.integers(0, len(posts), size=(3, len(posts)))  # three resamples at once, as the bootstrap batches
    resampled = I.ratio_statistic(stats.num["pair_accuracy"][index], stats.den["pair_accuracy"][index], axis=-1)
    for row, value in zip(index, resampled):
        again = [posts[i] for i in row]
        credit = pairs = 0.0
        for p in again:  # brute force over every pair of every resampled post
            r, s = np.asarray(p["ranks"]), np.asarray(p["scores"])
            for i in range(r.size):
                for j in range(r.size):
                    if r[i] < r[j]:
                        pairs += 1
                        credit += 1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0
        assert value == pytest.approx(credit / pairs, abs=1e-12)
        assert value == pytest.approx(
            M.corpus_pair_accuracy([p["ranks"] for p in again], [p["scores"] for p in again])
        )
        assert stats.subset(row).value("pair_accuracy") == pytest.approx(value, abs=1e-12)
        assert stats.subset(row).value("ndcg@5") == pytest.approx(M.ranking_metrics(again)["ndcg@5"], abs=1e-12)


def test_length_metrics_of_longest_first_and_shortest_first():
    posts = [
        {"ranks": [0, 1, 2], "comments": ["a", "bbb", "cc"]},  # better comment shorter in 0>1, 0>2; 1>2 longer
        {"ranks": [1, 0, 2], "comments": ["dddd", "e", "ffff"]},  # 0>1, 0>2 shorter; 1>2 a length tie: left out
        {"ranks": [0, 1], "comments": ["gg", "hh"]},  # constant length: no Spearman, no pair
    ]
    lengths = [M.longest_first_scores(p["comments"]) for p in posts]
    longest = M.length_metrics([{**p, "scores": s} for p, s in zip(posts, lengths)])
    shortest = M.length_metrics([{**p, "scores": -s} for p, s in zip(posts, lengths)])
    assert longest["shorter_better_pair_accuracy"] == 0.0 and shortest["shorter_better_pair_accuracy"] == 1.0
    assert longest["shorter_better_n_pairs"] == shortest["shorter_better_n_pairs"] == 4
    assert longest["length_spearman"] == pytest.approx(1.0) and shortest["length_spearman"] == pytest.approx(-1.0)
    assert longest["length_spearman_n_posts"] == 2  # the constant-length post is left out
    by_rank = M.length_metrics([{**p, "scores": M.relevance_from_ranks(p["ranks"])} for p in posts])
    assert by_rank["shorter_better_pair_accuracy"] == 1.0  # the labels' own order gets every such pair right
    # post 1: relevance (2, 1, 0) vs lengths (1, 3, 2): -0.5; post 2: relevance (1, 2, 0) vs lengths (4, 1, 4), a tie
    assert by_rank["length_spearman"] == pytest.approx((-0.5 - np.sqrt(3) / 2) / 2)
    expected = [spearmanr(M.relevance_from_ranks(p["ranks"]), n).statistic for p, n in zip(posts[:2], lengths)]
    assert by_rank["length_spearman"] == pytest.approx(np.mean(expected))

    many = make_posts(200, seed=4)
    baselines = M.baseline_post_stats(many, n_seeds=3)
    assert baselines["longest_first"].value("shorter_better_pair_accuracy") == 0.0
    assert baselines["longest_first"].value("length_spearman") == pytest.approx(1.0)
    assert abs(baselines["random"].value("length_spearman")) < 0.1
    rng = np.random.default_rng(0)
    noisy = [{**p, "scores": M.longest_first_scores(p["comments"]) + rng.normal(size=len(p["ranks"]))} for p in many]
    noisy_length = M.length_metrics(noisy)
    assert noisy_length["shorter_better_pair_accuracy"] < 0.5  # a ranker that only measures length
    iv = I.bootstrap_interval(baselines["longest_first"], "shorter_better_pair_accuracy")
    assert (iv.low, iv.high, iv.method) == (0.0, 0.0, "percentile")  # BCa is degenerate on a constant: percentile


def test_per_site_breakdown_on_rows_with_two_sites():
    posts = make_posts(9, seed=6)
    rows = [{**p, "prompt": "q", "site": "beer" if i % 3 else "cooking"} for i, p in enumerate(posts)]
    rows.append({**make_posts(1, seed=7)[0], "prompt": "q", "site": None})
    rewards = [r.pop("scores") for r in rows]
    details = evaluation_details(rows, rewards, n_seeds=2, n_bootstrap=0)
    assert list(details["per_site"]) == ["beer", "cooking", "unknown"]  # most posts first
    assert "intervals" not in details and details["bootstrap"] == {"n_resamples": 0}
    for site, members in (("beer", [i for i in range(9) if i % 3]), ("cooking", [0, 3, 6]), ("unknown", [9])):
        group = details["per_site"][site]
        assert group["n_posts"] == len(members) and set(group) == {"n_posts", "model", "longest_first"}
        scored = [{**rows[i], "scores": rewards[i]} for i in members]
        longest = [{**p, "scores": M.longest_first_scores(p["comments"])} for p in scored]
        for name, ranked in (("model", scored), ("longest_first", longest)):
            expected = M.ranking_metrics(ranked)
            assert group[name]["ndcg@5"] == pytest.approx(expected["ndcg@5"]), (site, name)
            assert group[name]["pair_accuracy"] == pytest.approx(expected["pair_accuracy"]), (site, name)


def test_bootstrap_report_shares_its_resamples():
    stats = M.post_stats(make_posts(500, seed=8))
    shifted = M.PostStats({k: v + stats.den[k] * 0.01 for k, v in stats.num.items()}, stats.den)
    report = I.bootstrap_report({"model": shifted, "copy": stats}, n_resamples=300)
    diff = report["differences"]["copy"]["ndcg@5"]
    assert diff["point"] == pytest.approx(0.01) and diff["low"] == pytest.approx(0.01)  # exactly +0.01 per post
    (low, high), (low0, high0) = report["intervals"]["model"]["ndcg@5"], report["intervals"]["copy"]["ndcg@5"]
    assert (low - low0, high - high0) == pytest.approx((0.01, 0.01))  # the same resamples, shifted by 0.01
    assert report["bootstrap"]["method"] == "BCa" and report["bootstrap"]["n_resamples"] == 300


def test_score_run_writes_intervals_differences_length_and_site_sections(tmp_path):
    model_dir = tiny_model(tmp_path / "rm")
    out = tmp_path / "scores"
    score = load_script("score").main
    score(["--model", str(model_dir), "--dataset", str(SAMPLE), "--output_dir", str(out), "--skip_invalid",
           "--max_posts", "30", "--max_length", "48", "--no_progress", "--n_bootstrap", "200"])  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    results = metrics["results"]
    assert set(results) == {"model", "random", "longest_first"}
    assert {"intervals", "differences", "per_site", "length_controlled", "bootstrap"} <= set(metrics)
    assert metrics["bootstrap"]["n_resamples"] == 200 and metrics["bootstrap"]["method"] == "BCa"
    for name, values in results.items():
        for key in ("ndcg@1", "ndcg@5", "ndcg_votes@5", "top1_ndcg@5", "pair_accuracy", "paired_ndcg@2"):
            low, high = metrics["intervals"][name][key]
            assert low - 1e-9 <= values[key] <= high + 1e-9, (name, key)
        lengths = metrics["length_controlled"][name]
        assert set(lengths) == {"length_spearman", "length_spearman_n_posts", "shorter_better_pair_accuracy",
                                "shorter_better_n_pairs"}  # fmt: skip
        if name != "model":
            diff = metrics["differences"][name]["ndcg@5"]
            assert diff["point"] == pytest.approx(results["model"]["ndcg@5"] - values["ndcg@5"])
            assert diff["low"] <= diff["point"] <= diff["high"]
    assert metrics["length_controlled"]["longest_first"]["shorter_better_pair_accuracy"] == 0.0
    assert metrics["length_controlled"]["longest_first"]["length_spearman"] == pytest.approx(1.0)
    assert sum(site["n_posts"] for site in metrics["per_site"].values()) == results["model"]["n_posts"]
    report = (out / "report.md").read_text()
    model = results["model"]
    low, high = metrics["intervals"]["model"]["ndcg@5"]
    assert f"{model['ndcg@5']:.3f} [{low:.3f}, {high:.3f}]" in report
    for section in ("## Model minus baseline", "## Length-controlled metrics", "## Per site", "| model - random |"):
        assert section in report, section
    assert "- Model vs **random** at 95%: " in report and "- Model vs **longest_first** at 95%: " in report
    assert (out / "ndcg_at_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_without_bootstrap_keeps_the_plain_tables(posts):
    rows = [{**p, "prompt": "q", "site": None} for p in posts[:10]]
    rewards = [p["scores"] for p in posts[:10]]
    results = evaluate_rewards(rows, rewards, n_seeds=2)
    details = evaluation_details(rows, rewards, n_seeds=2, n_bootstrap=0)
    info = {"model": "m", "dataset": "d", "max_length": 64, "n_truncated": 0, "n_comments": 50}
    report = report_markdown(results, info, details)
    assert f"| model | {results['model']['ndcg@1']:.4f} |" in report and "[" not in report.split("## Length")[0]
    assert "## Model minus baseline" not in report and "## Per site" not in report  # no sites, no intervals
    assert "## Length-controlled metrics" in report


def test_model_card_shows_intervals_verdicts_and_length_metrics(posts):
    from commentrank.model_card import build_model_card

    rows = [{**p, "prompt": "q", "site": "beer"} for p in posts]
    rewards = [p["scores"] for p in posts]
    results = evaluate_rewards(rows, rewards, n_seeds=2)
    details = evaluation_details(rows, rewards, n_seeds=2, n_bootstrap=200)
    card = str(build_model_card(model_id="me/rm", base_model="gpt2", dataset="me/data", results=results,
                                loss_type="listmle", text_pair=True, evaluation=details))  # fmt: skip
    low, high = details["intervals"]["model"]["ndcg@1"]
    assert f"| model | {results['model']['ndcg@1']:.3f} [{low:.3f}, {high:.3f}] |" in card
    assert "- Model vs **random** at 95%: above on NDCG@5 (+" in card
    assert "### Length-controlled metrics" in card and "| longest_first | 1.000 [1.000, 1.000] |" in card
    spearman = details["length_controlled"]["model"]["length_spearman"]
    assert f"value: {round(spearman, 4)}" in card.split("---")[1]  # model-index: the model's length Spearman


def test_the_training_callback_logs_the_length_controlled_metrics(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from commentrank.encoding import PairEncoder
    from commentrank.train.callbacks import RankingEvalCallback

    model_dir = tiny_model(tmp_path / "rm")
    posts = [{**p, "prompt": "Which beer?"} for p in make_posts(6, seed=9)]
    callback = RankingEvalCallback(posts, PairEncoder(AutoTokenizer.from_pretrained(model_dir), max_length=32))
    logged = []
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    callback.trainer = SimpleNamespace(model=model, log=logged.append)
    metrics = {}
    callback.on_evaluate(None, None, None, metrics=metrics)
    expected = {"eval_ndcg@5", "eval_pair_accuracy", "eval_length_spearman", "eval_shorter_better_pair_accuracy"}
    assert expected <= set(metrics)
    assert logged == [metrics] and -1 <= metrics["eval_length_spearman"] <= 1
    assert callback.last_metrics["shorter_better_n_pairs"] > 0
    assert callback.last_dtype == "float32"  # what the card states the results were scored in


@pytest.mark.parametrize(("collapsed", "weight", "says"), [(True, 0.3, "length alone"), (True, 0.0, "constant"),
                                                      (False, 0.0, None)])  # fmt: skip
def test_the_training_callback_warns_when_the_model_collapsed(collapsed, weight, says, tmp_path, caplog):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from commentrank.encoding import PairEncoder
    from commentrank.train.callbacks import RankingEvalCallback

    model_dir = tiny_model(tmp_path / "rm")
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    if collapsed:  # its reward no longer depends on the text: it ranks by the length term alone, or not at all
        torch.nn.init.zeros_(model.classifier.weight)
    posts = [{**p, "prompt": "Which beer?"} for p in make_posts(6, seed=9)]
    callback = RankingEvalCallback(posts, PairEncoder(AutoTokenizer.from_pretrained(model_dir), max_length=32))
    callback.trainer = SimpleNamespace(model=model, log=lambda logs: None, scored_length_weight=lambda: weight)
    with caplog.at_level("WARNING", logger="commentrank.train.callbacks"):
        callback.on_evaluate(None, SimpleNamespace(global_step=7), None, metrics={})
    assert ("at step 7: the model's" in caplog.text) == collapsed
    assert says is None or says in caplog.text


def test_an_interval_reads_as_text_with_signs_for_a_difference():
    interval = I.Interval(0.0114, -0.0041, 0.0268, "BCa")
    assert interval.as_text() == "0.011 [-0.004, 0.027]"
    assert interval.as_text(signed=True) == "+0.011 [-0.004, +0.027]"


def test_a_verdict_deciding_bound_that_rounds_to_zero_shows_its_sign():
    """+0.004 [+0.0004, +0.008] | above, never [+0.000, ...] next to "above": the report, the card's verdict lines
    and `Interval.as_text` print a difference the same way."""
    from commentrank.score.report import difference_table, verdict_lines

    bootstrap = {"confidence": 0.95}
    above = {"point": 0.004, "low": 0.0004, "high": 0.008}
    below = {"point": -0.004, "low": -0.008, "high": -0.0003}
    table = difference_table({"random": {"ndcg@5": above, "pair_accuracy": below}}, bootstrap)
    assert "| NDCG@5 | +0.004 [+0.0004, +0.008] | above |" in table
    assert "| pair accuracy | -0.004 [-0.008, -0.0003] | below |" in table
    (line,) = verdict_lines({"random": {"ndcg@5": above}}, bootstrap)
    assert line.endswith("above on NDCG@5 (+0.004 [+0.0004, +0.008]).")
    assert I.Interval(0.004, 0.0004, 0.008, "BCa").as_text(signed=True) == "+0.004 [+0.0004, +0.008]"
    undecided = {"point": 0.004, "low": -0.0004, "high": 0.008}  # 0 inside: three decimals say enough
    assert "| NDCG@5 | +0.004 [-0.000, +0.008] | not distinguishable at 95% |" in difference_table(
        {"random": {"ndcg@5": undecided}}, bootstrap
    )


def tied_model_posts() -> list[dict]:
    """Post A: the model's scores all tied (its length Spearman leaves A out, random's does not); B and C count for
    both."""
    return [
        {"ranks": [0, 1, 2], "comments": ["a", "bb", "ccc"], "scores": [0, 0, 0]},
        {"ranks": [0, 1], "comments": ["a", "bb"], "scores": [1, 0]},
        {"ranks": [0, 1, 2], "comments": ["ccc", "a", "bb"], "scores": [3, 2, 1]},
    ]


def test_a_paired_length_spearman_uses_only_the_posts_that_count_for_both_rankers():
    posts = tied_model_posts()
    model, random = M.post_stats(posts), M.baseline_post_stats(posts)["random"]
    assert model.den["length_spearman"].tolist() == [0, 1, 1] and (random.den["length_spearman"] > 0).all()
    both = [1, 2]
    expected = model.subset(both).value("length_spearman") - random.subset(both).value("length_spearman")
    assert expected == pytest.approx(-0.2875, abs=1e-3)  # (-1 + 0.5) / 2 minus random's mean on B and C
    diff = I.paired_difference_interval(model, random, "length_spearman", n_resamples=100)
    assert diff.point == pytest.approx(expected)


def test_a_paired_difference_of_a_metric_counted_by_the_labels_is_the_difference_of_the_values():
    """Pair accuracy counts the same posts for every ranker: its paired point is model minus random as reported."""
    posts = tied_model_posts()
    model, random = M.post_stats(posts), M.baseline_post_stats(posts)["random"]
    diff = I.paired_difference_interval(model, random, "pair_accuracy", n_resamples=100)
    assert diff.point == pytest.approx(model.value("pair_accuracy") - random.value("pair_accuracy"))
