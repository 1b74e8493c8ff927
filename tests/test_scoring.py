import io
import json
import sys

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

from commentrank.bundled_models import minilm_path
from commentrank.configs import EncoderSettings, PrepArguments
from commentrank.data.loading import load_scoring_rows
from commentrank.data.prepare import load_posts, run_prepare
from commentrank.data.validation import SCORING, PrepSummary
from commentrank.encoding import PairEncoder
from commentrank.metrics import baseline_metrics, equal_vote_pairs, ranking_metrics
from commentrank.score.inference import predicted_ranks, score_ids, score_posts
from commentrank.score.scorer import load_scorer

from conftest import SAMPLE, load_script


def tiny_model(path, num_labels=1, head=True):
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=num_labels)  # fmt: skip
    model = BertForSequenceClassification(config) if head else BertModel(config)
    if head:  # a head with visible spread, so rankings are not ties
        torch.nn.init.normal_(model.classifier.weight, std=2.0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("tiny-rm"))


@pytest.fixture(scope="module")
def score():
    return load_script("score").main


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def cupit_rows(n_posts=4, labeled=True):
    return [
        {"id": f"p{i}", "text": f"Question number {i} about beer?",
         "comments": [{"text": f"answer {j} " + "word " * (3 * j + i), "score": j if labeled else None}
                      for j in range(3 + i % 2)]}
        for i in range(n_posts)
    ]  # fmt: skip


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_scoring_the_sample_writes_predictions_metrics_report_and_plot(model_dir, score, tmp_path):
    out = tmp_path / "scores"
    summary = score(["--model", str(model_dir), "--dataset", str(SAMPLE), "--output_dir", str(out), "--skip_invalid",
                     "--max_posts", "12", "--max_length", "64", "--no_progress"])  # fmt: skip
    posts = load_posts(PrepArguments(inputs=[str(SAMPLE)], skip_invalid=True), PrepSummary(), SCORING)[:12]
    predictions = read_jsonl(out / "predictions.jsonl")
    assert len(predictions) == 12
    labeled = []
    for post, pred in zip(posts, predictions):
        assert pred["post_id"] == post.post_id and pred["text"] == post.title
        assert [c["text"] for c in pred["comments"]] == [c.text for c in post.comments]  # input order kept
        ranks = [c["score"] for c in pred["comments"]]
        rewards = [c["reward"] for c in pred["comments"]]
        assert sorted(ranks) == list(range(len(ranks)))
        assert [rewards[i] for i in np.argsort(ranks)] == sorted(rewards, reverse=True)
        labeled.append({"ranks": [c.rank for c in post.comments], "votes": [c.votes for c in post.comments],
                        "comments": [c.text for c in post.comments], "scores": rewards})  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["results"]) == {"model", "random", "longest_first"}
    for name, values in metrics["results"].items():
        assert {f"ndcg@{k}" for k in range(1, 6)} | {f"ndcg_votes@{k}" for k in range(1, 6)} <= set(values), name
        assert values["n_posts"] == 12 and "pair_accuracy" in values
    assert metrics["results"]["model"] == pytest.approx(ranking_metrics(labeled))
    for name, values in baseline_metrics(labeled).items():
        assert metrics["results"][name] == pytest.approx(values), name
    assert metrics["n_posts"] == 12 and metrics["n_truncated"] > 0 and metrics["max_length"] == 64
    assert summary["n_truncated"] == metrics["n_truncated"]
    report = (out / "report.md").read_text()
    assert "| model |" in report and "| longest_first |" in report and "ndcg_at_k.png" in report
    assert f"{metrics['n_truncated']} of {metrics['n_comments']}" in report
    assert f"- scored in {metrics['dtype']}" in report
    equal, pairs = equal_vote_pairs(labeled)  # the sample's labels break vote ties by date: the report says how often
    assert equal > 0 and f" {equal} of the {pairs} pairs of posts with votes join comments with equal votes" in report
    assert (out / "ndcg_at_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("length_weight", [0.3, 0.0])
def test_a_collapsed_model_is_reported(length_weight, model_dir, score, tmp_path):
    """A model whose own reward no longer depends on the text (a collapsed training run: here a zero head) ranks by
    its length term alone, or not at all: the scoring run says so in its log, metrics.json and report.md."""
    collapsed = tiny_model(tmp_path / "collapsed")
    model = BertForSequenceClassification.from_pretrained(collapsed)
    torch.nn.init.zeros_(model.classifier.weight)
    model.save_pretrained(collapsed)
    EncoderSettings(length_weight=length_weight).save(collapsed)
    data = write_jsonl(tmp_path / "posts.jsonl", cupit_rows(4))
    for name, model_path in (("healthy", model_dir), ("collapsed", collapsed)):
        out = tmp_path / f"scores_{name}"
        score(["--model", str(model_path), "--dataset", str(data), "--output_dir", str(out), "--no_progress"])
        metrics = json.loads((out / "metrics.json").read_text())
        report = (out / "report.md").read_text()
        if name == "healthy":
            assert metrics["warnings"] == [] and metrics["collapse_warning"] is None and "Warning" not in report
            continue
        assert len(metrics["warnings"]) == 1
        warning = metrics["warnings"][0]
        assert metrics["collapse_warning"] == warning  # under its own key too: other warnings are not a collapse
        assert ("length alone" if length_weight else "constant") in warning
        assert f"**Warning:** {warning}" in report


def test_the_quality_benchmark_calls_collapsed_only_a_model_with_the_collapse_warning():
    """bench_quality labels a model "collapsed" from metrics.json's `collapse_warning`, not from `warnings`, which
    also holds data and prompt warnings."""
    bench = load_script("bench_quality", "benchmarks")
    model = {"ndcg@5": 0.8, "pair_accuracy": 0.7}
    healthy = {"results": {"model": model}, "warnings": ["3 of 3 posts have no body"], "collapse_warning": None}
    collapsed = {"results": {"model": model}, "warnings": ["it ranks by length alone"],
                 "collapse_warning": "it ranks by length alone"}  # fmt: skip
    text = bench.table([("healthy", healthy, 10.0), ("collapsed", collapsed, 10.0)], "test")
    assert "| healthy |" in text and "| collapsed (collapsed: see its report) |" in text
    # a metrics.json written before `collapse_warning`: the collapse warning among its warnings, not any warning
    older = {"results": {"model": model}, "warnings": ["3 of 3 posts have no body"]}
    assert not bench.collapsed(older)
    assert bench.collapsed({**older, "warnings": ["... Its training most likely collapsed; train again ..."]})


def test_length_sorted_dynamic_padding_matches_pad_to_max_length(model_dir):
    scorer = load_scorer(model_dir, max_length=48, dtype="float32")
    rows = load_scoring_rows(str(SAMPLE), skip_invalid=True, max_posts=8).rows
    prompts = [r["prompt"] for r in rows for _ in r["comments"]]
    comments = [c for r in rows for c in r["comments"]]
    ids = scorer.encoder.encode(prompts, comments).input_ids
    assert len({len(x) for x in ids}) > 3  # lengths vary, so sorting and padding matter
    pad = scorer.encoder.tokenizer.pad_token_id
    sep = scorer.encoder.segment_sep_id
    sorted_rewards = score_ids(scorer.model, ids, pad, batch_size=4, segment_sep_id=sep)
    padded_rewards = score_ids(
        scorer.model, ids, pad, batch_size=4, sort_by_length=False, pad_to=48, segment_sep_id=sep
    )
    assert np.allclose(sorted_rewards, padded_rewards, atol=1e-5, rtol=0)
    assert np.std(sorted_rewards) > 1e-3
    per_post, _ = score_posts(scorer.model, scorer.encoder, rows, batch_size=5)
    assert np.allclose([r for post in per_post for r in post], sorted_rewards, atol=1e-5, rtol=0)


def test_truncation_is_counted(model_dir):
    scorer = load_scorer(model_dir, max_length=24)
    rows = [{"prompt": "A short question?", "comments": ["short", "long " * 100, "longer " * 300, "long " * 100]}]
    _, n_truncated = scorer.score(rows)
    assert n_truncated == 3  # every copy of a truncated comment counts, though copies are scored once
    assert load_scorer(model_dir, max_length=10_000).encoder.max_length == 512  # capped at the model's positions


def test_copies_of_a_comment_get_one_reward_and_rank_in_input_order(model_dir):
    """Identical inputs ("+1" three times in a post) are scored once and every copy gets that reward, whichever batch
    it would have landed in: equal rewards, so copies rank in input order (`predicted_ranks`) at every batch size; the
    other comments keep their own rewards, in input order."""
    scorer = load_scorer(model_dir, dtype="float32")
    posts = [{"prompt": r["text"], "comments": [c["text"] for c in r["comments"]] + ["+1"] * 3 + ["longer " * 30]}
             for r in cupit_rows(6)]  # fmt: skip
    reference = None
    for batch_size in (1, 2, 7, 32):
        rewards, _ = scorer.score(posts, batch_size)
        for post in rewards:
            copies, ranks = post[-4:-1], predicted_ranks(post)[-4:-1]
            assert len(set(copies)) == 1, (batch_size, copies)
            assert ranks == list(range(ranks[0], ranks[0] + 3)), (batch_size, ranks)
        flat = [r for post in rewards for r in post]
        reference = flat if reference is None else reference
        assert np.allclose(flat, reference, atol=1e-5, rtol=0), batch_size


def test_non_finite_rewards_are_an_error(score, tmp_path):
    """A model giving NaN rewards (here a NaN classifier bias) is stopped right after scoring, by the scorer and by
    score.py, with how many rewards and the likely causes: no predictions.jsonl holding `"reward": NaN` (not JSON)."""
    broken = tiny_model(tmp_path / "nan")
    model = BertForSequenceClassification.from_pretrained(broken)
    torch.nn.init.constant_(model.classifier.bias, float("nan"))
    model.save_pretrained(broken)
    rows = cupit_rows(2, labeled=False)  # 3 + 4 comments
    message = r"7 of 7 rewards are not finite \(NaN or infinite\).*weights.*overflow"
    posts = [{"prompt": r["text"], "comments": [c["text"] for c in r["comments"]]} for r in rows]
    with pytest.raises(ValueError, match=message):
        load_scorer(broken, dtype="float32").score(posts)
    data = write_jsonl(tmp_path / "posts.jsonl", rows)
    with pytest.raises(SystemExit, match=f"^score: error: {message}"):
        score(["--model", str(broken), "--dataset", str(data), "--output_dir", str(tmp_path / "out"), "--no_progress"])
    assert not (tmp_path / "out" / "predictions.jsonl").exists()


def test_encoder_settings_saved_with_the_model_are_used(model_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    default = PairEncoder(tokenizer, EncoderSettings.load(model_dir)).settings
    assert (default.max_length, default.truncation_side, default.min_comment_tokens) == (512, "right", 64)
    EncoderSettings(max_length=100, truncation_side="left", min_comment_tokens=8,
                    prompt_template="{title}\n\n{body}").save(tmp_path)  # fmt: skip
    saved = json.loads((tmp_path / "commentrank_config.json").read_text())
    assert saved["separator"] == "\n\n" and saved["prompt_template"] == "{title}\n\n{body}"
    settings = PairEncoder(tokenizer, EncoderSettings.load(tmp_path)).settings
    assert (settings.max_length, settings.truncation_side, settings.min_comment_tokens) == (100, "left", 8)


@pytest.mark.parametrize(("template", "warned"), [("{title}\n\n{body}", True), ("{title}", False), (None, False)])
def test_a_prompt_template_other_than_the_models_is_warned_about(template, warned, score, tmp_path):
    model = tiny_model(tmp_path / "rm")
    EncoderSettings(max_length=64, prompt_template="{title}").save(model)
    out = tmp_path / "scores"
    data = write_jsonl(tmp_path / "posts.jsonl", cupit_rows(3))
    asked = ["--prompt_template", template] if template else []
    score(["--model", str(model), "--dataset", str(data), "--output_dir", str(out), "--no_progress", *asked])
    warnings = json.loads((out / "metrics.json").read_text())["warnings"]
    assert any("is not the one the model was trained with ('{title}')" in w for w in warnings) == warned
    assert ("**Warning:** prompt_template" in (out / "report.md").read_text()) == warned


def test_a_data_folder_built_with_another_template_than_the_models_names_the_model(score, prepared_sample, tmp_path):
    """The refusal said "drop the flag" when no --prompt_template flag was given: the template was the model's."""
    model = tiny_model(tmp_path / "rm")
    EncoderSettings(max_length=64, prompt_template="{title}\n\n{body}").save(model)  # the data: "{title}"
    with pytest.raises(SystemExit) as stop:
        score(["--model", str(model), "--dataset", prepared_sample, "--output_dir", str(tmp_path / "out")])
    message = str(stop.value.code)
    assert "the model's prompt_template '{title}\\n\\n{body}' disagrees with '{title}'" in message
    assert "drop the flag" not in message and "rebuild the data with data_prep --prompt_template" in message


def test_policy_posts_get_the_reward_models_template(tmp_path):
    """grpo.py and best_of_n.py built the posts with the data's template ({title} for a raw file) whatever the reward
    model was trained on: a {title}\n\n{body} model scored posts without their body, unlike score.py and rank.py."""
    from commentrank.policy import held_out_posts, reward_template
    from commentrank.score.reward_function import RewardFunction

    model = tiny_model(tmp_path / "rm")
    EncoderSettings(max_length=64, prompt_template="{title}\n\n{body}").save(model)
    rows = [{**row, "post_body": f"Body {i}."} for i, row in enumerate(cupit_rows(12))]
    raw = str(write_jsonl(tmp_path / "posts.jsonl", rows))
    posts = held_out_posts(raw, "train", 4, **reward_template(RewardFunction(str(model))))
    assert posts and all(p["prompt"].endswith(".") and "\n\nBody " in p["prompt"] for p in posts)
    assert held_out_posts(raw, "train", 4, **reward_template(RewardFunction(str(model)), "{title}"))[0]["prompt"] == (
        posts[0]["prompt"].split("\n\n")[0])  # fmt: skip


def test_unlabeled_file_and_prep_folder_fall_back_to_unlabeled(model_dir, score, tmp_path):
    path = write_jsonl(tmp_path / "test.jsonl", cupit_rows(3, labeled=False))
    out = tmp_path / "from_file"
    score(["--model", str(model_dir), "--dataset", str(path), "--output_dir", str(out), "--no_progress"])
    predictions = read_jsonl(out / "predictions.jsonl")
    assert [p["post_id"] for p in predictions] == ["p0", "p1", "p2"]
    assert all(sorted(c["score"] for c in p["comments"]) == list(range(len(p["comments"]))) for p in predictions)
    assert sorted(p.name for p in out.iterdir()) == [".commentrank-output.json", "metrics.json", "predictions.jsonl"]
    assert json.loads((out / "metrics.json").read_text())["results"] is None  # the counts only: no report, no plot
    run_prepare(PrepArguments(inputs=[str(path)], output_dir=str(tmp_path / "prep")))
    data = load_scoring_rows(str(tmp_path / "prep"), split="test")
    assert data.split == "unlabeled" and [r["post_id"] for r in data.rows] == ["p0", "p1", "p2"]


def test_prep_folder_csv_and_hub_sources(tmp_path, monkeypatch):
    run_prepare(PrepArguments(inputs=[str(write_jsonl(tmp_path / "in.jsonl", cupit_rows(20)))],
                           output_dir=str(tmp_path / "prep"), test_size=4))  # fmt: skip
    data = load_scoring_rows(str(tmp_path / "prep"))
    assert data.split == "test" and len(data.rows) == 4 and all(r["ranks"] is not None for r in data.rows)
    with pytest.raises(ValueError, match="no split 'nope'.*--split"):
        load_scoring_rows(str(tmp_path / "prep"), split="nope")
    csv = tmp_path / "t.csv"
    csv.write_text("id,text,comment,votes\n1,Q1,low,1\n1,Q1,high,9\n2,Q2,x,3\n2,Q2,y,4\n")
    rows = load_scoring_rows(str(csv)).rows
    assert rows[0]["comments"] == ["low", "high"] and rows[0]["ranks"] == [1, 0]

    listwise = datasets.DatasetDict({"test": datasets.Dataset.from_list(
        [{"prompt": "Q", "comments": ["a", "b"], "ranks": [1, 0]}])})  # fmt: skip
    raw = datasets.DatasetDict({"test": datasets.Dataset.from_list(cupit_rows(2))})
    calls = []

    def fake_load_dataset(name, config=None, **kwargs):
        calls.append((name, config))
        return listwise if name == "me/listwise" else raw

    configs = {"me/listwise": ["listwise", "pairwise"], "me/raw": ["default"]}
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(datasets, "get_dataset_config_names", lambda name, **kwargs: configs[name])
    assert load_scoring_rows("me/listwise").rows[0]["ranks"] == [1, 0]
    hub_raw = load_scoring_rows("me/raw").rows
    assert [r["prompt"] for r in hub_raw] == ["Question number 0 about beer?", "Question number 1 about beer?"]
    assert calls == [("me/listwise", "listwise"), ("me/raw", None)]


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    return {"three_labels": tiny_model(root / "clf", num_labels=3), "no_head": tiny_model(root / "base", head=False)}


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_model", "model not found: .*nope"),
        ("three_labels", "classifier with 3 labels; a reward model has a single-logit head"),
        ("no_head", "has no reward head .*BertModel"),
        ("missing_dataset", "dataset file not found: .*missing.jsonl"),
        ("missing_fields", r"ds:row 1: field 'text': missing"),
        ("empty_post_listwise", r"row 2: field 'comments': 0 comment\(s\), at least 1 needed"),
        ("empty_post_jsonl", r"in.jsonl:2: field 'comments': 0 comment\(s\)"),
    ],
)
def test_bad_input_stops_with_a_clear_message(case, message, model_dir, bad_models, score, tmp_path):
    model, dataset = str(model_dir), str(write_jsonl(tmp_path / "ok.jsonl", cupit_rows(2)))
    if case == "missing_model":
        model = str(tmp_path / "nope")
    elif case in bad_models:
        model = str(bad_models[case])
    elif case == "missing_dataset":
        dataset = str(tmp_path / "missing.jsonl")
    elif case in ("missing_fields", "empty_post_listwise"):
        rows = [{"prompt": "Q", "comments": ["a", "b"]}, {"prompt": "Q2", "comments": []}]
        if case == "missing_fields":
            rows = [{"title": "Q", "comments": ["a", "b"]}]
        datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "ds"))
        dataset = str(tmp_path / "ds")
    elif case == "empty_post_jsonl":
        rows = cupit_rows(2)
        rows[1]["comments"] = []
        dataset = str(write_jsonl(tmp_path / "in.jsonl", rows))
    with pytest.raises(SystemExit, match=f"^score: error: .*{message}"):
        score(["--model", model, "--dataset", dataset, "--output_dir", str(tmp_path / "out"), "--no_progress"])
    assert not (tmp_path / "out" / "predictions.jsonl").exists()


def test_skip_invalid_counts_empty_posts(tmp_path):
    rows = [
        {"prompt": "Q", "comments": ["a", "b"]},
        {"prompt": "Q2", "comments": []},
        {"prompt": "", "comments": ["c"]},
    ]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    data = load_scoring_rows(str(tmp_path / "ds"), skip_invalid=True)
    assert len(data.rows) == 1 and data.summary.posts_dropped == {"too_few_comments": 1, "empty_post_text": 1}


def test_max_posts_counts_only_the_posts_read_up_to_the_cut(model_dir, score, tmp_path):
    """--max_posts N scores the first N valid posts and reads no further: metrics.json's `skipped` and
    `duplicate_texts` count the posts read up to the cut (read = scored + skipped), never a post beyond it."""
    rows = [
        {"id": "0", "text": "", "comments": [{"text": "x", "score": 0}]},  # skipped before the cut
        {"id": "1", "text": "Q1", "comments": [{"text": "a", "score": 0}, {"text": "b", "score": 1}]},  # scored
        {"id": "2", "text": "Q2", "comments": [{"text": "same", "score": 0}, {"text": "same", "score": 1}]},
        {"id": "3", "text": "", "comments": [{"text": "y", "score": 0}]},
    ]
    data = write_jsonl(tmp_path / "posts.jsonl", rows)
    out = tmp_path / "s"
    score(["--model", str(model_dir), "--dataset", str(data), "--output_dir", str(out), "--skip_invalid",
           "--max_posts", "1", "--n_bootstrap", "0", "--no_progress"])  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["n_posts"], metrics["n_comments"]) == (1, 2)
    assert metrics["duplicate_texts"] == 0 and metrics["skipped"] == {"empty_post_text": 1}


def test_skipped_posts_are_recorded_on_unlabeled_data(model_dir, score, tmp_path, capsys):
    """--skip_invalid on an unlabeled file: metrics.json (written by every run, `results` null without labels) and
    the console summary count the posts skipped, so that read = scored + skipped."""
    empty = {"id": "empty", "text": "Q?", "comments": []}
    number = {"id": "number", "text": "Q?", "comments": [{"text": 5, "score": None}, {"text": "ok", "score": None}]}
    rows = cupit_rows(4, labeled=False)
    rows[1:1] = [empty, number]
    data = write_jsonl(tmp_path / "posts.jsonl", rows)
    out = tmp_path / "s"
    score(["--model", str(model_dir), "--dataset", str(data), "--output_dir", str(out), "--skip_invalid",
           "--no_progress"])  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["results"] is None and metrics["skipped"] == {"too_few_comments": 1, "wrong_type": 1}
    assert metrics["n_posts"] + sum(metrics["skipped"].values()) == len(rows) == 6
    assert "skipped 2 invalid posts (too_few_comments: 1, wrong_type: 1)" in capsys.readouterr().out


def test_one_logit_is_required_of_the_forward():
    class TwoLogits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask):
            return type("Output", (), {"logits": torch.zeros(input_ids.shape[0], 2)})()

    with pytest.raises(ValueError, match=r"logits of shape \(2, 2\): a reward model returns one logit"):
        score_ids(TwoLogits(), [[1, 2], [3]], pad_token_id=0)
    assert predicted_ranks([0.5, 2.0, -1.0, 2.0]) == [2, 0, 3, 1]


def test_rank_one_post_from_stdin(model_dir, monkeypatch, capsys):
    rank = load_script("rank").main
    post = {"text": "Which hop for citrus?", "comments": ["Citra and Cascade hops.", {"text": "Water."}, "Malt."]}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(post)))
    rows = rank(["--model", str(model_dir)])
    lines = capsys.readouterr().out.strip().splitlines()
    expected = load_scorer(model_dir).rank("Which hop for citrus?", ["Citra and Cascade hops.", "Water.", "Malt."])
    assert [r["index"] for r in rows] == [i for i, _ in expected]
    assert [r["reward"] for r in rows] == pytest.approx([r for _, r in expected])
    assert [float(line.split()[1]) for line in lines] == pytest.approx([r for _, r in expected], abs=1e-4)
    assert [r["rank"] for r in rows] == [0, 1, 2] and lines[0].endswith(rows[0]["text"])
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"text": "Q", "comments": []})))
    with pytest.raises(SystemExit, match=r"rank: error: stdin: field 'comments': 0 comment\(s\), at least 1 needed"):
        rank(["--model", str(model_dir)])


@pytest.mark.parametrize("terminal", [True, False])
def test_rank_says_what_it_waits_for_at_a_terminal_only(terminal, model_dir, monkeypatch, capsys):
    stdin = io.StringIO(json.dumps({"text": "Q", "comments": ["a", "b"]}))
    stdin.isatty = lambda: terminal
    monkeypatch.setattr(sys, "stdin", stdin)
    load_script("rank").main(["--model", str(model_dir)])
    assert ("reading the post's JSON from stdin (end with Ctrl-D)" in capsys.readouterr().err) == terminal


@pytest.mark.parametrize(
    "name, expected",
    [("gpt2", True), ("me/comment-rm", True), ("Qwen/Qwen2.5-0.5B-Instruct", True), ("./model", False),
     ("/abs/model", False), ("~/model", False), ("a/b/c", False), ("me/", False), ("", False)],
)  # fmt: skip
def test_hub_ids_are_told_from_local_paths(name, expected):
    from commentrank.io_utils import is_hub_id

    assert is_hub_id(name) is expected


@pytest.mark.parametrize(("max_length", "warned"), [(64, True), (128, False)])
def test_a_max_length_that_leaves_the_post_no_room_is_warned_about(max_length, warned, tmp_path, caplog):
    model = tiny_model(tmp_path / "rm")
    EncoderSettings(max_length=128, min_comment_tokens=64).save(model)
    with caplog.at_level("WARNING", logger="commentrank.score.scorer"):
        load_scorer(model, max_length=max_length)
    assert ("is not above the model's min_comment_tokens 64" in caplog.text) == warned
