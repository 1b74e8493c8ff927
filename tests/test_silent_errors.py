"""Inputs that used to give a wrong result without a word, or use memory or time out of proportion: each now gives a
named error, a warning that is also recorded, or the right result. One test per row of the README's "Silent wrong
results and memory" table."""

import io
import json
import sys

import pytest
from test_scoring import cupit_rows, tiny_model, write_jsonl

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
