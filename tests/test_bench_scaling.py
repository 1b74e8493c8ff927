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


def test_source_cap_samples_training_posts_only(bench, fake_reddit):
    by_source, _, _ = bench.load_splits(fake_reddit)
    capped, summary, _ = bench.load_splits(fake_reddit, cap=30)
    assert len(by_source["reddit"]["train"]) == 80 and len(capped["reddit"]["train"]) == 30
    assert {p.post_id for p in capped["reddit"]["train"]} < {p.post_id for p in by_source["reddit"]["train"]}
    assert len(capped["se"]["train"]) == min(30, len(by_source["se"]["train"]))
    for split in ("validation", "test"):
        assert capped["reddit"][split] == by_source["reddit"][split]
    assert summary.per_source[str(fake_reddit)]["train_dropped"] == 50


def test_source_cap_is_for_both_sources_only(bench, fake_reddit, monkeypatch):
    monkeypatch.setattr("sys.argv", ["bench_scaling.py", "--reddit", str(fake_reddit), "--max_train_posts_per_source",
                                     "100"])  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        bench.main()
    assert exit_info.value.code == 2


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


def write_scores(folder: Path, posts: dict[str, list[float]]) -> Path:
    """A score.py output folder: predictions.jsonl with the rewards and, as score.py writes it, the predicted rank."""
    folder.mkdir(parents=True)
    lines = []
    for post_id, rewards in posts.items():
        predicted = sorted(range(len(rewards)), key=lambda i: -rewards[i])
        comments = [
            {"text": f"{post_id} c{i}", "score": predicted.index(i), "reward": r} for i, r in enumerate(rewards)
        ]
        lines.append(json.dumps({"post_id": post_id, "text": "title", "comments": comments}))
    (folder / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_variant_is_paired_against_the_recipes_run_on_the_labels(bench, tmp_path):
    import datasets

    ranks = {f"p{i}": [0, 1, 2] for i in range(12)}  # the first comment is the best
    rows = {"post_id": list(ranks), "ranks": list(ranks.values())}
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict(rows)}).save_to_disk(
        str(tmp_path / "eval-reddit" / "listwise")
    )
    right = write_scores(tmp_path / "reddit-all-seed0-x-1" / "scores", {p: [3.0, 2.0, 1.0] for p in ranks})
    wrong = write_scores(tmp_path / "reddit-all-seed0" / "scores", {p: [1.0, 2.0, 3.0] for p in ranks})
    (wrong.parent / "train_seconds.txt").write_text("80.0\n")
    scored = [{"experiment": "reddit-x-1", "n_train": 9, "seed": 0, "seconds": 40.0, "eval": ("reddit", "validation"),
               "scores": right, "recipe": wrong},
              {"experiment": "reddit-x-1", "n_train": 9, "seed": 1, "seconds": 40.0, "eval": ("reddit", "validation"),
               "scores": right, "recipe": tmp_path / "reddit-all-seed1" / "scores"}]  # fmt: skip
    lines = bench.against_recipe_table(scored, tmp_path).splitlines()
    assert len(lines) == 3  # the header, its rule and seed 0: seed 1's recipe run is absent
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[:4] == ["reddit-x-1", "9", "0", "reddit validation"]
    assert float(cells[4]) == 1.0 and float(cells[5]) < 1.0  # from the labels, not the predicted ranks
    assert float(cells[6].split()[0]) > 0 and cells[7] == "40 / 80"
    assert bench.against_recipe_table(scored[1:], tmp_path) == ""


def test_a_variant_report_never_replaces_the_curves(bench, tmp_path):
    curve = bench.ROOT / "benchmarks" / "results" / "scaling.md"
    assert bench.report_path(None, tmp_path, "") == curve
    assert bench.report_path(None, tmp_path, "-max_length-48") == tmp_path / "scaling-max_length-48.md"
    assert bench.report_path(None, tmp_path, "-steps5") == tmp_path / "scaling-steps5.md"
    assert bench.report_path("/x/r.md", tmp_path, "-max_length-48") == Path("/x/r.md")


def test_beyond_length_takes_off_the_models_own_length_term(bench, tmp_path):
    import math

    import datasets

    ranks = {f"p{i}": [0, 1, 2] for i in range(12)}  # the first comment is the best and the shortest
    rows = {"post_id": list(ranks), "ranks": list(ranks.values())}
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict(rows)}).save_to_disk(
        str(tmp_path / "eval-reddit" / "listwise")
    )
    weight = 2.0  # the model's own part ranks right; its length term (texts c0 < c1 << c2) turns the order round
    scored = []
    for name, w in (("additive", weight), ("none", 0.0)):
        folder = tmp_path / name / "scores"
        write_scores(folder, {p: [0.3, 0.2, 0.1] for p in ranks})
        lines = []
        for line in (folder / "predictions.jsonl").read_text().splitlines():
            post = json.loads(line)
            for i, c in enumerate(post["comments"]):
                c["text"] = "x" * (1, 10, 1000)[i]
                c["reward"] += w * math.log1p(len(c["text"]))
            lines.append(json.dumps(post))
        (folder / "predictions.jsonl").write_text("\n".join(lines) + "\n")
        (tmp_path / name / "reward").mkdir()
        (tmp_path / name / "reward" / "commentrank_config.json").write_text(json.dumps({"length_weight": w}))
        scored.append(
            {"experiment": name, "n_train": 9, "seed": 0, "eval": ("reddit", "validation"), "scores": folder}
        )
    lines = bench.beyond_length_table(scored, tmp_path).splitlines()
    assert len(lines) == 3  # the header, its rule and the additive model: the one without a term is left out
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[:5] == ["additive", "9", "0", "reddit validation", "2.000"]
    with_term, without = (float(x) for x in cells[5].split(" / "))
    assert without == 1.0 and with_term < 1.0
    assert float(cells[6].split()[0]) > 0 and float(cells[7].split()[0]) > 0  # above longest-first and the full reward
    assert float(cells[8].split()[0]) == 1.0 and float(cells[9].split()[0]) == 1.0  # pair and shorter-better accuracy
    assert bench.beyond_length_table(scored[1:], tmp_path) == ""
