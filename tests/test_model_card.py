import contextlib
import io
import json
import logging
import re
import shutil

import huggingface_hub
import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.utils import filter_repo_objects
from test_scoring import cupit_rows, tiny_model, write_jsonl

from commentrank.bundled_models import minilm_path
from commentrank.hub import push_model_folder, stage_model_folder
from commentrank.metrics import baseline_metrics, ranking_metrics
from commentrank.model_card import (
    TRAINING_FACTS_FILE,
    build_model_card,
    save_model_card,
    save_training_facts,
    training_facts,
)
from commentrank.outputs import MARKER, OutputDir
from commentrank.score.scorer import load_scorer

from conftest import ROOT, SAMPLE, TOKEN, load_script


def metadata(text: str) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert match, "the card starts with a YAML block"
    return yaml.safe_load(match.group(1))


def model_index_values(meta: dict) -> dict[str, float]:
    (entry,) = meta["model-index"]
    (result,) = entry["results"]
    return {m["name"]: m["value"] for m in result["metrics"]}


@pytest.fixture(scope="module")
def results():
    posts = [
        {"ranks": [0, 1, 2], "votes": [5, 2, 0], "comments": ["a" * 3, "b" * 9, "c"], "scores": [0.9, 0.1, 0.5]},
        {"ranks": [1, 0, 2, 3], "votes": [3, 4, 1, 1], "comments": ["dd", "e", "f" * 8, "g"], "scores": [1, 2, 3, 4]},
    ]
    return {"model": ranking_metrics(posts), **baseline_metrics(posts)}


def test_card_metadata_holds_the_ndcg_results_base_model_dataset_and_license(results, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    card = build_model_card(
        model_id="me/minilm-comment-rm", base_model=minilm_path(), dataset=str(SAMPLE),
        results=results, split="test", training={"learning_rate": 5e-5, "separator": "\n\n", "hub_token": TOKEN},
        loss_type="pairwise", text_pair=True,
    )  # fmt: skip
    path = save_model_card(card, tmp_path)
    text = path.read_text()
    meta = metadata(text)
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["datasets"] == ["data/stackexchange/se_ranked.jsonl.gz"]
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "transformers"
    assert {"reward-model", "commentrank"} <= set(meta["tags"])
    (entry,) = meta["model-index"]
    assert entry["name"] == "minilm-comment-rm"
    (result,) = entry["results"]
    assert result["task"]["type"] in ("text-ranking", "text-classification")
    assert result["dataset"]["split"] == "test"
    model = results["model"]
    expected = {f"NDCG@{k}": model[f"ndcg@{k}"] for k in range(1, 6)}
    expected |= {f"NDCG@{k} (votes)": model[f"ndcg_votes@{k}"] for k in range(1, 6)}
    expected |= {"Top-1 NDCG@5": model["top1_ndcg@5"], "Pair accuracy": model["pair_accuracy"]}
    expected |= {"Grouped NDCG@5 (CUP IT)": model["grouped_ndcg@5"],
                 "Paired NDCG@2 (CUP IT, adjacent pairs)": model["paired_ndcg@2"]}  # fmt: skip
    assert model_index_values(meta) == {name: round(value, 4) for name, value in expected.items()}
    assert {m["type"] for m in result["metrics"]} == {"ndcg", "accuracy"}
    assert [m["args"]["k"] for m in result["metrics"] if m["name"].startswith("NDCG@")][:5] == [1, 2, 3, 4, 5]
    # the Hub's own parser reads it back
    loaded = ModelCard.load(path)
    assert {r.metric_name: r.metric_value for r in loaded.data.eval_results} == model_index_values(meta)
    # text: comparison table, usage with transformers and with scripts/rank.py, training settings without secrets
    for ranker in ("model", "random", "longest_first"):
        assert f"| {ranker} | {model['ndcg@1'] if ranker == 'model' else results[ranker]['ndcg@1']:.4f} |" in text
    assert 'model_id = "me/minilm-comment-rm"' in text and "scripts/rank.py --model me/minilm-comment-rm" in text
    assert "| learning_rate | `5e-05` |" in text and TOKEN not in text and minilm_path() not in text


def test_usage_snippet_scores_like_commentrank(tmp_path, capsys):
    model_dir = tiny_model(tmp_path / "rm")
    card = build_model_card(model_id=str(model_dir), base_model="bundled:minilm", dataset=None, results={},
                            loss_type="listmle", text_pair=True)  # fmt: skip
    text = str(card)
    assert "model-index" not in metadata(text) and "No evaluation results" in text
    (snippet,) = re.findall(r"```python\n(.*?)```", text, re.S)
    exec(compile(snippet, "card-snippet", "exec"), {})
    printed = re.findall(r"^([+-]\d+\.\d+)  (.*)$", capsys.readouterr().out, re.M)
    post = re.search(r'^post = "(.*)"$', snippet, re.M).group(1)
    comments = json.loads(re.search(r"^comments = (\[.*\])$", snippet, re.M).group(1))
    expected = load_scorer(model_dir, dtype="float32").rank(post, comments)
    assert [c for _, c in printed] == [comments[i] for i, _ in expected]
    assert [float(r) for r, _ in printed] == pytest.approx([r for _, r in expected], abs=1e-4)


def test_usage_snippet_adds_the_length_term_as_every_scorer_does(tmp_path, capsys):
    from commentrank.configs import EncoderSettings

    model_dir = tiny_model(tmp_path / "rm")
    settings = EncoderSettings(max_length=64, length_weight=2.0)  # large: it decides the order
    settings.save(model_dir)
    card = build_model_card(model_id=str(model_dir), base_model="bundled:minilm", dataset=None, results={},
                            loss_type="listmle", text_pair=True, settings=settings)  # fmt: skip
    (snippet,) = re.findall(r"```python\n(.*?)```", str(card), re.S)
    exec(compile(snippet, "card-snippet", "exec"), {})
    printed = re.findall(r"^([+-]\d+\.\d+)  (.*)$", capsys.readouterr().out, re.M)
    post = re.search(r'^post = "(.*)"$', snippet, re.M).group(1)
    comments = json.loads(re.search(r"^comments = (\[.*\])$", snippet, re.M).group(1))
    expected = load_scorer(model_dir, dtype="float32").rank(post, comments)
    assert [c for _, c in printed] == [comments[i] for i, _ in expected]
    assert [float(r) for r, _ in printed] == pytest.approx([r for _, r in expected], abs=1e-4)


def test_decoder_card_shows_text_with_eos():
    card = build_model_card(model_id="me/gpt2-rm", base_model="gpt2", dataset="me/cupit", results={},
                            loss_type="pairwise", text_pair=False)  # fmt: skip
    meta = metadata(str(card))
    assert meta["base_model"] == "gpt2" and meta["datasets"] == ["me/cupit"]
    assert "tokenizer.eos_token" in str(card) and "text pair" not in str(card)


def test_score_push_to_hub_uploads_model_tokenizer_settings_and_card(tmp_path, fake_hub, caplog, capsys):
    model_dir = tiny_model(tmp_path / "rm")
    (model_dir / "commentrank_config.json").write_text(json.dumps({"max_length": 64, "prompt_template": "{title}"}))
    (model_dir / "README.md").write_text("---\nbase_model: someone/else\n---\n# old card\n")
    facts = training_facts(loss_type="listmle", base_model="sentence-transformers/all-MiniLM-L6-v2", dataset=None)
    save_training_facts(facts, model_dir)  # what training records (the README is not read)
    (model_dir / "checkpoint-5").mkdir()
    torch.save({}, model_dir / "checkpoint-5" / "optimizer.pt")
    for name in ("optimizer.pt", "training_args.bin", ".README.md.tmp-x"):
        (model_dir / name).write_bytes(b"not for the hub")
    dataset = write_jsonl(tmp_path / "ranked.jsonl", cupit_rows(6))
    out = tmp_path / "scores"
    score = load_script("score").main
    with caplog.at_level(logging.DEBUG), contextlib.redirect_stderr(io.StringIO()) as stderr:
        score(["--model", str(model_dir), "--dataset", str(dataset), "--output_dir", str(out), "--no_progress",
               "--push_to_hub", "me/minilm-comment-rm", "--hub_private", "true"])  # fmt: skip

    assert [c[0] for c in fake_hub] == ["init", "create_repo", "upload_folder"]
    assert fake_hub[0][1:] == ((), {})  # no token handed to HfApi: huggingface_hub finds it itself
    assert fake_hub[1][1:] == ("me/minilm-comment-rm", {"exist_ok": True, "private": True, "repo_type": "model"})
    _, kwargs, uploaded = fake_hub[2]
    assert kwargs["repo_id"] == "me/minilm-comment-rm" and kwargs["repo_type"] == "model" and "token" not in kwargs
    stale = ["pytorch_model.bin", "checkpoint-9/optimizer.pt", "model-00001-of-00002.safetensors", "tokenizer.json"]
    kept = ["notebook.ipynb", ".gitattributes", "data/notes.md"]  # what an earlier push of another model left: gone
    deleted = filter_repo_objects(stale + kept, allow_patterns=kwargs["delete_patterns"])
    assert sorted(deleted) == sorted(stale)  # the repo's other files stay
    assert sorted(uploaded) == ["README.md", "commentrank_config.json", "config.json", "model.safetensors",
                                "tokenizer.json", "tokenizer_config.json", "training_facts.json"]  # fmt: skip
    assert uploaded["model.safetensors"] == (model_dir / "model.safetensors").read_bytes()
    assert json.loads(uploaded["commentrank_config.json"])["max_length"] == 64
    assert "old card" in (model_dir / "README.md").read_text()  # the model folder itself is untouched
    written = {".commentrank-output.json", "metrics.json", "ndcg_at_k.png", "predictions.jsonl", "report.md"}
    assert {p.name for p in out.iterdir()} == written  # no staged copy of the model left
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".scores.tmp-")]

    card = uploaded["README.md"].decode()
    meta = metadata(card)
    metrics = json.loads((out / "metrics.json").read_text())["results"]
    assert model_index_values(meta)["NDCG@5"] == round(metrics["model"]["ndcg@5"], 4)
    assert model_index_values(meta)["Pair accuracy"] == round(metrics["model"]["pair_accuracy"], 4)
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and meta["datasets"] == ["ranked.jsonl"]
    assert f"| longest_first | {metrics['longest_first']['ndcg@1']:.3f} [" in card  # with its interval
    assert f"scored in {json.loads((out / 'metrics.json').read_text())['dtype']}" in card

    logs = caplog.text + capsys.readouterr().out + stderr.getvalue()
    assert "me/minilm-comment-rm" in logs and TOKEN not in logs
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_push_to_hub_needs_a_login_and_a_model_folder(tmp_path, fake_hub, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        push_model_folder(tmp_path, "me/x")
    shutil.copy(minilm_path() + "/config.json", tmp_path / "config.json")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(RuntimeError, match="hf auth login"):
        push_model_folder(tmp_path, "me/x")
    assert [c[0] for c in fake_hub] == []


def our_output_with_a_users_files(folder):
    """A model folder commentrank wrote (its marker lists the entries), then a user's note and folder added in it."""
    ours = {"config.json": b"{}", "model.safetensors": b"weights", "README.md": b"# card",
            "adapter/adapter_config.json": b"{}"}  # fmt: skip
    with OutputDir(folder, "reward_model") as tmp:
        for rel, content in ours.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(content)
    (folder / "mynotes.md").write_text("private notes")
    (folder / "drafts").mkdir()
    (folder / "drafts" / "config.json").write_text("{}")
    return ours


def test_push_of_an_output_folder_uploads_our_entries_and_not_the_users_files(tmp_path, fake_hub):
    ours = our_output_with_a_users_files(tmp_path / "rm")
    push_model_folder(tmp_path / "rm", "me/rm")
    (uploaded,) = [c[2] for c in fake_hub if c[0] == "upload_folder"]
    assert uploaded == ours


def test_push_refuses_an_output_folder_whose_only_config_is_the_users(tmp_path, fake_hub):
    with OutputDir(tmp_path / "rm", "reward_model") as tmp:
        (tmp / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "rm" / "config.json").write_text("{}")  # the user's, not listed in the marker
    with pytest.raises(FileNotFoundError, match="no config.json"):
        push_model_folder(tmp_path / "rm", "me/rm")
    assert [c[0] for c in fake_hub] == []


def test_staging_an_output_folder_leaves_the_users_files_out(tmp_path):
    ours = our_output_with_a_users_files(tmp_path / "rm")
    staged = stage_model_folder(tmp_path / "rm", tmp_path / "staged")
    files = {p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()} - {MARKER}
    assert files == set(ours) - {"README.md"}  # the old card is left out too, as for any model folder


def test_staging_writes_the_missing_tokenizer_files_without_touching_the_model_folders(tmp_path):
    model_dir = tiny_model(tmp_path / "rm")
    (model_dir / "tokenizer_config.json").unlink()  # staging saves the tokenizer: tokenizer.json is written again
    scorer = load_scorer(model_dir, dtype="float32")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in model_dir.iterdir()}
    staged = stage_model_folder(model_dir, tmp_path / "staged", scorer=scorer)
    assert (staged / "tokenizer_config.json").is_file() and (staged / "tokenizer.json").is_file()
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in model_dir.iterdir()} == before


def test_publishing_builds_the_card_from_the_facts_training_recorded_not_from_the_readme(
    tiny_bert, prepared_sample, tmp_path, fake_hub
):
    from test_reward import args_for

    rm = tmp_path / "rm"
    load_script("reward").main(args_for(tiny_bert, prepared_sample, rm, "--max_steps", "1", "--loss_type", "listmle"))
    facts = json.loads((rm / TRAINING_FACTS_FILE).read_text())
    assert facts["loss_type"] == "listmle" and facts["prompt_template"] == "{title}" and facts["results"]["model"]
    assert facts["base_model"] is None and str(tmp_path) not in json.dumps(facts)  # a local base: no path published
    (rm / "README.md").write_text("---\ntags: [pairwise]\nbase_model: someone/else\n---\n# My notes\n")  # edited
    dataset = write_jsonl(tmp_path / "ranked.jsonl", cupit_rows(6))
    load_script("score").main(["--model", str(rm), "--dataset", str(dataset), "--output_dir", str(tmp_path / "s"),
                               "--no_progress", "--n_bootstrap", "0", "--push_to_hub", "me/rm"])  # fmt: skip
    card = fake_hub[-1][2]["README.md"].decode()
    assert "**ListMLE (Plackett-Luce)**" in card and "- listmle\n" in card and "pairwise (Bradley-Terry)" not in card
    assert "someone/else" not in card and "My notes" not in card
    assert "My notes" in (rm / "README.md").read_text()  # the user's README is left as it is


def test_a_card_built_from_a_raw_file_claims_no_split(tmp_path, fake_hub):
    """A raw file has no split (report.md names none): the card neither says `split: test` in its model-index nor
    "split `test`" in its text."""
    model_dir = tiny_model(tmp_path / "rm")
    dataset = write_jsonl(tmp_path / "ranked.jsonl", cupit_rows(6))
    load_script("score").main(["--model", str(model_dir), "--dataset", str(dataset), "--output_dir",
                               str(tmp_path / "s"), "--no_progress", "--n_bootstrap", "0",
                               "--push_to_hub", "me/rm"])  # fmt: skip
    card = fake_hub[-1][2]["README.md"].decode()
    (entry,) = metadata(card)["model-index"]
    (result,) = entry["results"]
    assert "split" not in result["dataset"] and "split `" not in card
    assert "On `ranked.jsonl` (" in card  # the posts of the file, counted


def test_a_push_names_the_endpoint_it_pushed_to(monkeypatch):
    from huggingface_hub import constants

    from commentrank.hub import repo_url

    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.example.com/")  # HF_ENDPOINT, read at import
    assert repo_url("me/rm") == "https://hub.example.com/me/rm"
    assert repo_url("me/ds", "dataset") == "https://hub.example.com/datasets/me/ds"
