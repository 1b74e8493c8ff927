"""The SFT -> reward -> score pipeline end to end on a tiny causal LM, each stage's output loaded by the next."""

import json
import math
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from commentrank.configs import PrepArguments
from commentrank.data.prepare import run_prepare

from conftest import ROOT, SAMPLE, load_script, single_final_upload

CPU_ARGS = ["--use_cpu", "true", "--bf16", "false", "--report_to", "none", "--dataloader_num_workers", "0",
            "--activation_checkpointing", "false", "--save_strategy", "no", "--max_length", "64"]  # fmt: skip


def gpt2_like_tokenizer(texts):
    """A byte-level BPE tokenizer trained here (no download): one special token, EOS = BOS, no pad, like GPT-2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    bpe.train_from_iterator(texts, trainer)
    special = "<|endoftext|>"
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=special, bos_token=special, unk_token=special)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline") / "data"
    run_prepare(PrepArguments(inputs=[str(SAMPLE)], output_dir=str(folder), skip_invalid=True, max_posts=30,
                           test_size=0.2, validation_size=0.2))  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def tiny_lm(data, tmp_path_factory):
    """A 2-block Llama built from a config, with a GPT-2-like tokenizer trained on the sample's texts."""
    import datasets
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = gpt2_like_tokenizer(list(datasets.load_from_disk(str(data / "sft"))["train"]["text"]))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-lm")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def pickle_only(folder, model_class, to):
    """A copy of a model folder whose weights are only a pickle (`pytorch_model.bin`, no safetensors)."""
    shutil.copytree(folder, to)
    (to / "model.safetensors").unlink()
    torch.save(model_class.from_pretrained(folder).state_dict(), to / "pytorch_model.bin")
    return str(to)


def sft_args(model, data, out, *extra):
    return ["--model_name_or_path", str(model), "--dataset_name", str(data), "--output_dir", str(out), *CPU_ARGS,
            "--per_device_train_batch_size", "4", "--max_train_samples", "8", "--logging_steps", "1",
            *extra]  # fmt: skip


def test_sft_full_fine_tuning_writes_a_causal_lm_with_card(tiny_lm, data, tmp_path):
    sft = load_script("sft")
    out = tmp_path / "sft"
    sft.main(sft_args(tiny_lm, data, out, "--learning_rate", "1e-2", "--eval_strategy", "epoch",
                      "--max_eval_samples", "4"))  # fmt: skip
    before, after = AutoModelForCausalLM.from_pretrained(tiny_lm), AutoModelForCausalLM.from_pretrained(out)
    assert any(not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters()))
    assert math.isfinite(json.loads((out / "eval_results.json").read_text())["eval_loss"])
    card = (out / "README.md").read_text()
    assert "full fine-tuning" in card and "scripts/reward.py" in card and "train_loss" in card


def test_sft_push_uploads_the_final_folder_once_without_checkpoints(tiny_lm, data, tmp_path, fake_hub):
    out = tmp_path / "sft"
    load_script("sft").main(sft_args(tiny_lm, data, out, "--max_steps", "2", "--save_strategy", "steps",
                                     "--save_steps", "1", "--push_to_hub", "true",
                                     "--hub_model_id", "me/sft"))  # fmt: skip
    assert (out / "checkpoint-1").is_dir() and (out / "training_args.json").is_file()
    assert not list(out.rglob("training_args.bin"))  # no pickle (it would hold the token), checkpoints included
    files = single_final_upload(fake_hub, "me/sft")
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json"} <= set(files)


def test_sft_without_the_view_is_a_clear_error(tiny_lm, data, tmp_path):
    sft = load_script("sft")
    with pytest.raises(SystemExit, match="no 'ranked' view"):
        sft.main(sft_args(tiny_lm, data, tmp_path / "x", "--dataset_config", "ranked"))
    with pytest.raises(SystemExit, match="no column 'body'"):
        sft.main(sft_args(tiny_lm, data, tmp_path / "x", "--dataset_text_field", "body"))


def test_sft_refuses_pickle_weights_unless_allowed(tiny_lm, data, tmp_path):
    model = pickle_only(tiny_lm, AutoModelForCausalLM, tmp_path / "pickled")
    sft = load_script("sft")
    with pytest.raises(SystemExit, match=r"^sft: error: .*holds pickle weights.*--allow_pickle_weights"):
        sft.main(sft_args(model, data, tmp_path / "refused", "--max_steps", "1"))
    assert not (tmp_path / "refused").exists()  # before any work
    sft.main(sft_args(model, data, tmp_path / "allowed", "--max_steps", "1", "--allow_pickle_weights", "true"))
    assert (tmp_path / "allowed" / "model.safetensors").is_file()  # what it writes is safetensors


def test_sft_lora_merged_then_reward_then_score(tiny_lm, data, tmp_path):
    sft, reward, score = load_script("sft"), load_script("reward"), load_script("score")

    # 1. SFT with LoRA, merged on save: a plain causal-LM folder, the adapter kept aside
    sft_out = tmp_path / "sft"
    sft.main(sft_args(tiny_lm, data, sft_out, "--learning_rate", "5e-2", "--use_peft", "true", "--lora_r", "4",
                      "--lora_target_modules", "all-linear", "--merge_lora", "true"))  # fmt: skip
    assert not (sft_out / "adapter_config.json").exists() and (sft_out / "adapter" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(sft_out)
    base = AutoModelForCausalLM.from_pretrained(tiny_lm)
    assert type(merged).__name__ == "LlamaForCausalLM"
    assert not torch.equal(
        merged.model.layers[0].self_attn.q_proj.weight, base.model.layers[0].self_attn.q_proj.weight
    )
    assert "lora-merged" in (sft_out / "README.md").read_text()

    # 2. reward model from the SFT folder: one-label classifier, new pad token so the reward is read at the EOS
    rm_out = tmp_path / "rm"
    reward.main(["--model_name_or_path", str(sft_out), "--dataset_name", str(data), "--output_dir", str(rm_out),
                 *CPU_ARGS, "--per_device_train_batch_size", "4", "--max_train_samples", "8", "--logging_steps", "1",
                 "--learning_rate", "1e-3", "--pad_at_eos", "false", "--freeze_fraction", "0.5",
                 "--ndcg_eval_posts", "3"])  # fmt: skip
    rm = AutoModelForSequenceClassification.from_pretrained(rm_out)
    tokenizer = AutoTokenizer.from_pretrained(rm_out)
    assert type(rm).__name__ == "LlamaForSequenceClassification" and rm.config.num_labels == 1
    assert tokenizer.pad_token_id != tokenizer.eos_token_id == rm.config.eos_token_id
    assert rm.config.pad_token_id == tokenizer.pad_token_id and len(tokenizer) == rm.config.vocab_size
    settings = json.loads((rm_out / "commentrank_config.json").read_text())
    assert settings["max_length"] == 64 and settings["pad_at_eos"] is False

    # 3. scoring the test posts with the reward model: predictions for every comment, NDCG and the baselines
    score_out = tmp_path / "scores"
    result = score.main(["--model", str(rm_out), "--dataset", str(data), "--output_dir", str(score_out),
                         "--split", "test", "--no_progress", "true"])  # fmt: skip
    predictions = [json.loads(line) for line in (score_out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == result["n_posts"] == 6
    assert all(sorted(c["score"] for c in p["comments"]) == list(range(len(p["comments"]))) for p in predictions)
    assert (score_out / "metrics.json").exists()
    assert 0 < result["results"]["model"]["ndcg@5"] <= 1 and {"random", "longest_first"} <= set(result["results"])


SFT_RECIPES = sorted((ROOT / "recipes").rglob("sft*.yaml"))


@pytest.mark.parametrize("recipe", SFT_RECIPES, ids=[str(r.relative_to(ROOT / "recipes")) for r in SFT_RECIPES])
def test_sft_recipe_parses(recipe):
    script_args, training_args, model_args = (
        load_script("sft").make_parser().parse_args_and_config(["--config", str(recipe)])
    )
    assert script_args.dataset_name and model_args.model_name_or_path and training_args.output_dir
    assert training_args.dataset_text_field == "text"
    assert not model_args.use_peft or script_args.merge_lora  # reward.py starts from a plain checkpoint
