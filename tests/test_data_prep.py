import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from commentrank.configs import PrepArguments
from commentrank.data.prepare import main, run_prepare
from commentrank.data.readers import read_cupit_jsonl, read_rows
from commentrank.data.records import Comment, RankedPost
from commentrank.data.validation import InvalidInputError, PrepSummary, collect_posts
from commentrank.data.views import PairOptions, build_prompt, candidate_pairs, make_pairs, pair_counts, sft_rows

from conftest import POSTS_XML, SAMPLE


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def post(i, n=3, **extra):
    return {"id": f"p{i}", "text": f"Post {i}", "comments": [{"text": f"c{i}-{j}", "score": j} for j in range(n)],
            **extra}  # fmt: skip


def ranked(n=4, created=None):
    comments = [Comment(f"c{r}", r, created=created[r] if created else None) for r in range(n)]
    return RankedPost("p", "title", comments[::-1], body="body")


def test_pair_strategies_count_and_order():
    p = ranked(4)
    assert [(a.rank, b.rank) for a, b in candidate_pairs(p, "adjacent")] == [(0, 1), (1, 2), (2, 3)]
    assert len(candidate_pairs(p, "all")) == 6
    assert all(a.rank < b.rank for a, b in candidate_pairs(p, "all"))
    assert [(a.rank, b.rank) for a, b in candidate_pairs(p, "best_vs_rest")] == [(0, 1), (0, 2), (0, 3)]


def test_pairs_margin_cap_and_visibility():
    p = ranked(4, created=["2020-01-04", "2020-01-03", "2020-01-02", "2020-01-01"])  # better = later everywhere
    options = PairOptions("all", max_pairs_per_post=2, visibility_filter=True)
    rows = make_pairs(p, "prompt", options)
    assert len(rows) == 2 and pair_counts(p, options) == {
        "candidates": 6, "dropped_older_preferred": 0, "dropped_no_timestamp": 0, "dropped_cap": 4,
        "kept": 2}  # fmt: skip
    assert all(r["margin"] >= 1 and r["prompt"] == "prompt" for r in rows)
    older_best = ranked(3, created=["2020-01-01", "2020-01-02", "2020-01-03"])  # best answer was the first one
    assert make_pairs(older_best, "x", PairOptions("all", visibility_filter=True)) == []
    assert pair_counts(older_best, PairOptions("all", visibility_filter=True))["dropped_older_preferred"] == 3


@pytest.mark.parametrize("strategy", ["adjacent", "all", "best_vs_rest"])
def test_pair_counts_match_the_pairs_built_and_never_build_them(strategy):
    import random
    import tracemalloc

    from commentrank.data.views import visible

    rng = random.Random(0)
    for n in (2, 3, 7, 30):
        created = [rng.choice([None, "2020-01-0" + str(rng.randint(1, 9))]) for _ in range(n)]  # ties, gaps
        post = ranked(n, created=created)
        for cap, shown in ((None, True), (5, False), (5, True)):
            options = PairOptions(strategy, max_pairs_per_post=cap, visibility_filter=shown)
            counts, rows = pair_counts(post, options), make_pairs(post, "q", options)
            pairs = candidate_pairs(post, strategy)
            flags = [visible(a, b) for a, b in pairs]
            assert counts["candidates"] == len(pairs) and counts["kept"] == len(rows)
            if shown:
                assert counts["dropped_older_preferred"] == flags.count(False)
                assert counts["dropped_no_timestamp"] == flags.count(None)
            pool = [(a, b) for (a, b), f in zip(pairs, flags) if f or not shown]
            expected = random.Random(f"42:{post.post_id}").sample(pool, cap) if cap and len(pool) > cap else pool
            assert [(r["chosen"], r["rejected"]) for r in rows] == [(a.text, b.text) for a, b in expected]
    huge = ranked(20_000, created=[f"2020-{i % 12 + 1:02d}-{i % 28 + 1:02d}" for i in range(20_000)])
    tracemalloc.start()
    counts = pair_counts(huge, PairOptions(strategy, max_pairs_per_post=8, visibility_filter=True))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert counts["candidates"] == (20_000 * 19_999 // 2 if strategy == "all" else 19_999)
    assert peak < 20 * 2**20  # 200M "all" pairs counted in a few MB: memory linear in comments


def test_prompt_templates_and_sft():
    p = ranked(3)
    assert build_prompt(p) == "title"
    assert build_prompt(p, "{title}\n\n{body}") == "title\n\nbody"
    assert [r["text"] for r in sft_rows(p, "T", "best")] == ["T\n\nc0"]
    assert len(sft_rows(p, "T", "all")) == 3 and len(sft_rows(p, "T", "top_k", top_k=2)) == 2


@pytest.mark.parametrize(
    "line, field, reason",
    [
        ("{not json", "<line>", "malformed_json"),
        (json.dumps({"text": "t"}), "comments", "missing_field"),
        (json.dumps({"text": "t", "comments": [{"text": "a", "score": 0}]}), "comments", "too_few_comments"),
        (json.dumps({"text": "t", "comments": [{"text": "a", "score": 0}, {"score": 1}]}), "comments[1].text",
         "missing_field"),
        (json.dumps({"text": "t", "comments": [{"text": "a", "score": "0"}, {"text": "b", "score": 1}]}),
         "comments[0].score", "wrong_type"),
        (json.dumps({"text": "t", "comments": [{"text": "a", "score": 0}, {"text": "a ", "score": 1}]}),
         "comments[1].text", "duplicate_comment"),
        (json.dumps({"text": "t", "comments": [{"text": "a", "score": 0}, {"text": "b", "score": 0}]}),
         "comments[0].score", "tied_scores"),
        (json.dumps({"text": "t", "comments": [{"text": "a", "score": 0}, {"text": "b", "score": 5}]}),
         "comments[1].score", "score_out_of_range"),
        (json.dumps({"text": " ", "comments": [{"text": "a", "score": 0}, {"text": "b", "score": 1}]}), "text",
         "empty_post_text"),
        (json.dumps({"text": "t", "comments": [{"text": "a", "score": 0}, {"text": "", "score": 1}]}),
         "comments[1].text", "empty_comment_text"),
    ],
)  # fmt: skip
def test_bad_input_stops_with_file_line_field_or_is_counted(tmp_path, line, field, reason):
    path = write_jsonl(tmp_path / "in.jsonl", [post(1), line, post(2)])
    with pytest.raises(InvalidInputError) as err:
        list(collect_posts(read_cupit_jsonl(path), PrepSummary()))
    assert f"{path}:2: field '{field}'" in str(err.value)
    summary = PrepSummary()
    kept = list(collect_posts(read_cupit_jsonl(path), summary, skip_invalid=True))
    assert [p.post_id for p in kept] == ["p1", "p2"]
    assert summary.posts_read == 3 and summary.posts_kept == 2 and dict(summary.posts_dropped) == {reason: 1}


def test_non_utf8_line_is_named(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(json.dumps(post(1)).encode() + b"\n" + b'{"text": "caf\xe9"}\n')
    with pytest.raises(InvalidInputError, match=r"in.jsonl:2: .*not valid UTF-8"):
        list(collect_posts(read_cupit_jsonl(path), PrepSummary()))


def test_unlabeled_test_file_is_kept_for_scoring(tmp_path):
    rows = [{"text": f"t{i}", "comments": [{"text": f"a{i}", "score": None}, {"text": f"b{i}", "score": None}]}
            for i in range(3)]  # fmt: skip
    path = write_jsonl(tmp_path / "test.jsonl", rows)
    summary = run_prepare(PrepArguments(inputs=[str(path)], output_dir=str(tmp_path / "out")))
    assert summary.unlabeled_posts == 3
    listwise = datasets.load_from_disk(str(tmp_path / "out" / "listwise"))
    assert list(listwise) == ["unlabeled"] and listwise["unlabeled"][0]["ranks"] is None
    assert not (tmp_path / "out" / "pairwise").exists()


def test_long_csv_with_votes_ranks_by_votes(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,text,comment,votes\n1,Q1,low,1\n1,Q1,high,9\n1,Q1,mid,5\n2,Q2,x,3\n2,Q2,y,4\n")
    rows = datasets.load_dataset("csv", data_files=str(path), split="train")
    posts = [p for _, p in read_rows(rows, str(path))]
    first = {c.text: c.rank for c in posts[0].comments}
    assert first == {"high": 0, "mid": 1, "low": 2} and len(posts) == 2


def test_split_by_post_has_no_overlap_and_is_seeded(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [post(i, n=3 + i % 3) for i in range(50)])
    config = dict(inputs=[str(path)], test_size=0.2, validation_size=0.1, seed=3)
    run_prepare(PrepArguments(**config, output_dir=str(tmp_path / "a")))
    run_prepare(PrepArguments(**config, output_dir=str(tmp_path / "b")))
    ids = {}
    for view in ("pairwise", "listwise", "sft"):
        dd = datasets.load_from_disk(str(tmp_path / "a" / view))
        ids[view] = {split: set(dd[split]["post_id"]) for split in dd}
        assert not ids[view]["train"] & ids[view]["test"] and not ids[view]["train"] & ids[view]["validation"]
        assert not ids[view]["test"] & ids[view]["validation"]
    assert ids["pairwise"] == ids["listwise"] == ids["sft"]
    assert len(ids["listwise"]["test"]) == 10 and len(ids["listwise"]["validation"]) == 5
    again = datasets.load_from_disk(str(tmp_path / "b" / "listwise"))
    assert set(again["test"]["post_id"]) == ids["listwise"]["test"]


def test_shipped_sample_three_views_and_summary(tmp_path):
    out = tmp_path / "prepared"
    summary = main(["--inputs", str(SAMPLE), "--output_dir", str(out), "--skip_invalid", "--pair_strategy", "all"])
    saved = json.loads((out / "summary.json").read_text())
    assert saved == json.loads(summary.to_json())
    with gzip.open(SAMPLE, "rt") as handle:
        lines = [json.loads(line) for line in handle]
    assert saved["posts_read"] == len(lines)
    assert saved["posts_kept"] + sum(saved["posts_dropped"].values()) == saved["posts_read"]
    assert saved["comments_kept"] + sum(saved["comments_dropped"].values()) == saved["comments_read"]
    pairwise = datasets.load_from_disk(str(out / "pairwise"))
    assert set(pairwise["train"].column_names) >= {"prompt", "chosen", "rejected", "margin"}
    n_pairs = sum(len(pairwise[s]) for s in pairwise)
    assert n_pairs == saved["pairs"]["all (selected)"]["kept"]
    listwise = datasets.load_from_disk(str(out / "listwise"))
    row = listwise["train"][0]
    assert sorted(row["ranks"]) == list(range(len(row["comments"]))) and len(row["votes"]) == len(row["comments"])
    assert sum(len(listwise[s]) for s in listwise) == saved["posts_kept"]


def test_posts_xml_to_views(tmp_path):
    summary = main(["--inputs", str(POSTS_XML), "--output_dir", str(tmp_path / "se"), "--skip_invalid",
                    "--visibility_filter", "--prompt_template", "{title}\n\n{body}",
                    "--test_size", "0.2"])  # fmt: skip
    assert summary.posts_kept > 0
    listwise = datasets.load_from_disk(str(tmp_path / "se" / "listwise"))
    assert "\n\n" in listwise["train"][0]["prompt"]
    kept = summary.pairs["adjacent (selected)"]
    assert kept["kept"] + kept["dropped_older_preferred"] == kept["candidates"]
    assert 0 < kept["kept"] < kept["candidates"]  # the filter drops pairs whose preferred answer is the older one
    pairwise = datasets.load_from_disk(str(tmp_path / "se" / "pairwise"))
    assert sum(len(split) for split in pairwise.values()) == kept["kept"]  # and the view holds exactly the rest


def test_output_is_atomic_on_failure(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "in.jsonl", [post(i) for i in range(20)])
    out = tmp_path / "out"
    run_prepare(PrepArguments(inputs=[str(path)], output_dir=str(out)))
    before = sorted(p.name for p in out.iterdir())

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(datasets.DatasetDict, "save_to_disk", boom)
    with pytest.raises(RuntimeError):
        run_prepare(PrepArguments(inputs=[str(path)], output_dir=str(out)))
    assert sorted(p.name for p in out.iterdir()) == before  # the old output is intact, no temp folder left
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_push_to_hub_uploads_each_view_and_summary(tmp_path, monkeypatch):
    """The files (with the prompt template) go first: a push cut midway leaves views that can be read back."""
    calls = []
    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub",
                        lambda self, repo, config_name, private:
                        calls.append(("view", repo, config_name, sorted(self))))  # fmt: skip
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo, **kw: calls.append(("repo", repo)))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_file", lambda self, **kw: calls.append(("file", kw)))
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    path = write_jsonl(tmp_path / "in.jsonl", [post(i) for i in range(20)])
    run_prepare(PrepArguments(inputs=[str(path)], push_to_hub="me/ds"))
    assert [c[0] for c in calls] == ["repo", "file", "file", "view", "view", "view"]
    assert [c[1]["path_in_repo"] for c in calls if c[0] == "file"] == ["summary.json", "prep_config.json"]
    assert [c[2] for c in calls if c[0] == "view"] == ["pairwise", "listwise", "sft"]
    assert calls[-1][3] == ["test", "train", "validation"]
    published = "".join(c[1]["path_or_fileobj"].decode() for c in calls if c[0] == "file")
    assert str(tmp_path) not in published and '"in.jsonl"' in published  # no local folder on the Hub


def test_push_to_hub_without_a_token_stops_before_the_work(tmp_path, monkeypatch):
    import huggingface_hub

    from commentrank.hub import HubError

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub", lambda *a, **k: pytest.fail("no push without a token"))
    path = write_jsonl(tmp_path / "in.jsonl", [post(i) for i in range(20)])
    with pytest.raises(HubError, match=r"me/ds: no Hugging Face token \(log in with `hf auth login` or set HF_TO"):
        run_prepare(PrepArguments(inputs=[str(path)], push_to_hub="me/ds", output_dir=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_the_work_folder_of_a_killed_run_is_removed_by_the_next_one(tmp_path, monkeypatch):
    """data_prep stages its views in a work folder beside the output (gigabytes for a full dump): named as the
    project's other temporary folders (`.<output>.tmp-<pid>-...`), so a run killed by SIGKILL or the OOM killer
    leaves nothing that the next run does not remove."""
    import commentrank.data.prepare as prepare

    path = write_jsonl(tmp_path / "in.jsonl", [post(i) for i in range(20)])
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)  # fmt: skip
    work_dirs, prepare_views = [], prepare.prepare_views

    def recording(config, workdir):
        work_dirs.append(Path(workdir))
        return prepare_views(config, workdir)

    monkeypatch.setattr(prepare, "prepare_views", recording)
    run_prepare(PrepArguments(inputs=[str(path)], output_dir=str(tmp_path / "out")))
    (work,) = work_dirs
    assert work.parent == tmp_path and work.name.startswith(f".out.tmp-{os.getpid()}-") and not work.exists()
    killed = tmp_path / work.name.replace(f"-{os.getpid()}-", f"-{dead}-")  # what a kill leaves
    (killed / "views").mkdir(parents=True)
    run_prepare(PrepArguments(inputs=[str(path)], output_dir=str(tmp_path / "out"), overwrite_output=True))
    assert not killed.exists()


def test_training_on_a_raw_file_splits_it_the_same_whatever_the_training_seed(tmp_path):
    """reward.py, sft.py and grpo.py converted a raw file with the training --seed: runs with other seeds trained on
    one another's test posts. A raw file is split with data_prep's own default seed, as data_prep splits it, and
    grpo.py / best_of_n.py take their report posts from that test split."""
    from transformers import set_seed

    from commentrank.configs import TrainingScriptArguments
    from commentrank.data import loading
    from commentrank.data.prepare import prepare_views
    from commentrank.policy import held_out_posts
    from commentrank.train import steps

    path = str(write_jsonl(tmp_path / "in.jsonl", [post(i) for i in range(40)]))

    def split_ids(view):
        return {split: view[split]["post_id"] for split in view}

    prepared, _ = prepare_views(PrepArguments(inputs=[path]))
    for seed in (1, 7):  # the training seed, set as the scripts set it before they open their data
        set_seed(seed)
        loading._convert.cache_clear()
        data = steps.open_training_data(TrainingScriptArguments(dataset_name=path))
        assert split_ids(data.require_view("listwise")) == split_ids(prepared["listwise"]), seed
    test_prompts = [p["prompt"] for p in held_out_posts(path, "test", None)]
    assert test_prompts == prepared["listwise"]["test"]["prompt"]
