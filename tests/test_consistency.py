"""What one stage writes, the next reads the same way: prompt templates, encoder settings, losses, repo names,
drops."""

import json

import pytest
from test_reward import args_for
from test_scoring import read_jsonl, write_jsonl

from commentrank.configs import EncoderSettings, PrepArguments
from commentrank.data.loading import load_scoring_rows
from commentrank.data.prepare import run_prepare
from commentrank.encoding import PairEncoder
from commentrank.modeling import load_tokenizer
from commentrank.train.listwise import ListwiseRewardTrainer, prepare_listwise

from conftest import load_script, single_final_upload

reward, score = load_script("reward"), load_script("score")
WITH_CONTEXT = "{title}\n\n{body}"


def ranked_rows(n_posts=30, bad_line=None):
    """Posts with a title, a body and three ranked answers; `bad_line` (1-based) repeats an answer's text."""
    rows = []
    for i in range(n_posts):
        comments = [{"text": f"answer {j} to {i}: " + "word " * (3 * j + i % 4), "score": j} for j in range(3)]
        if bad_line == i + 1:
            comments[2]["text"] = comments[0]["text"]
        rows.append({"id": f"p{i}", "text": f"Question {i}?", "post_body": f"The body of question {i} " * 3,
                     "comments": comments})  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def with_context(tmp_path_factory, tiny_bert):
    """A raw file, its data_prep folder built with context, and a reward model trained on the folder."""
    root = tmp_path_factory.mktemp("with-context")
    raw = write_jsonl(root / "ranked.jsonl", ranked_rows())
    run_prepare(PrepArguments(inputs=[str(raw)], output_dir=str(root / "data"), prompt_template=WITH_CONTEXT,
                              test_size=6, validation_size=4))  # fmt: skip
    reward.main(args_for(tiny_bert, str(root / "data"), root / "rm", "--max_steps", "1", "--ndcg_eval_posts", "0"))
    return raw, root / "data", root / "rm"


def test_the_model_records_the_template_its_data_was_built_with(with_context):
    _, data, model = with_context
    assert json.loads((data / "prep_config.json").read_text())["prompt_template"] == WITH_CONTEXT
    assert EncoderSettings.load(model).prompt_template == WITH_CONTEXT


def test_a_raw_file_scores_exactly_as_its_data_prep_folder(with_context, tmp_path):
    raw, data, model = with_context
    # float32: the test is about the inputs (bf16 rounds differently when the batches are made up differently)
    common = ["--model", str(model), "--no_progress", "true", "--max_length", "64", "--dtype", "float32"]
    score.main([*common, "--dataset", str(data), "--output_dir", str(tmp_path / "folder")])
    score.main([*common, "--dataset", str(raw), "--output_dir", str(tmp_path / "raw")])
    from_folder = {p["post_id"]: p for p in read_jsonl(tmp_path / "folder" / "predictions.jsonl")}
    from_raw = {p["post_id"]: p for p in read_jsonl(tmp_path / "raw" / "predictions.jsonl")}
    assert len(from_folder) == 6 and set(from_folder) < set(from_raw)
    for post_id, post in from_folder.items():  # the same inputs; batches differ, so floats may differ in the 9th digit
        assert [c["reward"] for c in from_raw[post_id]["comments"]] == pytest.approx(
            [c["reward"] for c in post["comments"]], abs=1e-6)  # fmt: skip
    raw_prompts = {r["post_id"]: r["prompt"] for r in load_scoring_rows(str(raw), prompt_template=WITH_CONTEXT).rows}
    folder_rows = load_scoring_rows(str(data)).rows
    assert all(raw_prompts[r["post_id"]] == r["prompt"] and "The body of question" in r["prompt"] for r in folder_rows)
    # and the body is in the prompt: scoring the raw file without it gives other rewards
    score.main([*common, "--dataset", str(raw), "--output_dir", str(tmp_path / "title"), "--prompt_template",
                "{title}"])  # fmt: skip
    titles = {p["post_id"]: p for p in read_jsonl(tmp_path / "title" / "predictions.jsonl")}
    assert any(titles[i]["comments"][0]["reward"] != p["comments"][0]["reward"] for i, p in from_folder.items())


def test_a_template_that_disagrees_with_the_data_is_an_error(with_context, tiny_bert, tmp_path):
    _, data, model = with_context
    with pytest.raises(SystemExit, match=r"prompt_template '\{title\}' disagrees with .*body"):
        reward.main(args_for(tiny_bert, str(data), tmp_path / "rm", "--max_steps", "1", "--prompt_template",
                             "{title}"))  # fmt: skip
    with pytest.raises(SystemExit, match=r"^score: error: prompt_template '\{title\}' disagrees"):
        score.main(["--model", str(model), "--dataset", str(data), "--output_dir", str(tmp_path / "s"),
                    "--prompt_template", "{title}", "--no_progress", "true"])  # fmt: skip


def test_raw_file_training_stops_on_bad_input_or_skips_and_counts_it(tiny_bert, tmp_path):
    raw = write_jsonl(tmp_path / "ranked.jsonl", ranked_rows(bad_line=7))
    argv = args_for(tiny_bert, str(raw), tmp_path / "rm", "--max_steps", "1", "--ndcg_eval_posts", "0")
    with pytest.raises(
        SystemExit, match=r"ranked.jsonl:7: field 'comments\[2\].text': the same text as comments\[0\]"
    ):
        reward.main(argv)
    assert not (tmp_path / "rm").exists()
    reward.main([*argv, "--skip_invalid", "true"])
    source = json.loads((tmp_path / "rm" / "data_summary.json").read_text())["source"]
    assert source["posts_dropped"] == {"duplicate_comment": 1} and source["comments_dropped"] == {
        "duplicate_comment": 3
    }
    assert source["posts_read"] == source["posts_kept"] + 1 == 30
    assert source["comments_read"] == source["comments_kept"] + 3 == 90


def test_listwise_trainer_encodes_a_raw_view_with_the_recipe_settings(tiny_bert, prepared_sample, tmp_path):
    import datasets

    from commentrank.configs import ListwiseRewardConfig

    tokenizer = load_tokenizer(tiny_bert)
    view = datasets.load_from_disk(f"{prepared_sample}/listwise")["train"].select(range(6))
    settings = EncoderSettings(max_length=40, min_comment_tokens=8, truncation_side="left")
    args = ListwiseRewardConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", max_length=40,
                                loss_type="pairwise_all")  # fmt: skip
    from commentrank.modeling import load_reward_model

    trainer = ListwiseRewardTrainer(model=load_reward_model(tiny_bert, tokenizer), args=args, train_dataset=view,
                                    processing_class=tokenizer, encoder_settings=settings)  # fmt: skip
    expected, _ = prepare_listwise(view, PairEncoder(tokenizer, settings))
    default, _ = prepare_listwise(view, PairEncoder(tokenizer, max_length=40))
    assert trainer.train_dataset["comment_ids"] == expected["comment_ids"] != default["comment_ids"]


@pytest.mark.parametrize("loss_type, named", [("listmle", "ListMLE (Plackett-Luce)"), ("pairwise", "pairwise")])
def test_the_card_names_the_loss_the_model_was_trained_with(loss_type, named, tiny_bert, prepared_sample, tmp_path):
    out = tmp_path / "rm"
    reward.main(args_for(tiny_bert, prepared_sample, out, "--max_steps", "1", "--loss_type", loss_type))
    card = (out / "README.md").read_text()
    assert f"**{named}" in card and f"- {loss_type}\n" in card  # the text and a tag
    assert ("ListMLE" in card) == (loss_type == "listmle")
    assert ("r_chosen - r_rejected" in card) == (loss_type == "pairwise")


def test_an_output_dir_with_a_trailing_slash_pushes_to_its_name(tiny_bert, prepared_sample, tmp_path, fake_hub):
    reward.main(args_for(tiny_bert, prepared_sample, f"{tmp_path / 'my-rm'}/", "--max_steps", "1", "--push_to_hub",
                         "true"))  # fmt: skip
    single_final_upload(fake_hub, "my-rm")
    assert [c[1]["repo_id"] for c in fake_hub if c[0] == "upload_folder"] == ["user/my-rm"]


def test_every_checkpoint_carries_the_encoder_settings(tiny_bert, prepared_sample, tmp_path):
    out = tmp_path / "rm"
    reward.main(args_for(tiny_bert, prepared_sample, out, "--max_steps", "2", "--save_strategy", "steps",
                         "--save_steps", "1", "--max_length", "48", "--min_comment_tokens", "16"))  # fmt: skip
    final = json.loads((out / "commentrank_config.json").read_text())
    assert final["max_length"] == 48 and final["min_comment_tokens"] == 16
    for step in (1, 2):
        assert json.loads((out / f"checkpoint-{step}" / "commentrank_config.json").read_text()) == final


def test_the_public_api_resolves_lazily():
    import subprocess
    import sys

    import commentrank

    assert all(getattr(commentrank, name) is not None for name in commentrank.__all__)
    code = "import sys, commentrank; print('torch' in sys.modules)"  # a bare import stays light
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_every_test_the_readmes_name_exists():
    """The READMEs answer "which test shows it?" by name (`test_x.py::test_name`, `::test_name` for the same file, or
    a bare `test_name`): each one named must be a test of that file (of some file, bare), so a renamed or removed
    test cannot leave a claim without its proof. Bare names that are settings (`test_sites`) are not tests."""
    import dataclasses
    import re

    from commentrank import configs

    from conftest import ROOT

    tests = {p.name: p.read_text() for p in (ROOT / "tests").glob("test_*.py")}
    settings = {f.name for c in vars(configs).values() if dataclasses.is_dataclass(c) for f in dataclasses.fields(c)}
    missing, current = [], None
    for readme in (ROOT / "README.md", ROOT / "recipes" / "README.md"):
        for match in re.finditer(r"`(?:tests/)?(test_\w+\.py)?(::)?(test_\w+)(?:\[[^\]]*\])?`", readme.read_text()):
            file, same_file, name = match.groups()
            current = file or current
            where = [tests.get(current, "")] if file or same_file else list(tests.values())
            if not (any(f"def {name}(" in text for text in where) or (not (file or same_file) and name in settings)):
                missing.append(f"{readme.name}: {file or (current if same_file else '')}::{name}")
    assert missing == []
