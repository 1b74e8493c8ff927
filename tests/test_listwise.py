import json
import math

import datasets
import pytest
import torch
from trl import RewardConfig

from commentrank.configs import ListwiseRewardConfig
from commentrank.encoding import PairEncoder
from commentrank.modeling import load_reward_model, load_tokenizer
from commentrank.score.inference import score_ids, score_posts
from commentrank.train.listwise import (
    DataCollatorForListwise,
    ListwiseRewardTrainer,
    cap_indices,
    prepare_listwise,
)
from commentrank.train.losses import listmle_loss, pairwise_all_loss

from conftest import ROOT, launch_reward_on_two_cpu_processes, load_script

reward = load_script("reward")


def args_for(model, data, out, *extra):
    return ["--model_name_or_path", model, "--dataset_name", data, "--output_dir", str(out), "--use_cpu", "true",
            "--bf16", "false", "--report_to", "none", "--dataloader_num_workers", "0",
            "--activation_checkpointing", "false",
            "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8", "--max_length", "64",
            "--save_strategy", "no", "--logging_steps", "1", *extra]  # fmt: skip


# --------------------------------------------------------------------------------------------------------------------
# Losses against a hand computation
# --------------------------------------------------------------------------------------------------------------------

# (rewards, ranks) of three posts with K = 3, 2, 4; the last one has a tie (two comments of rank 1)
POSTS = [([0.3, -1.2, 2.0], [1, 2, 0]), ([0.5, 0.1], [0, 1]), ([-0.4, 1.1, 0.7, 0.2], [2, 0, 1, 1])]


def flat(posts):
    rewards = torch.tensor([r for rs, _ in posts for r in rs], dtype=torch.float64)
    post_index = torch.tensor([i for i, (rs, _) in enumerate(posts) for _ in rs])
    ranks = torch.tensor([k for _, ks in posts for k in ks])
    return rewards, post_index, ranks


def naive_pairwise_all(posts, margin_scale=0.0):
    per_post = []
    for rewards, ranks in posts:
        losses = [
            -math.log(1 / (1 + math.exp(-(rewards[i] - rewards[j] - margin_scale * (ranks[j] - ranks[i])))))
            for i in range(len(ranks))
            for j in range(len(ranks))
            if ranks[i] < ranks[j]
        ]
        if losses:
            per_post.append(sum(losses) / len(losses))
    return sum(per_post) / len(per_post)


def naive_plackett_luce_nll(rewards, ranks):
    """-log P(order) under Plackett-Luce: pick the best, then the best of the rest, ... (strict order)."""
    order = sorted(range(len(ranks)), key=lambda i: ranks[i])
    nll = 0.0
    for pos, i in enumerate(order):
        rest = order[pos:]
        nll -= math.log(math.exp(rewards[i]) / sum(math.exp(rewards[j]) for j in rest))
    return nll


@pytest.mark.parametrize("margin_scale", [None, 0.5])
def test_pairwise_all_is_the_mean_over_posts_of_the_mean_over_pairs(margin_scale):
    loss = pairwise_all_loss(*flat(POSTS), margin_scale)
    assert loss.item() == pytest.approx(naive_pairwise_all(POSTS, margin_scale or 0.0), rel=1e-9)
    # each post weighs the same: a post repeated 10 times does not change the mean over posts
    assert pairwise_all_loss(*flat(POSTS[:1] * 10)).item() == pytest.approx(naive_pairwise_all(POSTS[:1]))
    # a post whose ranks are all tied has no pairs and is left out
    tied = [([1.0, 2.0], [0, 0])]
    assert pairwise_all_loss(*flat(POSTS + tied)).item() == pytest.approx(naive_pairwise_all(POSTS))


def test_listmle_is_the_plackett_luce_nll_of_the_observed_order():
    strict = [POSTS[0], POSTS[1], ([-0.4, 1.1, 0.7, 0.2, 3.0], [2, 0, 1, 4, 3])]
    expected = sum(naive_plackett_luce_nll(r, k) for r, k in strict) / len(strict)
    assert listmle_loss(*flat(strict)).item() == pytest.approx(expected, rel=1e-9)
    # the best comment ranked last by the model costs more than ranked first
    assert listmle_loss(*flat([([3.0, 0.0], [1, 0])])) > listmle_loss(*flat([([3.0, 0.0], [0, 1])]))
    # tied comments share their risk set: swapping their rewards changes nothing
    rewards, post_index, ranks = flat([POSTS[2]])
    swapped = rewards.clone()
    swapped[[2, 3]] = swapped[[3, 2]]
    assert listmle_loss(swapped, post_index, ranks).item() == pytest.approx(listmle_loss(rewards, post_index, ranks))


def test_losses_backpropagate_and_handle_a_batch_without_pairs():
    rewards, post_index, ranks = flat(POSTS)
    rewards.requires_grad_(True)
    for fn in (pairwise_all_loss, listmle_loss):
        (grad,) = torch.autograd.grad(fn(rewards, post_index, ranks), rewards)
        assert torch.isfinite(grad).all() and grad[2] < 0  # raising the best comment's reward lowers the loss
    lone = torch.tensor([0.7], requires_grad=True)
    for fn in (pairwise_all_loss, listmle_loss):
        loss = fn(lone, torch.tensor([0]), torch.tensor([0]))
        loss.backward()
        assert loss.item() == 0.0


# --------------------------------------------------------------------------------------------------------------------
# Data: prepare_listwise and the collator
# --------------------------------------------------------------------------------------------------------------------


def listwise_rows():
    return datasets.Dataset.from_list([
        {"post_id": "a", "prompt": "Best hops?", "comments": ["Citra", "Saaz is classic", "Mosaic"],
         "ranks": [2, 0, 1]},
        {"post_id": "b", "prompt": "word " * 200,
         "comments": [f"answer {i} " * (40 if i == 3 else 1) for i in range(8)],
         "ranks": [5, 0, 7, 1, 6, 2, 4, 3]},
        {"post_id": "c", "prompt": "Only one?", "comments": ["alone"], "ranks": [0]},
        {"post_id": "d", "prompt": "Two", "comments": ["x", "y z"], "ranks": [1, 0]},
    ])  # fmt: skip


def test_prepare_listwise_tokenizes_caps_and_counts(tiny_bert):
    tokenizer = load_tokenizer(tiny_bert)
    encoder = PairEncoder(tokenizer, max_length=32, min_comment_tokens=8)
    rows = listwise_rows()
    prepared, counts = prepare_listwise(rows, encoder, max_comments=5, seed=1)
    assert prepared.column_names == ["comment_ids", "ranks"]
    assert counts == {"posts": 3, "comments": 10, "pairs": 3 + 10 + 1, "truncated": 5, "capped_posts": 1,
                      "capped_comments": 3, "dropped": 1}  # fmt: skip
    post_b = prepared[1]
    keep = cap_indices(8, 5, "1:b")
    assert keep == sorted(keep) and len(set(keep)) == 5  # a seeded random subset, in the original order
    assert post_b["ranks"] == [rows[1]["ranks"][i] for i in keep]
    assert (
        post_b["comment_ids"]
        == encoder.encode([rows[1]["prompt"]] * 5, [rows[1]["comments"][i] for i in keep]).input_ids
    )
    assert all(len(ids) <= 32 for post in prepared["comment_ids"] for ids in post)
    assert prepare_listwise(rows, encoder, 5, seed=1)[0]["ranks"] == prepared["ranks"]  # the same in every run
    assert {tuple(cap_indices(8, 5, f"{s}:b")) for s in range(20)} != {tuple(keep)}  # the seed matters

    uncapped, counts = prepare_listwise(rows, encoder)
    assert counts["comments"] == 13 and counts["capped_comments"] == 0 and counts["pairs"] == 3 + 28 + 1
    with pytest.raises(ValueError, match="at least 2"):
        prepare_listwise(rows, encoder, max_comments=1)
    unlabeled = datasets.Dataset.from_list([{"post_id": "u", "prompt": "p", "comments": ["a", "b"], "ranks": None}])
    with pytest.raises(ValueError, match="post u is unlabeled"):
        prepare_listwise(unlabeled, encoder)
    with pytest.raises(ValueError, match="lacks the column"):
        prepare_listwise(rows.remove_columns("ranks"), encoder)


def test_collator_flattens_posts_with_variable_k():
    collator = DataCollatorForListwise(pad_token_id=0)
    batch = collator([
        {"comment_ids": [[5, 6, 7], [8]], "ranks": [1, 0]},
        {"comment_ids": [[9, 10], [11, 12, 13, 14], [15]], "ranks": [0, 2, 1]},
    ])  # fmt: skip
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0], [9, 10, 0, 0], [11, 12, 13, 14], [15, 0, 0, 0]]
    assert batch["attention_mask"].sum(1).tolist() == [3, 1, 2, 4, 1]
    assert batch["post_index"].tolist() == [0, 0, 1, 1, 1]
    assert batch["ranks"].tolist() == [1, 0, 0, 2, 1]
    assert DataCollatorForListwise(0, pad_to_multiple_of=8)([{"comment_ids": [[1], [2]], "ranks": [0, 1]}])[
        "input_ids"
    ].shape == (2, 8)


# --------------------------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------------------------


def config(tmp_path, **kwargs):
    defaults = dict(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                    logging_steps=1, per_device_train_batch_size=2, max_length=48, dataloader_num_workers=0,
                    activation_checkpointing=False)  # fmt: skip
    return (RewardConfig if kwargs.pop("plain", False) else ListwiseRewardConfig)(**{**defaults, **kwargs})


def make_trainer(tiny_bert, tmp_path, train, loss_type="pairwise_all", **kwargs):
    tokenizer = load_tokenizer(tiny_bert)
    model = load_reward_model(tiny_bert, tokenizer)
    trainer_kwargs = {k: kwargs.pop(k) for k in ("eval_dataset",) if k in kwargs}
    return ListwiseRewardTrainer(model=model, args=config(tmp_path, loss_type=loss_type, **kwargs),
                                 train_dataset=train, processing_class=tokenizer, **trainer_kwargs)  # fmt: skip


def test_each_comment_is_forwarded_once_per_epoch(tiny_bert, prepared_sample, tmp_path):
    train = datasets.load_from_disk(prepared_sample + "/listwise")["train"].select(range(10))
    trainer = make_trainer(tiny_bert, tmp_path, train, num_train_epochs=1, per_device_train_batch_size=3)
    assert set(trainer.train_dataset.column_names) == {"comment_ids", "ranks"}  # the raw view, tokenized here
    seen = []
    hook = trainer.model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["input_ids"]), with_kwargs=True)
    trainer.train()
    hook.remove()
    n_comments = sum(len(c) for c in train["comments"])
    assert len(seen) == math.ceil(10 / 3) and sum(x.shape[0] for x in seen) == n_comments
    real_tokens = sum(len(ids) for post in trainer.train_dataset["comment_ids"] for ids in post)
    assert trainer.state.log_history[-2]["num_tokens"] == real_tokens  # TRL's count of non-pad tokens


def test_batch_rewards_match_comment_by_comment_scoring(tiny_bert, tmp_path):
    """Padding and post boundaries: the loss of a flattened batch equals the loss of rewards scored one by one."""
    tokenizer = load_tokenizer(tiny_bert)
    encoder = PairEncoder(tokenizer, max_length=40, min_comment_tokens=8)
    prepared, _ = prepare_listwise(listwise_rows(), encoder)
    for loss_type, use_margin in (("pairwise_all", False), ("pairwise_all", True), ("listmle", False)):
        trainer = make_trainer(tiny_bert, tmp_path, prepared, loss_type, use_margin=use_margin)
        trainer.model.eval()
        batch = trainer.data_collator([prepared[i] for i in range(len(prepared))])
        loss, outputs = trainer.compute_loss(trainer.model, dict(batch), return_outputs=True)
        flat_ids = [ids for post in prepared["comment_ids"] for ids in post]
        alone = score_ids(trainer.model, flat_ids, 0, batch_size=1, segment_sep_id=encoder.segment_sep_id)
        assert "token_type_ids" in batch  # the same segment ids as scoring
        assert outputs.logits.squeeze(-1).tolist() == pytest.approx(alone, abs=1e-5)
        posts = [(alone[0:3], prepared["ranks"][0]), (alone[3:11], prepared["ranks"][1]), (alone[11:], [1, 0])]
        if loss_type == "pairwise_all":
            expected = naive_pairwise_all(posts, 1.0 if use_margin else 0.0)
        else:
            expected = sum(naive_plackett_luce_nll(r, k) for r, k in posts) / 3
        assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_center_rewards_centers_the_models_own_reward_not_the_length_term(tiny_bert, tmp_path):
    """With a length term, `center_rewards_coefficient` penalizes the model's own reward: centering the sum would push
    the model to cancel the term (own -> -w * log1p(characters))."""
    tokenizer = load_tokenizer(tiny_bert)
    prepared, _ = prepare_listwise(listwise_rows(), PairEncoder(tokenizer, max_length=40), with_lengths=True)
    options = dict(length_feature="additive", length_init="zero", length_learning_rate=0.1)
    plain = make_trainer(tiny_bert, tmp_path, prepared, "listmle", **options)
    centered = make_trainer(tiny_bert, tmp_path, prepared, "listmle", center_rewards_coefficient=0.5, **options)
    for trainer in (plain, centered):
        trainer.model.eval()
        with torch.no_grad():
            trainer.length_weight.fill_(0.7)
    batch = plain.data_collator([prepared[i] for i in range(3)])
    base, outputs = plain.compute_loss(plain.model, dict(batch), return_outputs=True)
    own = outputs.logits.squeeze(-1) if outputs.logits.dim() > 1 else outputs.logits
    total = centered.compute_loss(centered.model, dict(batch))
    assert total.item() == pytest.approx(base.item() + 0.5 * own.pow(2).mean().item(), rel=1e-5)


def test_center_rewards_and_options(tiny_bert, tmp_path):
    tokenizer = load_tokenizer(tiny_bert)
    prepared, _ = prepare_listwise(listwise_rows(), PairEncoder(tokenizer, max_length=40))
    plain = make_trainer(tiny_bert, tmp_path, prepared, "listmle")
    centered = make_trainer(tiny_bert, tmp_path, prepared, "listmle", center_rewards_coefficient=0.5)
    batch = plain.data_collator([prepared[i] for i in range(3)])
    for trainer in (plain, centered):
        trainer.model.eval()
    base, outputs = plain.compute_loss(plain.model, dict(batch), return_outputs=True)
    total = centered.compute_loss(centered.model, dict(batch))
    assert total.item() == pytest.approx(base.item() + 0.5 * outputs.logits.pow(2).mean().item(), rel=1e-5)
    margin = make_trainer(tiny_bert, tmp_path, prepared, use_margin=True)
    assert margin.args.margin_scale == 1.0
    with pytest.raises(ValueError, match="loss_type 'softmax' is not one of"):
        make_trainer(tiny_bert, tmp_path, prepared, "softmax")
    with pytest.raises(ValueError, match="PairwiseRewardTrainer"):
        make_trainer(tiny_bert, tmp_path, prepared, "pairwise")
    with pytest.raises(TypeError, match="ListwiseRewardConfig"):
        ListwiseRewardTrainer(model=margin.model, args=config(tmp_path, plain=True), train_dataset=prepared)
    with pytest.raises(ValueError, match="pairwise and pairwise_all"):
        make_trainer(tiny_bert, tmp_path, prepared, "listmle", use_margin=True)
    with pytest.raises(ValueError, match="needs a listwise dataset"):
        make_trainer(
            tiny_bert, tmp_path, datasets.Dataset.from_list([{"prompt": "p", "chosen": "a", "rejected": "b"}])
        )


def assert_accumulation_matches_the_full_batch(make, tiny_bert, tmp_path, prepared):
    """One SGD step on 4 posts as batch 4, 2 x 2 and 1 x 4 (`make(folder, **args)` builds the trainer): the same
    loss and the same parameters, which moved."""
    updated, losses = [], []
    for batch_size, steps in ((4, 1), (2, 2), (1, 4)):
        trainer = make(tmp_path / str(batch_size), optim="sgd", learning_rate=1.0, max_steps=1,
                       per_device_train_batch_size=batch_size, gradient_accumulation_steps=steps,
                       lr_scheduler_type="constant", max_grad_norm=0)  # fmt: skip
        trainer.train()
        updated.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})
        losses.append(trainer.state.log_history[0]["loss"])
    assert losses == pytest.approx([losses[0]] * 3, rel=1e-5)
    before = dict(load_reward_model(tiny_bert, load_tokenizer(tiny_bert)).named_parameters())
    for other in updated[1:]:
        for name, value in updated[0].items():
            assert torch.allclose(value, other[name], atol=1e-6), name
    assert not torch.equal(updated[0]["classifier.weight"], before["classifier.weight"])


def test_gradient_accumulation_matches_the_full_batch(tiny_bert, tmp_path):
    tokenizer = load_tokenizer(tiny_bert)
    prepared, _ = prepare_listwise(listwise_rows(), PairEncoder(tokenizer, max_length=40))
    prepared = datasets.concatenate_datasets([prepared, prepared.select([0])])  # 4 posts, K = 3, 8, 2, 3
    assert_accumulation_matches_the_full_batch(
        lambda folder, **args: make_trainer(tiny_bert, folder, prepared, "pairwise_all", **args),
        tiny_bert,
        tmp_path,
        prepared,
    )


# --------------------------------------------------------------------------------------------------------------------
# Through scripts/reward.py
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("loss_type", "relevance"), [("listmle", "ranks"), ("lambdaloss", "votes")])
def test_reward_script_trains_a_listwise_loss_and_logs_ndcg(
    loss_type, relevance, tiny_bert, prepared_sample, tmp_path
):
    before = {n: p.clone() for n, p in load_reward_model(tiny_bert, load_tokenizer(tiny_bert)).named_parameters()}
    out = tmp_path / "rm"
    # one batch of 8 posts seen 8 times: the loss of the same batch must go down
    trainer = reward.main(args_for(tiny_bert, prepared_sample, out, "--loss_type", loss_type, "--relevance", relevance,
                                   "--max_train_samples", "8", "--per_device_train_batch_size", "8",
                                   "--num_train_epochs", "8", "--learning_rate", "3e-3", "--eval_strategy", "epoch",
                                   "--warmup_steps", "0"))  # fmt: skip
    assert isinstance(trainer, ListwiseRewardTrainer) and (trainer.args.loss_type, trainer.args.relevance) == (
        loss_type,
        relevance,
    )
    assert ("relevance" in trainer.train_dataset.column_names) == (relevance == "votes")
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 8 and losses[-1] < losses[0]
    for key in ("accuracy", "margin", "min_reward", "mean_reward", "max_reward", "num_tokens"):
        assert any(key in e for e in trainer.state.log_history), key
    evals = [e for e in trainer.state.log_history if "eval_ndcg@5" in e]
    assert len(evals) >= 8 and all(0 < e["eval_ndcg@5"] <= 1 for e in evals)
    assert any("eval_loss" in e and "eval_accuracy" in e for e in trainer.state.log_history)
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach().cpu(), before[n])]
    assert "classifier.weight" in changed and any("encoder.layer.0" in n for n in changed)
    summary = json.loads((out / "data_summary.json").read_text())
    assert summary["train"]["posts"] == 8 and summary["train"]["dropped"] == 0
    tokenizer = load_tokenizer(str(out))
    rewards, _ = score_posts(load_reward_model(str(out), tokenizer), PairEncoder(tokenizer, max_length=64),
                             [{"prompt": "q", "comments": ["a", "b c"]}])  # fmt: skip
    assert rewards[0] == pytest.approx(score_posts(trainer.model, PairEncoder(tokenizer, max_length=64),
                                                   [{"prompt": "q", "comments": ["a", "b c"]}])[0][0],
                                       abs=1e-5)  # fmt: skip


def test_reward_script_lora_trains_and_saves_the_score_head(tiny_bert, prepared_sample, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "lora"
    trainer = reward.main(args_for(tiny_bert, prepared_sample, out, "--loss_type", "pairwise_all", "--use_margin",
                                   "true", "--max_steps", "3", "--learning_rate", "1e-2", "--use_peft", "true",
                                   "--lora_task_type", "SEQ_CLS", "--lora_r", "4",
                                   "--max_comments_per_post", "4"))  # fmt: skip
    assert trainer.args.margin_scale == 1.0
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("classifier" in n for n in trainable)
    assert not any("encoder.layer.0.attention.self.query.base_layer" in n for n in trainable)
    saved = load_file(out / "adapter_model.safetensors")
    assert any("classifier" in k for k in saved) and any("lora_B" in k for k in saved)
    assert any(not torch.all(v == 0) for k, v in saved.items() if "lora_B" in k)  # the adapter moved
    assert json.loads((out / "data_summary.json").read_text())["train"]["capped_comments"] > 0


@pytest.mark.slow
@pytest.mark.xdist_group("deepspeed")
@pytest.mark.parametrize(("stage", "loss_type"), [(2, "listmle"), (3, "pairwise_all")])
def test_accelerate_deepspeed_two_cpu_processes(stage, loss_type, tiny_bert, prepared_sample, tmp_path):
    out = tmp_path / f"zero{stage}"
    length = ["--length_feature", "additive"] if loss_type == "listmle" else []  # the recipes' fitted, fixed weight
    argv = args_for(tiny_bert, prepared_sample, out, "--loss_type", loss_type, "--max_steps", "3",
                    "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2",
                    "--eval_strategy", "steps", "--eval_steps", "3", *length)  # fmt: skip
    state = launch_reward_on_two_cpu_processes(stage, argv, out)
    assert state["global_step"] == 3
    logged = {k for e in state["log_history"] for k in e}
    assert {"loss", "accuracy", "num_tokens", "eval_loss", "eval_accuracy", "eval_ndcg@5"} <= logged
    if length:  # fitted before the first step, kept, saved for every scorer
        weights = {e["length_weight"] for e in state["log_history"] if "length_weight" in e}
        saved = json.loads((out / "commentrank_config.json").read_text())["length_weight"]
        assert len(weights) == 1 and saved == pytest.approx(weights.pop(), rel=1e-3) and saved != 0


def test_quickstart_recipe_trains_listwise(tiny_bert, prepared_sample, tmp_path):
    recipe = ROOT / "recipes" / "quickstart" / "reward.yaml"
    trainer = reward.main(["--config", str(recipe), "--model_name_or_path", tiny_bert, "--dataset_name",
                           prepared_sample, "--output_dir", str(tmp_path / "rm"), "--max_steps", "3",
                           "--max_length", "64", "--logging_steps", "1", "--dataloader_num_workers", "0"])  # fmt: skip
    import yaml

    values = yaml.safe_load(recipe.read_text())
    assert isinstance(trainer, ListwiseRewardTrainer) and trainer.args.loss_type == values["loss_type"]
    assert trainer.args.per_device_train_batch_size == values["per_device_train_batch_size"]
    assert trainer.args.length_feature == values["length_feature"] and trainer.args.bf16 == values["bf16"]
    assert trainer.state.global_step == 3
    assert any("eval_ndcg@5" in e for e in trainer.state.log_history)  # scored on the validation posts at the end


def test_training_does_not_import_the_scoring_package():
    """Batched inference is shared through commentrank.inference: the trainers and the NDCG callback load no
    commentrank.score module (and commentrank.score.inference still offers the same functions)."""
    import subprocess
    import sys

    code = ("import sys, commentrank.train.listwise, commentrank.train.callbacks, commentrank.train.steps\n"
            "print(sorted(m for m in sys.modules if m.startswith('commentrank.score')))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    from commentrank import inference
    from commentrank.score import inference as compatible

    assert compatible.score_posts is inference.score_posts and compatible.pad is inference.pad
