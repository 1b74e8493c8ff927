import json

import pytest
import torch
from transformers import TrainerCallback

from commentrank.encoding import PairEncoder
from commentrank.modeling import freeze_lowest_layers, load_reward_model, load_tokenizer
from commentrank.score.inference import score_posts
from commentrank.train.pairwise import tokenize_pairs

from conftest import launch_reward_on_two_cpu_processes, load_script, single_final_upload

reward = load_script("reward")

CPU_ARGS = ["--use_cpu", "true", "--bf16", "false", "--report_to", "none", "--dataloader_num_workers", "0",
            "--activation_checkpointing", "false"]  # fmt: skip


def args_for(model, data, out, *extra):
    return ["--model_name_or_path", model, "--dataset_name", data, "--output_dir", str(out), *CPU_ARGS,
            "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8", "--max_length", "64",
            "--save_strategy", "no", "--logging_steps", "1", *extra]  # fmt: skip


def test_training_lowers_loss_changes_params_and_reloads(tiny_bert, prepared_sample, tmp_path):
    before = {n: p.clone() for n, p in load_reward_model(tiny_bert, load_tokenizer(tiny_bert)).named_parameters()}
    out = tmp_path / "rm"
    trainer = reward.main(args_for(tiny_bert, prepared_sample, out, "--max_train_samples", "16",
                                   "--num_train_epochs", "6", "--learning_rate", "3e-3",
                                   "--eval_strategy", "epoch"))  # fmt: skip
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 24 and sum(losses[-4:]) < sum(losses[:4])
    evals = [e for e in trainer.state.log_history if "eval_ndcg@5" in e]
    assert len(evals) >= 6 and all(0 < e["eval_ndcg@5"] <= 1 for e in evals)
    assert any("eval_accuracy" in e for e in trainer.state.log_history)  # TRL's own reward metrics still logged
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach().cpu(), before[n])]
    assert "classifier.weight" in changed and any("encoder.layer.0" in n for n in changed)

    for name in ("model.safetensors", "config.json", "tokenizer.json", "commentrank_config.json", "README.md",
                 "train_results.json", "data_summary.json"):  # fmt: skip
        assert (out / name).exists(), name
    posts = [{"prompt": "Is IPA bitter?", "comments": ["Yes, hops.", "No idea", "It depends on the hops used."]}]
    encoder = PairEncoder(trainer.processing_class, max_length=64)
    live, _ = score_posts(trainer.model, encoder, posts)
    tokenizer = load_tokenizer(str(out))
    reloaded, _ = score_posts(load_reward_model(str(out), tokenizer), PairEncoder(tokenizer, max_length=64), posts)
    assert reloaded[0] == pytest.approx(live[0], abs=1e-5)
    assert json.loads((out / "commentrank_config.json").read_text())["max_length"] == 64


def test_overlong_pairs_are_truncated_and_counted_not_dropped(tiny_bert, prepared_sample, tmp_path):
    import datasets

    tokenizer = load_tokenizer(tiny_bert)
    pairs = datasets.Dataset.from_list([
        {"prompt": "word " * 400, "chosen": "long answer " * 300, "rejected": "short", "margin": 1.0},
        {"prompt": "title", "chosen": "fine", "rejected": "also fine", "margin": 1.0},
    ])  # fmt: skip
    tokenized, counts = tokenize_pairs(pairs, PairEncoder(tokenizer, max_length=32, min_comment_tokens=8))
    assert counts == {"pairs": 2, "truncated_chosen": 1, "truncated_rejected": 1}
    assert all(len(ids) <= 32 for ids in list(tokenized["chosen_ids"]) + list(tokenized["rejected_ids"]))
    assert tokenized.column_names == ["chosen_ids", "rejected_ids"]  # margin only with --use_margin

    out = tmp_path / "rm"
    trainer = reward.main(args_for(tiny_bert, prepared_sample, out, "--max_steps", "2", "--max_length", "48"))
    summary = json.loads((out / "data_summary.json").read_text())["train"]
    assert summary["truncated_chosen"] > 0
    assert len(trainer.train_dataset) == summary["pairs"]  # TRL's max_length filter dropped nothing


class KillAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt("killed")


def test_killed_run_resumes_from_last_checkpoint(tiny_bert, prepared_sample, tmp_path, monkeypatch):
    out = tmp_path / "rm"
    argv = args_for(tiny_bert, prepared_sample, out, "--max_steps", "4", "--save_strategy", "steps", "--save_steps",
                    "2")  # fmt: skip
    original = reward.RankingEvalCallback
    monkeypatch.setattr(reward, "RankingEvalCallback", lambda *a, **k: _with_kill(original(*a, **k)))
    with pytest.raises(KeyboardInterrupt):
        reward.main(argv)
    assert (out / "checkpoint-2").is_dir() and not (out / "checkpoint-4").exists()
    monkeypatch.setattr(reward, "RankingEvalCallback", original)
    resumed_from = []
    train = reward.PairwiseRewardTrainer.train
    monkeypatch.setattr(reward.PairwiseRewardTrainer, "train",
                        lambda self, **kw: resumed_from.append(kw["resume_from_checkpoint"])
                        or train(self, **kw))  # fmt: skip
    trainer = reward.main(argv)
    assert resumed_from == [str(out / "checkpoint-2")]
    assert trainer.state.global_step == 4
    assert [e["step"] for e in trainer.state.log_history if "loss" in e] == [1, 2, 3, 4]


def test_weights_only_checkpoints_are_not_resumed_silently(tiny_bert, prepared_sample, tmp_path, monkeypatch, caplog):
    """save_only_model checkpoints hold no optimizer or schedule: resuming from one restarted the learning rate at its
    first value, silently. The rerun now says so and resumes only when asked, with a warning."""
    out = tmp_path / "rm"
    argv = args_for(tiny_bert, prepared_sample, out, "--max_steps", "4", "--save_strategy", "steps", "--save_steps",
                    "2", "--save_only_model", "true")  # fmt: skip
    original = reward.RankingEvalCallback
    monkeypatch.setattr(reward, "RankingEvalCallback", lambda *a, **k: _with_kill(original(*a, **k)))
    with pytest.raises(KeyboardInterrupt):
        reward.main(argv)
    monkeypatch.setattr(reward, "RankingEvalCallback", original)
    with pytest.raises(SystemExit, match="saved with save_only_model .* pass --resume_from_checkpoint .*checkpoint-2"):
        reward.main(argv)
    with caplog.at_level("WARNING", logger="commentrank.train.steps"):
        trainer = reward.main([*argv, "--resume_from_checkpoint", str(out / "checkpoint-2")])
    assert trainer.state.global_step == 4 and "holds no optimizer state (save_only_model)" in caplog.text


def _with_kill(callback):
    kill = KillAt(3)
    callback.on_step_end = kill.on_step_end
    return callback


def test_minilm_gets_an_eos_and_freezing_follows_cup_it():
    from commentrank.bundled_models import minilm_path

    tokenizer = load_tokenizer(minilm_path())
    assert tokenizer.eos_token == tokenizer.sep_token == "[SEP]" and tokenizer.pad_token == "[PAD]"
    model = load_reward_model(minilm_path(), tokenizer)
    assert freeze_lowest_layers(model, 0.3) == 2  # 6 - int(0.7 * 6)
    frozen = {n.split(".")[3] for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"0", "1"}


def test_overlong_text_is_cut_without_the_tokenizers_indexing_errors_warning():
    import logging

    from commentrank.bundled_models import minilm_path

    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger("transformers").addHandler(handler)  # the library's root logger: its modules log through it
    try:
        tokenizer = load_tokenizer(minilm_path())  # model_max_length 512
        encoded = PairEncoder(tokenizer, max_length=64).encode(["a post"], ["word " * 2000])
        tokenizer("word " * 2000)  # the warning comes once per tokenizer: it stays silenced after encode
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert len(encoded.input_ids[0]) == 64 and encoded.truncated == [True]
    assert not [m for m in messages if "indexing errors" in m]


def test_head_tail_keeps_the_comments_beginning_and_end_and_cuts_its_middle():
    from commentrank.bundled_models import minilm_path

    tokenizer = load_tokenizer(minilm_path())
    words = [f"w{i}" for i in range(300)]
    comment, short = " ".join(words), "a short answer"
    right = PairEncoder(tokenizer, max_length=64, min_comment_tokens=32)
    head_tail = PairEncoder(tokenizer, max_length=64, min_comment_tokens=32, truncation_side="head_tail")
    (ids, short_ids), (kept, short_kept) = (
        e.encode(["the post title"] * 2, [comment, short]).input_ids for e in (right, head_tail)
    )
    assert len(kept) == len(ids) == 64 and short_kept == short_ids  # only cut inputs change
    text = tokenizer.decode(kept, skip_special_tokens=True).replace(" ", "")
    assert text.startswith("theposttitle" + "".join(words[:5])) and text.endswith("".join(words[-5:]))
    assert kept[:34] == ids[:34] and kept[-1] == ids[-1] and kept[34:-1] != ids[34:-1]  # the same prompt and head


def test_multi_label_classifier_is_rejected(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                                             intermediate_size=8, num_labels=3)).save_pretrained(tmp_path)  # fmt: skip
    with pytest.raises(ValueError, match="3 labels"):
        load_reward_model(str(tmp_path))


@pytest.mark.slow
@pytest.mark.xdist_group("deepspeed")
@pytest.mark.parametrize("stage", [2, 3])
def test_accelerate_deepspeed_two_cpu_processes(stage, tiny_bert, prepared_sample, tmp_path):
    out = tmp_path / f"zero{stage}"
    state = launch_reward_on_two_cpu_processes(
        stage, args_for(tiny_bert, prepared_sample, out, "--max_steps", "3", "--per_device_train_batch_size", "2"), out
    )
    assert state["global_step"] == 3


@pytest.mark.parametrize("merge", [False, True])
def test_lora_trains_the_score_head_and_the_output_loads(merge, tiny_bert, prepared_sample, tmp_path):
    out = tmp_path / "lora"
    trainer = reward.main(args_for(tiny_bert, prepared_sample, out, "--max_steps", "3", "--learning_rate", "1e-2",
                                   "--use_peft", "true", "--lora_task_type", "SEQ_CLS", "--lora_r", "4",
                                   "--lora_target_modules", "query", "value",
                                   "--merge_lora", str(merge).lower()))  # fmt: skip
    if not merge:
        trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
        assert any("lora_" in n for n in trainable) and any("classifier" in n for n in trainable)
    assert (out / "adapter_config.json").exists() != merge
    tokenizer = load_tokenizer(str(out))
    model = load_reward_model(str(out), tokenizer)
    base = load_reward_model(tiny_bert, tokenizer)
    assert not torch.equal(model.classifier.weight, base.classifier.weight)  # the score head was trained and saved
    posts = [{"prompt": "q", "comments": ["first answer", "second, longer answer"]}]
    live, _ = score_posts(trainer.model, PairEncoder(tokenizer, max_length=64), posts)
    loaded, _ = score_posts(model, PairEncoder(tokenizer, max_length=64), posts)
    assert loaded[0] == pytest.approx(live[0], abs=1e-4)


def test_push_to_hub_uploads_the_final_model_once_with_the_ndcg_card(tiny_bert, prepared_sample, tmp_path, fake_hub):
    import yaml

    out = tmp_path / "rm"
    reward.main(args_for(tiny_bert, prepared_sample, out, "--max_steps", "2", "--save_strategy", "steps",
                         "--save_steps", "1", "--push_to_hub", "true", "--hub_model_id", "me/comment-rm"))  # fmt: skip
    files = single_final_upload(fake_hub, "me/comment-rm")
    assert {"README.md", "config.json", "model.safetensors", "commentrank_config.json", "tokenizer.json"} <= set(files)
    assert (out / "training_args.json").is_file() and "training_args.json" not in files  # local paths stay local
    meta = yaml.safe_load(files["README.md"].decode().split("---")[1])
    ndcg5 = json.loads((out / "eval_results.json").read_text())["eval_ndcg@5"]
    values = {m["name"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert values["NDCG@5"] == pytest.approx(ndcg5, abs=1e-4)
    assert "scored in float32" in files["README.md"].decode()  # the callback's precision, not score.py's default


def test_the_saved_weights_are_readable_as_every_other_file_of_the_model(tiny_bert, prepared_sample, tmp_path):
    """transformers writes model.safetensors owner-only (0600): others sharing the model folder could not load it."""
    import os

    out = tmp_path / "rm"
    reward.main(args_for(tiny_bert, prepared_sample, out, "--max_steps", "1", "--ndcg_eval_posts", "0"))
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir() if p.is_file() and not p.name.startswith(".")}
    mask = os.umask(0)
    os.umask(mask)
    assert modes["model.safetensors"] == modes["config.json"] == 0o666 & ~mask


def test_raw_ranked_file_is_converted_once_on_the_fly(tiny_bert, tmp_path):
    from commentrank.data import loading

    rows = [{"id": f"p{i}", "text": f"Question {i}?", "comments": [{"text": f"answer {i}.{j} " * (j + 1), "score": j}
                                                                   for j in range(3)]} for i in range(30)]  # fmt: skip
    raw = tmp_path / "ranked.jsonl"
    raw.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loading._convert.cache_clear()
    trainer = reward.main(args_for(tiny_bert, str(raw), tmp_path / "rm", "--max_steps", "2"))
    assert loading._convert.cache_info().misses == 1  # pairwise and listwise views from one conversion
    assert json.loads((tmp_path / "rm" / "data_summary.json").read_text())["train"]["pairs"] == 48  # 24 posts x 2
    assert any("eval_ndcg@5" in e for e in trainer.state.log_history)  # the validation posts were scored


@pytest.mark.parametrize(("fraction", "blocks", "frozen"), [(0.9, 10, 9), (0.8, 10, 8), (0.8, 40, 32), (0.3, 12, 4)])
def test_freeze_fraction_freezes_that_share_of_the_blocks_rounded_down(fraction, blocks, frozen):
    """(1 - 0.9) * 10 is 0.9999... in floating point: it must still leave one block trainable."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=blocks, num_attention_heads=2,
                        intermediate_size=8, num_labels=1)  # fmt: skip
    model = BertForSequenceClassification(config)
    assert freeze_lowest_layers(model, fraction) == frozen
    trainable = [i for i, layer in enumerate(model.bert.encoder.layer) if layer.output.dense.weight.requires_grad]
    assert trainable == list(range(frozen, blocks))


def test_freeze_embeddings_keeps_the_token_embeddings_and_trains_the_rest(tiny_bert, prepared_sample, tmp_path):
    before = {n: p.clone() for n, p in load_reward_model(tiny_bert, load_tokenizer(tiny_bert)).named_parameters()}
    trainer = reward.main(args_for(tiny_bert, prepared_sample, tmp_path / "rm", "--max_steps", "3", "--learning_rate",
                                   "1e-2", "--freeze_embeddings", "true", "--ndcg_eval_posts", "0"))  # fmt: skip
    after = dict(trainer.model.named_parameters())
    assert torch.equal(
        after["bert.embeddings.word_embeddings.weight"].detach(), before["bert.embeddings.word_embeddings.weight"]
    )
    assert not torch.equal(after["classifier.weight"].detach(), before["classifier.weight"])
    assert not torch.equal(after["bert.encoder.layer.0.attention.self.query.weight"].detach(),
                           before["bert.encoder.layer.0.attention.self.query.weight"])  # fmt: skip
