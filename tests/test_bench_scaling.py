"""The pure parts of benchmarks/bench_scaling.py: the fixed split, the nested training subsets, the runs.

A synthetic stand-in for the Reddit file (never the Reddit data itself) with the script's subreddit names."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_scaling", ROOT / "benchmarks" / "bench_scaling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake_reddit(tmp_path, bench):
    subs = [*bench.TEST, *bench.VALIDATION, "reddit.com/r/AskMen", "reddit.com/r/learnprogramming"]
    lines = [
        json.dumps({"id": f"{site}:{i}", "site": site, "text": f"title {i}",
                    "comments": [{"text": f"{site} {i} c{j}", "score": j, "votes": 10 - j} for j in range(3)]})
        for site in subs for i in range(40)
    ]  # fmt: skip
    path = tmp_path / "reddit.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_split_is_fixed_and_disjoint(bench, fake_reddit):
    by_source, _, _ = bench.load_splits(fake_reddit)
    again, _, _ = bench.load_splits(fake_reddit)
    reddit = by_source["reddit"]
    assert {p.meta["site"] for p in reddit["test"]} == set(bench.TEST)
    assert {p.meta["site"] for p in reddit["validation"]} == set(bench.VALIDATION)
    ids = {name: {p.post_id for p in posts} for name, posts in reddit.items()}
    assert not (ids["train"] & ids["validation"] or ids["train"] & ids["test"] or ids["validation"] & ids["test"])
    assert ids == {name: {p.post_id for p in posts} for name, posts in again["reddit"].items()}
    se_sites = {p.meta["site"] for p in by_source["se"]["test"]}
    assert se_sites == set(bench.SE_TEST)


def test_training_sizes_are_nested_and_seeded(bench, fake_reddit):
    train = bench.load_splits(fake_reddit)[0]["reddit"]["train"]
    ids = {n: [p.post_id for p in bench.training_subset(train, n, seed=0)] for n in (10, 20, "all")}
    assert ids[10] == ids[20][:10] and set(ids[20]) <= set(ids["all"]) and len(ids["all"]) == len(train)
    assert ids[20] == [p.post_id for p in bench.training_subset(list(reversed(train)), 20, seed=0)]
    assert ids[20] != [p.post_id for p in bench.training_subset(train, 20, seed=1)]


def test_large_sizes_run_one_seed(bench):
    runs = bench.runs(["250", "2000", "all"], [0, 1, 2], ["curve", "se"])
    assert runs == [("reddit", "250", 0), ("reddit", "250", 1), ("reddit", "250", 2), ("reddit", "2000", 0),
                    ("reddit", "all", 0), ("se", "all", 0)]  # fmt: skip
    every = bench.runs(["2000", "all"], [0, 1], ["curve"], small="all")
    assert every == [("reddit", "2000", 0), ("reddit", "2000", 1), ("reddit", "all", 0), ("reddit", "all", 1)]


def test_absent_reddit_data_is_said(bench, tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["bench_scaling.py", "--reddit", str(tmp_path / "missing.jsonl.gz")])
    with pytest.raises(SystemExit, match="Reddit data is absent"):
        bench.main()
