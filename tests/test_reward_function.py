"""commentrank.RewardFunction: the rewards of scripts/score.py, inside TRL's GRPOTrainer, and TRL's own model path."""

import json
import math
import re

import pytest
import torch
from test_pipeline import gpt2_like_tokenizer, pickle_only
from test_scoring import cupit_rows, read_jsonl, tiny_model, write_jsonl
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaConfig,
    LlamaForSequenceClassification,
)

from commentrank import RewardFunction
from commentrank.configs import EncoderSettings
from commentrank.encoding import length_feature

from conftest import load_script

LENGTH_WEIGHT = 0.3


@pytest.fixture(scope="module")
def encoder_rm(tmp_path_factory):
    """A tiny BERT reward model (MiniLM tokenizer: text pairs with segment ids) with a length term, 48 tokens."""
    folder = tiny_model(tmp_path_factory.mktemp("rf-bert"))
    EncoderSettings(max_length=48, length_weight=LENGTH_WEIGHT).save(folder)
    return folder


@pytest.fixture(scope="module")
def decoder_rm(tmp_path_factory):
    return tiny_llama_rm(tmp_path_factory.mktemp("rf-llama"))


def tiny_llama_rm(folder):
    """A tiny Llama reward model (a GPT-2-like tokenizer: separator + EOS, the reward read at EOS) in `folder`."""
    rows = cupit_rows(8)
    tokenizer = gpt2_like_tokenizer([r["text"] for r in rows] + [c["text"] for r in rows for c in r["comments"]])
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, num_labels=1,
                         pad_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    model = LlamaForSequenceClassification(config)
    torch.nn.init.normal_(model.score.weight, std=2.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    EncoderSettings(max_length=40, length_weight=LENGTH_WEIGHT, separator="\n\n").save(folder)
    return folder


def scored_by_score_py(model, tmp_path):
    """(posts, comments, rewards) of scripts/score.py in float32 on a few posts (some cut to max_length)."""
    rows = cupit_rows(6)
    data = write_jsonl(tmp_path / "posts.jsonl", rows)
    load_script("score").main(["--model", str(model), "--dataset", str(data), "--output_dir", str(tmp_path / "out"),
                               "--dtype", "float32", "--no_progress", "--n_bootstrap", "0"])  # fmt: skip
    predictions = read_jsonl(tmp_path / "out" / "predictions.jsonl")
    posts = [p["text"] for p in predictions for _ in p["comments"]]
    comments = [c["text"] for p in predictions for c in p["comments"]]
    return posts, comments, [c["reward"] for p in predictions for c in p["comments"]]


@pytest.mark.parametrize("model", ["encoder_rm", "decoder_rm"])
def test_rewards_equal_score_py(model, request, tmp_path):
    folder = request.getfixturevalue(model)
    posts, comments, expected = scored_by_score_py(folder, tmp_path)
    reward = RewardFunction(folder, dtype="float32", batch_size=4)
    assert reward(prompts=posts, completions=comments) == pytest.approx(expected, abs=1e-4)
    # conversational prompts and completions, and the post from a dataset column, give the same rewards
    chat = reward(prompts=[[{"role": "user", "content": "Write a comment."}]] * len(posts),
                  completions=[[{"role": "assistant", "content": c}] for c in comments], post=posts)  # fmt: skip
    assert chat == pytest.approx(expected, abs=1e-4)


def test_a_chat_prompt_is_scored_against_its_last_user_message(encoder_rm):
    """A few-shot prompt holds an assistant message (the example comment): the post is still the last user
    message."""
    few_shot = [{"role": "system", "content": "Answer beer questions."}, {"role": "user", "content": "Example post"},
                {"role": "assistant", "content": "Example comment"},
                {"role": "user", "content": "Best hop for citrus?"}]  # fmt: skip
    reward = RewardFunction(encoder_rm, dtype="float32")
    completions = ["Citra, mostly.", "Water."]
    expected = reward(prompts=["Best hop for citrus?"] * 2, completions=completions)
    assert reward(prompts=[few_shot] * 2, completions=completions) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "completion, message",
    [(["a"], "got a list holding str"), (None, "got None"), (123, "got int"),
     ([{"role": "assistant", "content": None}], "message 0's content is None")],
    ids=["list_of_str", "none", "int", "content_none"],
)  # fmt: skip
def test_a_malformed_completion_is_a_value_error_naming_its_index(encoder_rm, completion, message):
    reward = RewardFunction(encoder_rm, dtype="float32")
    with pytest.raises(ValueError, match=rf"^completion 1: .*{re.escape(message)}"):
        reward(prompts=["Q?", "Q?"], completions=["fine", completion])


def test_length_free_penalty_and_clip(encoder_rm):
    posts, comments = ["Which hop for citrus?"] * 3, ["Citra.", "Citra, Mosaic and Amarillo all work well.", ""]
    full = RewardFunction(encoder_rm, dtype="float32")(prompts=posts, completions=comments)
    free = RewardFunction(encoder_rm, dtype="float32", length_free=True)(prompts=posts, completions=comments)
    term = [LENGTH_WEIGHT * n for n in length_feature(comments)]
    assert [f - t for f, t in zip(full, term)] == pytest.approx(free, abs=1e-5)
    same = RewardFunction(encoder_rm, dtype="float32", length_penalty=LENGTH_WEIGHT)
    assert same(prompts=posts, completions=comments) == pytest.approx(free, abs=1e-5)
    clipped = RewardFunction(encoder_rm, dtype="float32", clip=(min(full) + 1e-3, max(full) - 1e-3))
    values = clipped(prompts=posts, completions=comments)
    assert min(values) == pytest.approx(min(full) + 1e-3) and max(values) == pytest.approx(max(full) - 1e-3)


def tiny_policy(folder, seed: int = 0):
    """A 2-block Llama causal LM from a config (weights drawn with `seed`) with a GPT-2-like tokenizer trained on the
    test posts."""
    from transformers import LlamaForCausalLM

    rows = cupit_rows(8)
    tokenizer = gpt2_like_tokenizer([r["text"] for r in rows] + [c["text"] for r in rows for c in r["comments"]])
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def grpo_trainer(policy, reward_funcs, out, **changes):
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    posts = [r["text"] for r in cupit_rows(8)]
    train = datasets.Dataset.from_dict({"prompt": [p + "\n\n" for p in posts], "post": posts})
    args = GRPOConfig(output_dir=str(out), use_cpu=True, bf16=False, fp16=False, activation_checkpointing=False,
                      per_device_train_batch_size=4, num_generations=2, max_completion_length=8, max_steps=2,
                      learning_rate=1e-2, logging_steps=1, save_strategy="no", report_to="none", seed=0,
                      dataloader_num_workers=0, **changes)  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(policy)
    return GRPOTrainer(model=policy, reward_funcs=reward_funcs, args=args, train_dataset=train,
                       processing_class=tokenizer)  # fmt: skip


def test_trl_model_path_gives_other_rewards_for_an_encoder(encoder_rm, tmp_path):
    """The trap: `reward_funcs=<the model>` makes TRL tokenize prompt + completion as one string without special
    tokens (no [CLS]/[SEP], no segment ids, no length term): its rewards are not the model's."""
    policy = tiny_policy(tmp_path / "policy")
    model = AutoModelForSequenceClassification.from_pretrained(encoder_rm).eval()
    reward = RewardFunction(encoder_rm, dtype="float32")
    trainer = grpo_trainer(policy, [model, reward], tmp_path / "out")
    posts = ["Which hop gives citrus notes?", "How long should a stout age?"]
    comments = ["Citra, mostly, with some Mosaic.", "Six months in a cool cellar."]
    inputs = [{"prompt": p, "post": p} for p in posts]
    rewards = trainer._calculate_rewards(inputs, posts, comments, [[1], [1]])  # TRL's own code, both reward funcs
    assert rewards[:, 1].tolist() == pytest.approx(reward(prompts=posts, completions=comments), abs=1e-5)
    assert (rewards[:, 0] - rewards[:, 1]).abs().min() > 1e-2  # the model through TRL: other rewards
    # even without the length term the texts TRL builds give other rewards than the model's own encoding
    free = RewardFunction(encoder_rm, dtype="float32", length_free=True)(prompts=posts, completions=comments)
    assert (rewards[:, 0] - torch.tensor(free)).abs().min() > 1e-3


def test_grpo_trains_two_steps_with_the_reward_function(encoder_rm, tmp_path):
    policy = tiny_policy(tmp_path / "policy")
    reward = RewardFunction(encoder_rm, dtype="float32")
    trainer = grpo_trainer(policy, reward, tmp_path / "out")
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "rewards/commentrank/mean" in entry]
    assert len(logs) == 2 and all(torch.isfinite(torch.tensor(e["rewards/commentrank/mean"])) for e in logs)
    assert all(e["rewards/commentrank/std"] > 0 for e in logs)
    assert "commentrank/completion_chars" in logs[0]
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, trainer.model.parameters()))


def test_grpo_script_trains_saves_safely_and_reports_before_and_after(encoder_rm, prepared_sample, tmp_path):
    policy, out = tiny_policy(tmp_path / "policy"), tmp_path / "grpo"
    argv = ["--model_name_or_path", policy, "--dataset_name", prepared_sample, "--reward_model", str(encoder_rm),
            "--output_dir", str(out), "--chat", "false", "--instruction", "{post}\n\n", "--max_train_samples", "8",
            "--report_posts", "4", "--report_max_new_tokens", "6", "--n_bootstrap", "50", "--use_cpu", "true",
            "--bf16", "false", "--activation_checkpointing", "false", "--per_device_train_batch_size", "4",
            "--num_generations", "2", "--max_completion_length", "6", "--max_steps", "2", "--learning_rate", "1e-2",
            "--save_strategy", "steps", "--save_steps", "1", "--report_to", "none",
            "--logging_steps", "1"]  # fmt: skip
    load_script("grpo").main(argv)
    report = json.loads((out / "policy_report.json").read_text())
    assert set(report["systems"]) == {"before", "after"} and report["n_posts"] == 4
    assert set(report["differences"]["after - before"]) == {"reward", "length_free_reward", "chars", "beats_best"}
    assert len(report["examples"]) == 3 and "real_best" in report["examples"][0]
    card = (out / "README.md").read_text()
    assert "GRPO" in card and "before - after" not in card and "after - before (paired)" in card
    assert (out / "training_args.json").is_file() and not list(out.rglob("training_args.bin"))
    assert (out / "checkpoint-2").is_dir() and json.loads((out / ".commentrank-output.json").read_text())["kind"]
    before, after = AutoModelForCausalLM.from_pretrained(policy), AutoModelForCausalLM.from_pretrained(out)
    assert any(not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters()))


@pytest.mark.parametrize("n_bootstrap", ["50", "0"])  # 0: no intervals, as in score.py (crashed after the work)
def test_best_of_n_keeps_the_comment_the_reward_model_ranks_first(encoder_rm, prepared_sample, tmp_path, n_bootstrap):
    policy, out = tiny_policy(tmp_path / "policy"), tmp_path / "bon"
    report = load_script("best_of_n").main(
        [
            "--model_name_or_path",
            policy,
            "--dataset_name",
            prepared_sample,
            "--reward_model",
            str(encoder_rm),
            "--output_dir",
            str(out),
            "--chat",
            "false",
            "--instruction",
            "{post}\n\n",
            "--n",
            "3",
            "--report_posts",
            "4",
            "--report_max_new_tokens",
            "6",
            "--n_bootstrap",
            n_bootstrap,
        ]  # fmt: skip
    )
    rows = read_jsonl(out / "generations.jsonl")
    assert len(rows) == 4 and all(len(r["comments"]) == 3 for r in rows)
    assert all(r["rewards"][r["kept"]] == max(r["rewards"]) for r in rows)
    gain = report["differences"]["best of 3 - one sample"]["reward"]
    assert gain["mean"] == pytest.approx(sum(max(r["rewards"]) - r["rewards"][0] for r in rows) / 4, abs=1e-5)
    assert (out / "best_of_n.md").read_text().count("| best of 3") == 2  # its row and its paired difference
    assert (gain["low"] < gain["mean"] < gain["high"]) if n_bootstrap != "0" else math.isnan(gain["low"])


def test_bench_policy_compares_policies_on_the_same_posts(encoder_rm, prepared_sample, tmp_path):
    a, b = tiny_policy(tmp_path / "a", seed=0), tiny_policy(tmp_path / "b", seed=1)
    bench = load_script("bench_policy", "benchmarks")
    report = bench.main(["--reward_model", str(encoder_rm), "--dataset_name", prepared_sample, "--policies",
                         f"a={a}", f"b={b}", "--chat", "false", "--instruction", "{post}\n\n", "--posts",
                         "3", "--max_new_tokens", "5", "--n_bootstrap", "50",
                         "--output", str(tmp_path / "p.md")])  # fmt: skip
    examples = report["examples"]
    assert [e["a"]["comment"] for e in examples] != [e["b"]["comment"] for e in examples]  # two different writers
    # each writer's comments scored on the same posts, b - a paired post by post
    expected = sum(e["b"]["reward"] - e["a"]["reward"] for e in examples) / len(examples)
    assert expected != 0 and report["differences"]["b - a"]["reward"]["mean"] == pytest.approx(expected)
    means = {name: report["systems"][name]["reward"]["mean"] for name in ("a", "b")}
    assert means["b"] - means["a"] == pytest.approx(expected)
    assert (tmp_path / "p.json").is_file() and "| b - a (paired) |" in (tmp_path / "p.md").read_text()


def test_pickle_weights_are_refused_by_the_policy_scripts_and_the_reward_function_unless_allowed(
    encoder_rm, prepared_sample, tmp_path
):
    rm = pickle_only(encoder_rm, AutoModelForSequenceClassification, tmp_path / "rm")
    with pytest.raises(ValueError, match=r"holds pickle weights \(pytorch_model.bin\)"):
        RewardFunction(rm)
    comments = dict(prompts=["Which hop gives citrus notes?"], completions=["Citra, mostly."])
    allowed = RewardFunction(rm, dtype="float32", allow_pickle=True)(**comments)
    assert allowed == pytest.approx(RewardFunction(encoder_rm, dtype="float32")(**comments))
    policy = pickle_only(tiny_policy(tmp_path / "policy"), AutoModelForCausalLM, tmp_path / "pickled-policy")
    common = ["--dataset_name", prepared_sample, "--chat", "false", "--report_posts", "2"]
    for script, extra in (("grpo", ["--use_cpu", "true", "--bf16", "false", "--report_to", "none"]),
                          ("best_of_n", [])):  # fmt: skip
        out = tmp_path / script
        for model, reward_model in ((policy, str(encoder_rm)), (tiny_policy(tmp_path / f"{script}-p"), rm)):
            argv = ["--model_name_or_path", model, "--reward_model", reward_model, "--output_dir", str(out), *common]
            with pytest.raises(SystemExit, match=rf"^{script}: error: .*holds pickle weights.*--allow_pickle_weights"):
                load_script(script).main(argv + extra)
            assert not out.exists()  # refused before any work
