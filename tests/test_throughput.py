"""Throughput levers of the listwise trainer: length-sorted forward passes and token-budget post batches."""

import datasets
import pytest
import torch
from test_listwise import args_for, make_trainer

from commentrank.encoding import PairEncoder
from commentrank.modeling import find_layers, load_reward_model, load_tokenizer
from commentrank.train.listwise import (
    TokenBudgetBatchSampler,
    forward_groups,
    padded_cells,
    prepare_listwise,
    token_budget_batches,
)

from conftest import load_script

reward = load_script("reward")


@pytest.fixture(scope="module")
def sample_lengths(tiny_bert, prepared_sample):
    """The comment lengths in tokens of each training post of the shipped sample."""
    encoder = PairEncoder(load_tokenizer(tiny_bert), max_length=256, min_comment_tokens=16)  # lengths vary
    prepared, _ = prepare_listwise(datasets.load_from_disk(prepared_sample + "/listwise")["train"], encoder)
    return [[len(ids) for ids in post] for post in prepared["comment_ids"]]


def test_forward_groups_cover_each_row_once_with_fewer_padded_cells(sample_lengths):
    lengths = [n for post in sample_lengths[:6] for n in post]
    groups = forward_groups(lengths, cost_per_forward=16)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert all(lengths[g[0]] == max(lengths[i] for i in g) for g in groups)  # each padded to its own longest
    cells = sum(len(g) * lengths[g[0]] for g in groups)
    assert cells + 16 * len(groups) <= padded_cells(lengths) + 16 and len(groups) > 1


def test_token_budget_batches_hold_every_post_once_within_the_budget(sample_lengths):
    batches = token_budget_batches(sample_lengths, budget=1500, seed=0)
    assert sorted(p for b in batches for p in b) == list(range(len(sample_lengths)))
    assert all(len(b) == 1 or padded_cells([n for p in b for n in sample_lengths[p]]) <= 1500 for b in batches)
    assert any(len(b) > 1 for b in batches)


def test_sampler_yields_every_post_once_per_epoch_in_a_new_order(sample_lengths):
    sampler = TokenBudgetBatchSampler(sample_lengths, budget=1500, seed=0)
    epochs = [list(sampler), list(sampler)]
    for epoch in epochs:
        assert len(epoch) == len(sampler) and sorted(p for b in epoch for p in b) == list(range(len(sample_lengths)))
    assert epochs[0] != epochs[1]


def test_sorted_batches_pad_less_than_fixed_post_batches(sample_lengths):
    fixed = [sample_lengths[i : i + 2] for i in range(0, len(sample_lengths), 2)]
    fixed_cells = sum(padded_cells([n for post in batch for n in post]) for batch in fixed)
    budget = [[sample_lengths[p] for p in b] for b in token_budget_batches(sample_lengths, 1500, seed=0)]
    sorted_cells = 0
    for batch in budget:
        lengths = [n for post in batch for n in post]
        sorted_cells += sum(len(g) * lengths[g[0]] for g in forward_groups(lengths))
    assert sorted_cells < fixed_cells


def test_length_sorted_forward_gives_the_same_loss_and_gradient(tiny_bert, prepared_sample, tmp_path):
    train = datasets.load_from_disk(prepared_sample + "/listwise")["train"].select(range(4))
    results = []
    for sorted_forward in (False, True):
        torch.manual_seed(0)
        trainer = make_trainer(tiny_bert, tmp_path, train, "listmle")
        trainer.args.length_sorted_forward = sorted_forward
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
        loss, outputs = trainer.compute_loss(trainer.model, dict(batch), return_outputs=True)
        loss.backward()
        grad = trainer.model.classifier.weight.grad.clone()
        results.append((loss.item(), outputs.logits.squeeze(-1), grad))
    assert results[1][0] == pytest.approx(results[0][0], abs=1e-5)
    assert torch.allclose(results[1][1], results[0][1], atol=1e-5)
    assert torch.allclose(results[1][2], results[0][2], atol=1e-5)


def test_training_with_both_levers_changes_parameters_and_logs_the_loss(tiny_bert, prepared_sample, tmp_path):
    before = {n: p.clone() for n, p in load_reward_model(tiny_bert, load_tokenizer(tiny_bert)).named_parameters()}
    trainer = reward.main(args_for(tiny_bert, prepared_sample, tmp_path / "rm", "--loss_type", "listmle",
                                   "--max_train_samples", "12", "--learning_rate", "1e-2", "--batch_token_budget",
                                   "600", "--num_train_epochs", "1", "--length_sorted_forward", "true",
                                   "--ndcg_eval_posts", "0"))  # fmt: skip
    lengths = [[len(ids) for ids in post] for post in trainer.train_dataset["comment_ids"]]
    batches = token_budget_batches(lengths, 600, seed=42)
    assert trainer.state.global_step == len(batches) < 12  # one step per batch, several posts in some
    assert any("loss" in e for e in trainer.state.log_history)
    after = dict(trainer.model.named_parameters())
    assert not torch.equal(after["classifier.weight"].detach(), before["classifier.weight"])


def test_levers_need_a_listwise_loss(tiny_bert, prepared_sample, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:  # a usage error: one line, exit code 2
        reward.main(args_for(tiny_bert, prepared_sample, tmp_path / "rm", "--loss_type", "pairwise",
                             "--batch_token_budget", "300"))  # fmt: skip
    assert stop.value.code == 2
    assert "need a listwise loss_type" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------------------
# Freezing: the whole embeddings block, so that backward stops at the lowest trainable block
# --------------------------------------------------------------------------------------------------------------------


def test_freeze_embeddings_freezes_everything_below_the_first_block(tiny_bert):
    model = load_reward_model(tiny_bert, load_tokenizer(tiny_bert), freeze_embeddings=True)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters() if n.startswith("bert.embeddings.")}
    assert {"bert.embeddings.position_embeddings.weight", "bert.embeddings.LayerNorm.weight"} <= frozen


def _first_trainable_block_input(tiny_bert, prepared_sample, **freeze):
    """The hidden states that enter the second (lowest trainable) block in one training forward, and the names of
    the parameters that got a gradient from the loss."""
    tokenizer = load_tokenizer(tiny_bert)
    model = load_reward_model(tiny_bert, tokenizer, freeze_fraction=0.5, **freeze)  # 1 of 2 blocks frozen
    model.train()
    seen = []
    find_layers(model)[1].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    post = datasets.load_from_disk(prepared_sample + "/listwise")["train"][0]
    batch = tokenizer(
        [post["prompt"]] * 2, post["comments"][:2], return_tensors="pt", padding=True, truncation=True, max_length=64
    )
    model(**batch).logits.sum().backward()
    return seen[0], {n for n, p in model.named_parameters() if p.grad is not None}


def test_backward_stops_at_the_lowest_trainable_block(tiny_bert, prepared_sample):
    hidden, with_grad = _first_trainable_block_input(tiny_bert, prepared_sample, freeze_embeddings=True)
    assert not hidden.requires_grad  # no graph below the trainable blocks: the frozen block runs forward only
    assert with_grad and all(n.startswith(("bert.encoder.layer.1.", "bert.pooler.", "classifier.")) for n in with_grad)


def test_freezing_blocks_alone_still_runs_backward_through_them(tiny_bert, prepared_sample):
    hidden, with_grad = _first_trainable_block_input(tiny_bert, prepared_sample)  # trainable embeddings below
    assert hidden.requires_grad
    assert "bert.embeddings.position_embeddings.weight" in with_grad


def test_training_with_frozen_embeddings_and_blocks_trains_the_rest(tiny_bert, prepared_sample, tmp_path):
    before = {n: p.clone() for n, p in load_reward_model(tiny_bert, load_tokenizer(tiny_bert)).named_parameters()}
    trainer = reward.main(args_for(tiny_bert, prepared_sample, tmp_path / "rm", "--loss_type", "listmle",
                                   "--max_steps", "3", "--learning_rate", "1e-2", "--freeze_embeddings", "true",
                                   "--freeze_fraction", "0.5", "--length_sorted_forward", "true",
                                   "--ndcg_eval_posts", "0"))  # fmt: skip
    after = {n: p.detach() for n, p in trainer.model.named_parameters()}
    changed = {n for n in before if not torch.equal(after[n], before[n])}
    assert not any(n.startswith(("bert.embeddings.", "bert.encoder.layer.0.")) for n in changed)
    assert {"classifier.weight", "bert.encoder.layer.1.attention.self.query.weight"} <= changed
    assert any("loss" in e for e in trainer.state.log_history)
