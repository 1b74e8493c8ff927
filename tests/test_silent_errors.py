"""Inputs that used to give a wrong result without a word, or use memory or time out of proportion: each now gives a
named error, a warning that is also recorded, or the right result. One test per row of the README's "Silent wrong
results and memory" table."""

import io
import json
import sys

import numpy as np
import pytest
from test_scoring import cupit_rows, read_jsonl, tiny_model, write_jsonl

from commentrank.score.scorer import load_scorer

from conftest import load_script

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("tiny-rm"))


@pytest.fixture(scope="module")
def no_tokenizer(tmp_path_factory):
    """A reward model folder holding its weights and config but none of its tokenizer files."""
    folder = tiny_model(tmp_path_factory.mktemp("no-tokenizer") / "rm")
    for name in TOKENIZER_FILES:
        (folder / name).unlink(missing_ok=True)
    return folder


def test_a_model_folder_without_its_tokenizer_is_refused(no_tokenizer, tmp_path, monkeypatch):
    """transformers would build a 5-token vocabulary for it (every word [UNK]) and score on: refused, naming the
    folder and the files it lacks, by scoring, rank.py and export.py."""
    message = rf"{no_tokenizer} has no tokenizer files \(tokenizer.json or vocab.txt\)"
    with pytest.raises(ValueError, match=message):
        load_scorer(no_tokenizer)
    data = str(write_jsonl(tmp_path / "posts.jsonl", cupit_rows(2)))
    with pytest.raises(SystemExit, match=f"^score: error: {message}"):
        load_script("score").main(["--model", str(no_tokenizer), "--dataset", data, "--output_dir",
                                   str(tmp_path / "scores"), "--no_progress"])  # fmt: skip
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"text": "Q", "comments": ["a", "b"]})))
    with pytest.raises(SystemExit, match=f"^rank: error: {message}"):
        load_script("rank").main(["--model", str(no_tokenizer)])
    with pytest.raises(SystemExit, match=f"^export: error: {message}"):
        load_script("export").main(["--model", str(no_tokenizer), "--output_dir", str(tmp_path / "onnx")])
    assert not (tmp_path / "scores").exists() and not (tmp_path / "onnx" / "tokenizer.json").exists()


# --------------------------------------------------------------------------------------------------------------------
# data_prep: a post given twice, and counts that add up
# --------------------------------------------------------------------------------------------------------------------


def counts_add_up(summary: dict) -> None:
    """read = kept + dropped (by reason) + left out by --max_posts, for posts and for comments."""
    over = summary.get("over_max_posts", {"posts": 0, "comments": 0})
    for unit in ("posts", "comments"):
        dropped = sum(summary[f"{unit}_dropped"].values())
        assert summary[f"{unit}_read"] == summary[f"{unit}_kept"] + dropped + over[unit], unit


def split_ids(folder) -> dict[str, set]:
    import datasets

    listwise = datasets.load_from_disk(str(folder / "listwise"))
    return {split: set(listwise[split]["post_id"]) for split in listwise}


@pytest.mark.parametrize("how", ["a file passed twice", "a post repeated in one file"])
def test_a_post_given_twice_is_kept_once_before_the_split(how, tmp_path, caplog):
    """The same post (same text, body and comment texts) twice was split twice: a training post could land in test.
    The first copy is kept, the others are dropped before the split, counted as duplicate_post, with a warning."""
    from commentrank.configs import PrepArguments
    from commentrank.data.prepare import run_prepare

    rows = cupit_rows(20)
    if how == "a file passed twice":
        inputs = [str(write_jsonl(tmp_path / "a.jsonl", rows))] * 2
        n_repeats = 20
    else:
        repeat = {**rows[3], "id": "other-id", "comments": rows[3]["comments"][::-1]}  # the order does not matter
        inputs = [str(write_jsonl(tmp_path / "a.jsonl", [*rows, repeat]))]
        n_repeats = 1
    out = tmp_path / "data"
    run_prepare(PrepArguments(inputs=inputs, output_dir=str(out), test_size=0.3, validation_size=0.2))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["posts_dropped"] == {"duplicate_post": n_repeats} and summary["posts_kept"] == 20
    counts_add_up(summary)
    texts = {}
    for split, ids in split_ids(out).items():
        for post_id in ids:
            texts.setdefault(post_id.split(":")[-1], []).append(split)
    assert len(texts) == 20 and all(len(splits) == 1 for splits in texts.values())
    assert any("duplicate_post" in w for w in summary["warnings"])
    assert any("duplicate_post" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert not any("rank the comments otherwise" in w for w in summary["warnings"])  # same texts, same ranks


def test_a_repeated_post_with_other_ranks_is_dropped_and_said_to_disagree(tmp_path):
    """A re-crawl with other votes is the same post (the first copy kept), but its labels differ: the warning says."""
    from commentrank.configs import PrepArguments
    from commentrank.data.prepare import run_prepare

    rows = cupit_rows(10)
    ranks = [c["score"] for c in rows[3]["comments"]]
    relabeled = {**rows[3], "id": "recrawl", "comments": [{**c, "score": r} for c, r in
                                                          zip(rows[3]["comments"], ranks[::-1])]}  # fmt: skip
    out = tmp_path / "data"
    run_prepare(PrepArguments(inputs=[str(write_jsonl(tmp_path / "a.jsonl", [*rows, relabeled]))],
                              output_dir=str(out), test_size=0.2))  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["posts_dropped"] == {"duplicate_post": 1}
    assert any("1 of them rank the comments otherwise than the copy kept" in w for w in summary["warnings"])


def test_posts_with_the_same_text_but_other_comments_are_both_kept(tmp_path):
    from commentrank.configs import PrepArguments
    from commentrank.data.prepare import run_prepare

    rows = cupit_rows(6)
    rows.append({**rows[0], "id": "p0-again", "comments": rows[1]["comments"]})
    run_prepare(PrepArguments(inputs=[str(write_jsonl(tmp_path / "a.jsonl", rows))], output_dir=str(tmp_path / "d"),
                              test_size=0.2))  # fmt: skip
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["posts_kept"] == 7 and summary["posts_dropped"] == {}


def test_posts_whose_model_inputs_are_the_same_are_one_post(tmp_path):
    """Two posts with the same title and comments but other bodies were both kept under '{title}', which does not use
    the body: identical model inputs, split twice. The duplicate key is the built prompt and the comment texts."""
    from commentrank.configs import PrepArguments
    from commentrank.data.prepare import run_prepare

    rows = cupit_rows(6)
    rows[0]["post_body"] = "One body."
    rows.append({**rows[0], "id": "p0-again", "post_body": "Another body."})
    path = str(write_jsonl(tmp_path / "a.jsonl", rows))
    for template, dropped in (("{title}", {"duplicate_post": 1}), ("{title}\n\n{body}", {})):
        out = tmp_path / f"data-{len(dropped)}"
        run_prepare(PrepArguments(inputs=[path], output_dir=str(out), prompt_template=template, test_size=0.2))
        assert json.loads((out / "summary.json").read_text())["posts_dropped"] == dropped, template


def crawl_split(folder) -> dict[str, set]:
    """{a post's id as read (without the `input:` its copy in a later input was given): the splits it is in}."""
    splits = {}
    for split, ids in split_ids(folder).items():
        for post_id in ids:
            splits.setdefault(post_id.rsplit(":", 1)[-1], set()).add(split)
    return splits


def test_the_same_post_id_in_two_crawls_is_one_unit_of_the_split(tmp_path, caplog):
    """Two crawls of the same posts (the second with one more answer each) are different posts, both kept, but they
    were split one by one: a post's first crawl could train while its second was tested on, with the same (prompt,
    chosen, rejected) pairs. Posts that share their id go to one split now, with a warning that counts them."""
    from commentrank.configs import PrepArguments
    from commentrank.data.prepare import run_prepare

    rows = cupit_rows(20)
    later = [{**r, "comments": [*r["comments"], {"text": f"a later answer to {r['id']}", "score": len(r["comments"])}]}
             for r in rows]  # fmt: skip
    inputs = [str(write_jsonl(tmp_path / "first.jsonl", rows)), str(write_jsonl(tmp_path / "second.jsonl", later))]
    out = tmp_path / "data"
    run_prepare(PrepArguments(inputs=inputs, output_dir=str(out), test_size=0.3, validation_size=0.2))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["posts_kept"] == 40 and summary["posts_dropped"] == {}
    splits = crawl_split(out)
    assert len(splits) == 20 and all(len(names) == 1 for names in splits.values())
    message = "20 post(s) share their id with an earlier post"
    assert any(message in w for w in summary["warnings"]) and warned(caplog, message)


def test_every_copy_of_a_post_id_gets_an_id_of_its_own(tmp_path):
    """A third post under one id got the same new id (`input:id`) as the second: post_id was not unique."""
    import datasets

    from commentrank.configs import PrepArguments
    from commentrank.data.prepare import run_prepare

    rows = cupit_rows(6)
    rows[4]["id"] = rows[5]["id"] = rows[3]["id"]  # three posts (other texts) under one id, in one file
    out = tmp_path / "data"
    run_prepare(PrepArguments(inputs=[str(write_jsonl(tmp_path / "a.jsonl", rows))], output_dir=str(out),
                              test_size=0.2))  # fmt: skip
    listwise = datasets.load_from_disk(str(out / "listwise"))
    ids = [post_id for split in listwise for post_id in listwise[split]["post_id"]]
    assert len(ids) == len(set(ids)) == 6
    assert str(tmp_path) not in " ".join(ids)  # a new id names the file, never the folder it was read from


def test_counts_add_up_with_max_posts(tmp_path):
    """--max_posts left posts out while still counting them as kept: read = kept + dropped + over_max_posts."""
    from commentrank.configs import PrepArguments
    from commentrank.data.prepare import run_prepare

    rows = cupit_rows(30)
    rows[5]["comments"][0]["text"] = ""  # dropped: empty_comment_text
    path = write_jsonl(tmp_path / "a.jsonl", [*rows, rows[7]])  # and a duplicate_post
    out = tmp_path / "data"
    run_prepare(PrepArguments(inputs=[str(path)], output_dir=str(out), skip_invalid=True, max_posts=10,
                              test_size=0.2))  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["posts_read"] == 31 and summary["posts_kept"] == 10
    assert summary["posts_dropped"] == {"empty_comment_text": 1, "duplicate_post": 1}
    assert summary["over_max_posts"]["posts"] == 31 - 10 - 2
    counts_add_up(summary)
    import datasets

    listwise = datasets.load_from_disk(str(out / "listwise"))
    assert sum(len(listwise[s]) for s in listwise) == summary["posts_kept"]
    assert sum(len(c) for s in listwise for c in listwise[s]["comments"]) == summary["comments_kept"]


# --------------------------------------------------------------------------------------------------------------------
# Warnings, logged and recorded: prompts that cannot be what was meant, a filter that leaves no pairs
# --------------------------------------------------------------------------------------------------------------------


def warned(caplog, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_a_prompt_template_without_a_placeholder_is_warned_about(tmp_path, caplog):
    """'Rank these answers' as the template gives every post the same prompt: the model never sees the question."""
    from commentrank.configs import PrepArguments
    from commentrank.data.prepare import run_prepare

    path = write_jsonl(tmp_path / "a.jsonl", cupit_rows(10))
    for template, expected in (("Rank these answers", True), ("Q: {title}", False)):
        out = tmp_path / f"data-{expected}"
        caplog.clear()
        run_prepare(PrepArguments(inputs=[str(path)], output_dir=str(out), prompt_template=template, test_size=0.2))
        summary = json.loads((out / "summary.json").read_text())
        assert any("no placeholder" in w for w in summary.get("warnings", [])) is expected
        assert warned(caplog, "every post gets the same prompt") is expected


def test_a_with_context_model_scoring_posts_without_bodies_is_warned_about(tmp_path, caplog, monkeypatch):
    """A model trained with '{title}\\n\\n{body}' scoring a CUP IT file (no post_body) sees the title alone: scoring
    and rank.py say so."""
    from commentrank.configs import EncoderSettings

    model = tiny_model(tmp_path / "with-context")
    EncoderSettings(prompt_template="{title}\n\n{body}").save(model)
    score = load_script("score").main
    rows = cupit_rows(3)
    for name, bodies in (("without", False), ("with", True)):
        data = write_jsonl(tmp_path / f"{name}.jsonl", [{**r, "post_body": "Details."} if bodies else r for r in rows])
        caplog.clear()
        out = tmp_path / f"scores-{name}"
        score(["--model", str(model), "--dataset", str(data), "--output_dir", str(out), "--no_progress"])
        metrics = json.loads((out / "metrics.json").read_text())
        assert any("3 of 3 posts have no body" in w for w in metrics["warnings"]) is not bodies
        assert warned(caplog, "have no body") is not bodies
        caplog.clear()
        monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(read_jsonl(data)[0])))
        load_script("rank").main(["--model", str(model)])
        assert warned(caplog, "1 of 1 posts have no body") is not bodies


def test_posts_with_an_empty_prompt_are_dropped_and_counted(tmp_path, caplog):
    """'{body}' alone gave the posts without a body an empty prompt, and a warning that their prompts "hold the post
    text alone": they are dropped before the split now, counted as empty_prompt, and the warning says so."""
    import datasets

    from commentrank.configs import PrepArguments
    from commentrank.data.prepare import run_prepare

    rows = cupit_rows(10)
    for row in rows[:7]:
        row["post_body"] = f"The body of {row['id']}."
    out = tmp_path / "data"
    run_prepare(PrepArguments(inputs=[str(write_jsonl(tmp_path / "a.jsonl", rows))], output_dir=str(out),
                              prompt_template="{body}", test_size=0.2))  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["posts_dropped"] == {"empty_prompt": 3} and summary["posts_kept"] == 7
    counts_add_up(summary)
    listwise = datasets.load_from_disk(str(out / "listwise"))
    assert all(prompt for split in listwise for prompt in listwise[split]["prompt"])
    message = "3 post(s) get an empty prompt"
    assert any(message in w and "empty_prompt" in w for w in summary["warnings"]) and warned(caplog, message)
    assert not any("post text alone" in w for w in summary["warnings"])


def test_an_empty_pairwise_view_after_the_visibility_filter_is_warned_about(tmp_path, caplog):
    """Every preferred answer written first: the filter removes every pair, and the run says so and how many."""
    from commentrank.configs import PrepArguments
    from commentrank.data.prepare import run_prepare

    rows = cupit_rows(10)
    for row in rows:  # the best (score 0) is the oldest: no pair is "visible"
        for comment in row["comments"]:
            comment["created"] = f"2020-01-0{comment['score'] + 1}T00:00:00"
    out = tmp_path / "data"
    run_prepare(PrepArguments(inputs=[str(write_jsonl(tmp_path / "a.jsonl", rows))], output_dir=str(out),
                              visibility_filter=True, test_size=0.2))  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    candidates = summary["pairs"]["adjacent (selected)"]["candidates"]
    assert summary["pairs"]["adjacent (selected)"]["kept"] == 0 and not (out / "pairwise").exists()
    message = f"--visibility_filter removed {candidates} of the {candidates} pairs of all splits"
    assert any(message in w for w in summary["warnings"]) and warned(caplog, message)


# --------------------------------------------------------------------------------------------------------------------
# Memory and time: metrics of a huge thread, a huge comment, a huge post in listwise training
# --------------------------------------------------------------------------------------------------------------------


def pair_stats_by_every_pair(ranks, scores, lengths):
    """The definition, pair by pair: over label-ordered pairs (and those whose better comment is strictly shorter),
    a win counts 1 and a score tie 0.5."""
    credit, n_pairs, short_credit, n_short = 0.0, 0, 0.0, 0
    for i in range(len(ranks)):
        for j in range(len(ranks)):
            if ranks[i] < ranks[j]:
                value = 1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j] else 0.0
                credit, n_pairs = credit + value, n_pairs + 1
                if lengths[i] < lengths[j]:
                    short_credit, n_short = short_credit + value, n_short + 1
    return credit, n_pairs, short_credit, n_short


@pytest.mark.parametrize("n, distinct", [(1, 3), (2, 1), (7, 2), (60, 3), (200, 5), (150, 150), (129, 40)])
def test_pair_accuracies_are_counted_without_listing_the_pairs(n, distinct):
    """Pair accuracy and shorter-better pair accuracy were quadratic in a post's comments (125 s for 40,000): counted
    by sorting now, they equal the pair-by-pair definition exactly, ties in ranks, scores and lengths included."""
    from commentrank.metrics import _pair_stats

    rng = np.random.default_rng(n)
    for _ in range(3):
        ranks = rng.integers(0, max(n // 2, 1), n).astype(float)  # tied ranks form no pair
        scores = rng.integers(0, distinct, n) / 3  # many tied scores
        lengths = rng.integers(1, distinct + 2, n).astype(float)
        assert _pair_stats(ranks, scores, lengths) == pair_stats_by_every_pair(ranks, scores, lengths)
        assert _pair_stats(ranks, scores, None)[:2] == pair_stats_by_every_pair(ranks, scores, lengths)[:2]


def long_texts(n_chars: int) -> list[str]:
    """Long texts of the shipped sample's answers run together (prose, code, numbers, punctuation, runs of spaces and
    newlines), and two without a space to cut at."""
    import gzip

    from conftest import SAMPLE

    with gzip.open(SAMPLE, "rt", encoding="utf-8") as handle:
        answers = [c["text"] for line in handle for c in json.loads(line)["comments"]]
    joined = "  \n".join(answers)
    starts = range(0, len(joined) - n_chars, len(joined) // 7)
    return [joined[i : i + n_chars] for i in starts] + ["x" * n_chars, "ab1." * (n_chars // 4)]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """The bundled MiniLM (WordPiece, text pairs) and a byte-level BPE trained here (a decoder's, like GPT-2)."""
    from test_pipeline import gpt2_like_tokenizer
    from transformers import AutoTokenizer

    from commentrank.bundled_models import minilm_path

    return {
        "wordpiece": AutoTokenizer.from_pretrained(minilm_path()),
        "byte_bpe": gpt2_like_tokenizer(long_texts(3000)),
    }


@pytest.mark.parametrize("side", ["right", "left", "head_tail"])
@pytest.mark.parametrize("kind", ["wordpiece", "byte_bpe"])
def test_a_long_comment_is_cut_by_characters_to_the_same_ids(kind, side, tokenizers):
    """Long comments (and prompts) are tokenized only in the parts that can be kept, with the same ids as when the
    whole text was tokenized, for each truncation side."""
    from commentrank.encoding import PairEncoder

    encoder = PairEncoder(tokenizers[kind], max_length=48, truncation_side=side, min_comment_tokens=8)
    whole = PairEncoder(tokenizers[kind], max_length=48, truncation_side=side, min_comment_tokens=8)
    whole.CHARS_PER_TOKEN = 10**9  # never cut
    texts = long_texts(3000)
    prompts = ["Which hop?"] * len(texts) + texts[:3]
    comments = texts + ["A short answer."] * 3
    assert encoder.encode(prompts, comments) == whole.encode(prompts, comments)


def test_a_huge_comment_is_not_tokenized_whole(tokenizers):
    """A 2 MB comment reached the tokenizer whole (a 20 MB one took 3.5 GB to score); now only its kept parts do."""
    from commentrank.encoding import PairEncoder

    seen = []
    tokenizer = tokenizers["wordpiece"]

    class Recording(type(tokenizer)):
        def __call__(self, text, *args, **kwargs):
            seen.extend(len(t) for t in (text if isinstance(text, list) else [text]))
            return super().__call__(text, *args, **kwargs)

    tokenizer = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    tokenizer.__class__ = Recording
    for side in ("right", "left", "head_tail"):
        encoder = PairEncoder(tokenizer, max_length=64, truncation_side=side)
        seen.clear()
        batch = encoder.encode(["Which hop?"], ["Citra hops, and more. " * 100_000])
        assert batch.truncated == [True] and len(batch.input_ids[0]) == 64
        assert max(seen) <= 2 * (64 + encoder.TOKEN_MARGIN) * encoder.CHARS_PER_TOKEN


def test_a_huge_post_is_capped_by_default_in_listwise_training(tiny_bert, tmp_path):
    """A 10,000-comment post needed more than 8 GB in one listwise step (no default cap): the cap is on by default
    (a seeded random subset of DEFAULT_MAX_COMMENTS_PER_POST comments; null in a recipe turns it off)."""
    from commentrank.configs import DEFAULT_MAX_COMMENTS_PER_POST

    n = DEFAULT_MAX_COMMENTS_PER_POST + 16
    post = {"id": "huge", "text": "Which beer?", "comments": [{"text": f"answer {i}", "score": i} for i in range(n)]}
    data = write_jsonl(tmp_path / "huge.jsonl", [post])
    out = tmp_path / "rm"
    load_script("reward").main(["--model_name_or_path", tiny_bert, "--dataset_name", str(data), "--output_dir",
                                str(out), "--use_cpu", "true", "--bf16", "false", "--report_to", "none",
                                "--activation_checkpointing", "false", "--save_strategy", "no", "--max_length", "32",
                                "--loss_type", "listmle", "--max_steps", "1", "--ndcg_eval_posts", "0"])  # fmt: skip
    train = json.loads((out / "data_summary.json").read_text())["train"]
    assert (train["comments"], train["capped_posts"], train["capped_comments"]) == (
        DEFAULT_MAX_COMMENTS_PER_POST,
        1,
        16,
    )
