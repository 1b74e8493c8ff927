"""The fast scoring paths rank like the float32 model: bfloat16 (the default where the CPU has it) and exported
ONNX."""

import json
import logging

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from commentrank.bundled_models import minilm_path
from commentrank.data.loading import load_scoring_rows
from commentrank.encoding import PairEncoder
from commentrank.metrics import ranking_metrics
from commentrank.modeling import choose_dtype, load_reward_model, load_tokenizer
from commentrank.score.inference import score_posts
from commentrank.score.report import labeled_posts

from conftest import SAMPLE


@pytest.fixture(scope="module")
def minilm_rm(tmp_path_factory):
    """The bundled MiniLM with a seeded one-label head of visible spread, saved as a reward model folder."""
    tokenizer = load_tokenizer(minilm_path())
    model = load_reward_model(minilm_path(), tokenizer)
    torch.nn.init.normal_(model.classifier.weight, std=1.0, generator=torch.Generator().manual_seed(0))
    folder = tmp_path_factory.mktemp("minilm-rm")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sample_rows():
    return load_scoring_rows(str(SAMPLE), skip_invalid=True, max_posts=40).rows


def ndcg5(rows, rewards):
    return ranking_metrics(labeled_posts(rows, rewards))["ndcg@5"]


def test_bfloat16_ranks_like_float32(minilm_rm, sample_rows):
    tokenizer = load_tokenizer(str(minilm_rm))
    encoder = PairEncoder(tokenizer, max_length=128)
    rewards = {}
    for dtype in ("float32", "bfloat16"):
        model = load_reward_model(str(minilm_rm), tokenizer, dtype=dtype).eval()
        rewards[dtype], _ = score_posts(model, encoder, sample_rows)
    flat32, flat16 = np.concatenate(rewards["float32"]), np.concatenate(rewards["bfloat16"])
    assert spearmanr(flat32, flat16).statistic >= 0.999
    assert abs(ndcg5(sample_rows, rewards["float32"]) - ndcg5(sample_rows, rewards["bfloat16"])) <= 0.002


def test_auto_dtype_follows_the_hardware(monkeypatch):
    from commentrank import modeling

    monkeypatch.setattr(modeling, "cpu_bf16_flags", lambda: ["avx512_bf16"])
    assert choose_dtype("auto", "cpu") == ("bfloat16", "auto: the CPU has avx512_bf16")
    monkeypatch.setattr(modeling, "cpu_bf16_flags", lambda: [])
    assert choose_dtype("auto", "cpu")[0] == "float32"
    assert choose_dtype("float16", "cpu") == ("float16", "as asked")


def test_an_exported_model_scores_like_the_pytorch_one(tmp_path):
    from test_scoring import cupit_rows, read_jsonl, tiny_model, write_jsonl

    from conftest import load_script

    model = tiny_model(tmp_path / "rm")
    raw = write_jsonl(tmp_path / "ranked.jsonl", cupit_rows(6))
    load_script("export").main(["--model", str(model), "--output_dir", str(tmp_path / "onnx"), "--dataset", str(raw)])
    assert {"model.onnx", "model_int8.onnx", "commentrank_config.json", "tokenizer.json"} <= {
        p.name for p in (tmp_path / "onnx").iterdir()}  # fmt: skip
    parity = (tmp_path / "onnx" / "parity.md").read_text()
    assert "| onnx model.onnx |" in parity and "| onnx model_int8.onnx |" in parity
    score = load_script("score").main
    common = ["--dataset", str(raw), "--no_progress", "true"]
    torch_run = score(["--model", str(model), "--dtype", "float32", "--output_dir", str(tmp_path / "a"), *common])
    onnx_run = score(["--model", str(tmp_path / "onnx"), "--output_dir", str(tmp_path / "b"), *common])
    int8_run = score(["--model", str(tmp_path / "onnx"), "--onnx_file", "model_int8.onnx", "--output_dir",
                      str(tmp_path / "c"), *common])  # fmt: skip
    assert onnx_run["dtype"] == "model.onnx" and int8_run["dtype"] == "model_int8.onnx"
    rewards = {run: [c["reward"] for p in read_jsonl(tmp_path / run / "predictions.jsonl") for c in p["comments"]]
               for run in "abc"}  # fmt: skip
    assert rewards["b"] == pytest.approx(rewards["a"], abs=1e-5)
    assert rewards["c"] == pytest.approx(rewards["a"], abs=0.05) and rewards["c"] != rewards["a"]  # int8: close
    assert torch_run["results"]["model"] == pytest.approx(onnx_run["results"]["model"], abs=1e-6)


def test_the_parity_table_says_how_many_posts_its_ndcg_is_over(tmp_path):
    """parity.md's NDCG@5 is over the labeled posts with 2+ comments, the other columns over every post read."""
    from test_scoring import cupit_rows, tiny_model, write_jsonl

    from conftest import load_script

    unlabeled = {**cupit_rows(1, labeled=False)[0], "id": "u"}
    one_comment = {"id": "one", "text": "Q?", "comments": [{"text": "only", "score": 0}]}
    rows = [*cupit_rows(2), unlabeled, one_comment]  # 2 labeled posts of 3 and 4 comments, and 2 not evaluated
    raw = write_jsonl(tmp_path / "ranked.jsonl", rows)
    load_script("export").main(["--model", str(tiny_model(tmp_path / "rm")), "--output_dir", str(tmp_path / "onnx"),
                                "--dataset", str(raw), "--int8", "false"])  # fmt: skip
    parity = (tmp_path / "onnx" / "parity.md").read_text()
    assert "On 4 posts of " in parity and "NDCG@5 over the 2 labeled posts with 2+ comments" in parity


def test_an_exported_decoder_scores_like_the_pytorch_one(tmp_path):
    """A Llama reward model exports (without its key-value cache, which ONNX cannot trace) and scores as in PyTorch,
    one input at a time and in padded batches."""
    from test_reward_function import tiny_llama_rm
    from test_scoring import cupit_rows

    from commentrank.score.scorer import load_scorer

    from conftest import load_script

    model = tiny_llama_rm(tmp_path / "rm")
    load_script("export").main(["--model", str(model), "--output_dir", str(tmp_path / "onnx"), "--int8", "false"])
    rows = [{"prompt": r["text"], "comments": [c["text"] for c in r["comments"]]} for r in cupit_rows(6)]
    torch_scorer, onnx_scorer = load_scorer(model, device="cpu", dtype="float32"), load_scorer(tmp_path / "onnx")
    assert onnx_scorer.dtype == "model.onnx"
    for batch_size in (1, 4):
        expected, _ = torch_scorer.score(rows, batch_size)
        rewards, _ = onnx_scorer.score(rows, batch_size)
        assert np.concatenate(rewards) == pytest.approx(np.concatenate(expected), abs=1e-4)


def test_export_with_unlabeled_posts_keeps_the_export_and_shows_no_ndcg(tmp_path):
    from test_scoring import cupit_rows, tiny_model, write_jsonl

    from conftest import load_script

    raw = write_jsonl(tmp_path / "unlabeled.jsonl", cupit_rows(3, labeled=False))
    load_script("export").main(["--model", str(tiny_model(tmp_path / "rm")), "--output_dir", str(tmp_path / "onnx"),
                                "--dataset", str(raw), "--int8", "false"])  # fmt: skip
    assert (tmp_path / "onnx" / "model.onnx").is_file()
    rows = [line for line in (tmp_path / "onnx" / "parity.md").read_text().splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| ranker | ndcg@5 | spearman_vs_pytorch |")
    cells = {row.split(" | ")[0][2:]: row.split(" | ")[1:3] for row in rows[1:]}
    assert cells["pytorch float32"] == ["-", "1.0000"] and cells["onnx model.onnx"] == ["-", "1.0000"]


def test_rank_scores_in_the_dtype_asked_like_score_py(tmp_path, monkeypatch):
    """Where `auto` picks bfloat16, `rank.py --dtype float32` gives score.py --dtype float32's rewards."""
    from test_scoring import cupit_rows, read_jsonl, tiny_model, write_jsonl

    from commentrank import modeling

    from conftest import load_script

    monkeypatch.setattr(modeling, "cpu_bf16_flags", lambda: ["avx512_bf16"])
    model = tiny_model(tmp_path / "rm")
    post = cupit_rows(1, labeled=False)[0]
    data = write_jsonl(tmp_path / "post.jsonl", [post])
    load_script("score").main(["--model", str(model), "--dataset", str(data), "--output_dir", str(tmp_path / "out"),
                               "--dtype", "float32", "--no_progress", "true", "--n_bootstrap", "0"])  # fmt: skip
    expected = [c["reward"] for c in read_jsonl(tmp_path / "out" / "predictions.jsonl")[0]["comments"]]
    (tmp_path / "post.json").write_text(json.dumps(post))
    rows = load_script("rank").main(["--model", str(model), str(tmp_path / "post.json"), "--dtype", "float32"])
    assert [r["reward"] for r in sorted(rows, key=lambda r: r["index"])] == pytest.approx(expected, abs=1e-6)


def test_rank_logs_the_dtype_it_scores_in(tmp_path, monkeypatch, caplog):
    from test_scoring import tiny_model

    from commentrank import modeling

    from conftest import load_script

    monkeypatch.setattr(modeling, "cpu_bf16_flags", lambda: ["avx512_bf16"])
    (tmp_path / "post.json").write_text(json.dumps({"text": "Which hop for citrus?", "comments": ["Citra."]}))
    with caplog.at_level(logging.INFO, logger="commentrank.rank"):
        load_script("rank").main(["--model", str(tiny_model(tmp_path / "rm")), str(tmp_path / "post.json")])
    assert "scoring in bfloat16 (auto: the CPU has avx512_bf16)" in caplog.messages


@pytest.mark.slow
@pytest.mark.xdist_group("deepspeed")  # one multi-process launch at a time on a 2-core machine
def test_accelerate_launch_scores_in_two_processes_exactly_as_one(tmp_path):
    import os
    import subprocess
    import sys

    from test_scoring import cupit_rows, tiny_model, write_jsonl

    from conftest import ROOT, _free_port

    model, raw = tiny_model(tmp_path / "rm"), write_jsonl(tmp_path / "ranked.jsonl", cupit_rows(9))
    args = ["--model", str(model), "--dataset", str(raw), "--no_progress", "true", "--batch_size", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              str(ROOT / "accelerate_configs" / "cpu_2proc.yaml"),
              "--main_process_port", str(_free_port())]  # fmt: skip
    script = str(ROOT / "scripts" / "score.py")
    two = subprocess.run([*launch, script, *args, "--output_dir", str(tmp_path / "two")], env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stderr.count("scoring in") == 2  # two processes scored
    one = subprocess.run([sys.executable, script, *args, "--output_dir", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    for name in ("predictions.jsonl", "report.md"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name


def test_a_half_precision_model_keeps_its_reward_head_in_float32(tmp_path):
    from test_scoring import cupit_rows, tiny_model

    from commentrank.score.scorer import load_scorer

    model_dir = tiny_model(tmp_path / "rm")
    rows = [{"prompt": r["text"], "comments": [c["text"] for c in r["comments"]]} for r in cupit_rows(30)]
    scorer = load_scorer(model_dir, dtype="bfloat16")
    assert scorer.model.classifier.weight.dtype == torch.float32 and scorer.model.dtype == torch.bfloat16
    rewards, _ = scorer.score(rows)
    assert all(len(set(post)) == len(post) for post in rewards)  # a bfloat16 logit (8 bits) would tie close comments


def test_export_of_an_exported_model_is_one_line_and_parity_says_why_it_has_no_table(tmp_path):
    from test_scoring import tiny_model

    from conftest import load_script

    export = load_script("export").main
    export(["--model", str(tiny_model(tmp_path / "rm")), "--output_dir", str(tmp_path / "onnx"), "--int8", "false"])
    assert "No parity table: give `--dataset`" in (tmp_path / "onnx" / "parity.md").read_text()
    with pytest.raises(SystemExit) as stop:
        export(["--model", str(tmp_path / "onnx"), "--output_dir", str(tmp_path / "again")])
    assert "is already an exported ONNX model" in str(stop.value.code)
    assert not (tmp_path / "again").exists()


def test_rank_scores_with_the_int8_onnx_file_as_score_does(tmp_path, monkeypatch):
    import io
    import json
    import sys

    from test_scoring import tiny_model

    from commentrank.score.scorer import load_scorer

    from conftest import load_script

    load_script("export").main(["--model", str(tiny_model(tmp_path / "rm")), "--output_dir", str(tmp_path / "onnx")])
    post = {"text": "Which hop?", "comments": ["Citra.", "Cascade and Mosaic.", "Water."]}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(post)))
    rows = load_script("rank").main(["--model", str(tmp_path / "onnx"), "--onnx_file", "model_int8.onnx"])
    expected = load_scorer(tmp_path / "onnx", onnx_file="model_int8.onnx").rank("Which hop?", post["comments"])
    assert [(r["index"], r["reward"]) for r in rows] == [(i, pytest.approx(r)) for i, r in expected]
