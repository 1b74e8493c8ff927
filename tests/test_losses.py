"""The NDCG-aware listwise losses (plistmle, listnet, lambdaloss) against per-post loops written from their formulas,
their gradients, the graded relevance from votes through the trainer, and training with them through
scripts/reward.py."""

import math
import random

import datasets
import pytest
import torch
from test_listwise import assert_accumulation_matches_the_full_batch

from commentrank.configs import ListwiseRewardConfig
from commentrank.encoding import PairEncoder
from commentrank.metrics import relevance_from_ranks as ndcg_relevance
from commentrank.modeling import load_reward_model, load_tokenizer
from commentrank.train.listwise import (
    DataCollatorForListwise,
    ListwiseRewardTrainer,
    cap_indices,
    prepare_listwise,
    relevance_from_votes,
)
from commentrank.train.losses import (
    lambdaloss_loss,
    listnet_loss,
    pairwise_all_loss,
    plistmle_loss,
    relevance_from_ranks,
)

from conftest import load_script

reward = load_script("reward")

NEW_LOSSES = {"plistmle": plistmle_loss, "listnet": listnet_loss, "lambdaloss": lambdaloss_loss}
GRADED = {"listnet": listnet_loss, "lambdaloss": lambdaloss_loss}


# --------------------------------------------------------------------------------------------------------------------
# Random posts and the per-post references
# --------------------------------------------------------------------------------------------------------------------


def random_posts(seed=0, sizes=(1, 2, 3, 5, 8, 4)):
    """Posts of different sizes as dicts of `rewards`, `ranks` (gaps and ties, as after capping) and `votes` (ties);
    one more post has all its ranks and votes tied (nothing to learn)."""
    rng = random.Random(seed)
    posts = []
    for n in sizes:
        ranks = rng.choices(range(n + 2), k=n)
        if n > 1 and len(set(ranks)) == 1:
            ranks[0] += 1
        votes = rng.choices([0, 1, 1, 3, 10, 50], k=n)
        if n > 1 and len(set(votes)) == 1:
            votes[0] += 2
        posts.append({"rewards": [rng.gauss(0, 1.5) for _ in range(n)], "ranks": ranks, "votes": votes})
    posts.append({"rewards": [rng.gauss(0, 1.5) for _ in range(3)], "ranks": [1, 1, 1], "votes": [4, 4, 4]})
    return posts


def gains_of(post, relevance):
    if relevance == "votes":
        return relevance_from_votes(post["votes"])
    return list(ndcg_relevance(post["ranks"]))  # the project's NDCG relevance, n - 1 - rank


def flat(posts, relevance=None, requires_grad=False):
    rewards = torch.tensor([r for p in posts for r in p["rewards"]], dtype=torch.float64, requires_grad=requires_grad)
    post_index = torch.tensor([i for i, p in enumerate(posts) for _ in p["rewards"]])
    ranks = torch.tensor([k for p in posts for k in p["ranks"]])
    out = {"rewards": rewards, "post_index": post_index, "ranks": ranks}
    if relevance == "votes":
        out["relevance"] = torch.tensor([g for p in posts for g in gains_of(p, "votes")], dtype=torch.float64)
    return out


def mean(values):
    return sum(values) / len(values)


def naive_plistmle(posts):
    """sum_i a(i) [log sum_{rank_j >= rank_i} exp(r_j) - r_i] / sum_i a(i), a(i) = 2^(n - i) - 1, i the 1-based
    position of comment i (of its tie block's first comment: 1 + the comments ranked strictly better)."""
    per_post = []
    for post in posts:
        r, k, n = post["rewards"], post["ranks"], len(post["ranks"])
        if len(set(k)) < 2:
            continue
        a = [2.0 ** (n - (1 + sum(kj < ki for kj in k))) - 1 for ki in k]
        terms = [math.log(sum(math.exp(r[j]) for j in range(n) if k[j] >= k[i])) - r[i] for i in range(n)]
        per_post.append(sum(w * t for w, t in zip(a, terms)) / sum(a))
    return mean(per_post)


def naive_listnet(posts, relevance):
    """-sum_i softmax(g)_i log softmax(r)_i per post."""
    per_post = []
    for post in posts:
        g, r = gains_of(post, relevance), post["rewards"]
        if len(set(g)) < 2:
            continue
        zg, zr = sum(math.exp(x) for x in g), sum(math.exp(x) for x in r)
        per_post.append(-sum(math.exp(gi) / zg * math.log(math.exp(ri) / zr) for gi, ri in zip(g, r)))
    return mean(per_post)


def naive_lambdaloss(posts, relevance, mu=5.0):
    """NDCG-Loss2++: -sum_{g_i > g_j} log2(sigmoid(r_i - r_j)) (rho_ij + mu delta_ij) |G_i - G_j| per post, positions
    from sorting the post by its rewards, G = g / maxDCG (linear gain), D_k = log2(1 + k)."""

    def inv_d(k):
        return 1 / math.log2(1 + k)

    per_post = []
    for post in posts:
        g, r, n = gains_of(post, relevance), post["rewards"], len(post["rewards"])
        position = {i: p for p, i in enumerate(sorted(range(n), key=lambda i: -r[i]), start=1)}
        max_dcg = sum(gain * inv_d(p) for p, gain in enumerate(sorted(g, reverse=True), start=1))
        total, n_pairs = 0.0, 0
        for i in range(n):
            for j in range(n):
                if g[i] > g[j]:
                    pi, pj = position[i], position[j]
                    rho = abs(inv_d(pi) - inv_d(pj))
                    delta = abs(inv_d(abs(pi - pj)) - inv_d(abs(pi - pj) + 1))
                    weight = (rho + mu * delta) * abs(g[i] - g[j]) / max_dcg
                    total -= weight * math.log2(1 / (1 + math.exp(-(r[i] - r[j]))))
                    n_pairs += 1
        if n_pairs:
            per_post.append(total)
    return mean(per_post)


# --------------------------------------------------------------------------------------------------------------------
# The losses against the references
# --------------------------------------------------------------------------------------------------------------------


def test_relevance_from_ranks_is_the_projects_ndcg_relevance():
    posts = random_posts(3)
    batch = flat(posts)
    expected = [g for p in posts for g in ndcg_relevance(p["ranks"])]
    assert relevance_from_ranks(batch["post_index"], batch["ranks"]).tolist() == expected


def test_relevance_from_votes_is_log1p_of_the_votes_above_the_least_voted():
    assert relevance_from_votes([1, 12, 4]) == pytest.approx([0.0, math.log1p(11), math.log1p(3)])
    assert relevance_from_votes([-3, -3, 5]) == pytest.approx([0.0, 0.0, math.log1p(8)])  # equal votes, equal gain


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plistmle_matches_a_per_post_loop(seed):
    posts = random_posts(seed)
    batch = flat(posts)
    loss = plistmle_loss(batch["rewards"], batch["post_index"], batch["ranks"])
    assert torch.allclose(loss, torch.tensor(naive_plistmle(posts), dtype=torch.float64))


@pytest.mark.parametrize("relevance", ["ranks", "votes"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("loss_type", ["listnet", "lambdaloss"])
def test_graded_losses_match_a_per_post_loop(loss_type, seed, relevance):
    posts = random_posts(seed)
    batch = flat(posts, relevance)
    loss_fn, naive = {"listnet": (listnet_loss, naive_listnet), "lambdaloss": (lambdaloss_loss, naive_lambdaloss)}[
        loss_type
    ]
    loss = loss_fn(batch["rewards"], batch["post_index"], batch["ranks"], batch.get("relevance"))
    assert torch.allclose(loss, torch.tensor(naive(posts, relevance), dtype=torch.float64))


@pytest.mark.parametrize("name", list(NEW_LOSSES))
def test_a_mistake_at_the_top_costs_more_than_the_same_mistake_at_the_bottom(name):
    """What makes them NDCG-aware: pairwise_all charges both swaps the same, these losses do not."""
    ranks = [0, 1, 2, 3, 4]
    top = {"rewards": [3.0, 4.0, 2.0, 1.0, 0.0], "ranks": ranks}
    bottom = {"rewards": [4.0, 3.0, 2.0, 0.0, 1.0], "ranks": ranks}
    loss_top, loss_bottom = (NEW_LOSSES[name](*flat([p]).values()) for p in (top, bottom))
    assert loss_top > loss_bottom
    assert pairwise_all_loss(*flat([top]).values()).item() == pytest.approx(
        pairwise_all_loss(*flat([bottom]).values()).item()
    )


@pytest.mark.parametrize("name", ["pairwise_all", "listmle", "plistmle", "listnet", "lambdaloss"])
def test_every_loss_leaves_out_a_post_whose_comments_all_tie(name):
    """ListMLE counted an all-tied post (n log n at least, pulling its rewards together) in its mean over posts,
    where its docstring and every other loss leave out posts with nothing to learn."""
    from commentrank.train.losses import LOSSES

    ordered = {"rewards": [0.3, -0.2, 0.5], "ranks": [0, 1, 2]}
    tied = {"rewards": [1.0, -1.0, 0.2, 0.0], "ranks": [0, 0, 0, 0]}
    loss = LOSSES[name].function
    assert loss(*flat([tied, ordered]).values()).item() == pytest.approx(loss(*flat([ordered]).values()).item())
    assert loss(*flat([tied]).values()).item() == 0.0


def test_plistmle_treats_tied_comments_symmetrically():
    post = {"rewards": [0.3, -1.0, 0.8, 2.0], "ranks": [0, 1, 1, 2]}
    swapped = {**post, "rewards": [0.3, 0.8, -1.0, 2.0]}
    assert plistmle_loss(*flat([post]).values()).item() == pytest.approx(plistmle_loss(*flat([swapped]).values()))


@pytest.mark.parametrize("name", list(NEW_LOSSES))
def test_losses_backpropagate_finite_non_zero_gradients(name):
    batch = flat(random_posts(4), "votes" if name in GRADED else None, requires_grad=True)
    loss = NEW_LOSSES[name](**batch)
    loss.backward()
    grad = batch["rewards"].grad
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("relevance", ["ranks", "votes"])
@pytest.mark.parametrize("name", list(NEW_LOSSES))
def test_a_batch_without_any_pair_gives_zero_with_a_graph(name, relevance):
    """One-comment posts and all-tied posts; with relevance votes also a post whose ranks differ but votes tie."""
    posts = [{"rewards": [0.7], "ranks": [0], "votes": [3]}, {"rewards": [0.2, 1.5], "ranks": [1, 1], "votes": [2, 2]}]
    if relevance == "votes" and name in GRADED:
        posts.append({"rewards": [1.0, -0.5, 0.1], "ranks": [0, 1, 2], "votes": [5, 5, 5]})
    batch = flat(posts, relevance if name in GRADED else None, requires_grad=True)
    loss = NEW_LOSSES[name](**batch)
    assert loss.requires_grad and loss.item() == 0.0
    loss.backward()
    assert torch.equal(batch["rewards"].grad, torch.zeros_like(batch["rewards"]))


def test_tied_votes_form_no_lambdaloss_pair_but_tied_ranks_do_not_hide_votes():
    """With relevance votes the pairs come from the votes: a post whose votes tie has nothing to learn, whereas the
    same post with ranks relevance does (and ranks that tie with votes that differ do form a pair)."""
    tied_votes = {"rewards": [1.0, -0.5], "ranks": [0, 1], "votes": [5, 5]}
    assert lambdaloss_loss(**flat([tied_votes], "votes")).item() == 0.0
    assert lambdaloss_loss(**flat([tied_votes])).item() > 0.0
    tied_ranks = {"rewards": [-0.5, 1.0], "ranks": [0, 0], "votes": [9, 1]}
    assert lambdaloss_loss(**flat([tied_ranks], "votes")).item() > 0.0


# --------------------------------------------------------------------------------------------------------------------
# Through the trainer
# --------------------------------------------------------------------------------------------------------------------


def voted_rows():
    return datasets.Dataset.from_list([
        {"post_id": "a", "prompt": "Best hops?", "comments": ["Citra", "Saaz is classic", "Mosaic"],
         "ranks": [2, 0, 1], "votes": [1, 12, 4]},
        {"post_id": "b", "prompt": "word " * 30, "comments": [f"answer {i} " * (9 if i == 3 else 1) for i in range(8)],
         "ranks": [5, 0, 7, 1, 6, 2, 4, 3], "votes": [2, 40, 0, 30, 2, 9, 3, 5]},
        {"post_id": "d", "prompt": "Two", "comments": ["x", "y z"], "ranks": [1, 0], "votes": [3, 7]},
    ])  # fmt: skip


def test_prepare_listwise_carries_the_relevance_of_the_kept_comments_to_the_collator(tiny_bert):
    encoder = PairEncoder(load_tokenizer(tiny_bert), max_length=40)
    rows = voted_rows()
    prepared, counts = prepare_listwise(rows, encoder, max_comments=4, seed=1, relevance="votes")
    assert counts["capped_posts"] == 1
    keep = cap_indices(8, 4, "1:b")  # post b, capped, without its 0 votes: the gaps to the lowest kept
    assert prepared[1]["relevance"] == pytest.approx(relevance_from_votes([rows[1]["votes"][i] for i in keep]))
    assert prepared[1]["ranks"] == [rows[1]["ranks"][i] for i in keep]
    batch = DataCollatorForListwise(pad_token_id=0)([prepared[i] for i in range(len(prepared))])
    assert batch["relevance"].tolist() == pytest.approx([g for post in prepared["relevance"] for g in post])
    assert batch["relevance"].shape == batch["ranks"].shape
    assert "relevance" not in prepare_listwise(rows, encoder)[0].column_names  # ranks: the losses use the ranks


def make_trainer(tiny_bert, tmp_path, train, loss_type, relevance="ranks", **kwargs):
    tokenizer = load_tokenizer(tiny_bert)
    defaults = dict(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                    logging_steps=1, per_device_train_batch_size=2, max_length=48, dataloader_num_workers=0,
                    activation_checkpointing=False)  # fmt: skip
    args = ListwiseRewardConfig(**{**defaults, **kwargs}, loss_type=loss_type, relevance=relevance)
    return ListwiseRewardTrainer(model=load_reward_model(tiny_bert, tokenizer), args=args, train_dataset=train,
                                 processing_class=tokenizer)  # fmt: skip


@pytest.mark.parametrize(
    ("loss_type", "relevance"),
    [("lambdaloss", "votes"), ("listnet", "votes"), ("lambdaloss", "ranks"), ("plistmle", "ranks")],
)
def test_trainer_hands_the_relevance_to_the_loss(tiny_bert, tmp_path, monkeypatch, loss_type, relevance):
    """The collator carries each kept comment's relevance to compute_loss, which hands it to the loss (votes) or lets
    the loss take it from the ranks; the trainer's loss is the per-post loop's on the batch's rewards."""
    import dataclasses

    from commentrank.train.losses import LOSSES

    tokenizer = load_tokenizer(tiny_bert)
    prepared, _ = prepare_listwise(voted_rows(), PairEncoder(tokenizer, max_length=40), relevance=relevance)
    trainer = make_trainer(tiny_bert, tmp_path, prepared, loss_type, relevance)
    trainer.model.eval()
    received = []

    def spy(*args, **kwargs):
        received.append(kwargs.get("relevance"))
        return NEW_LOSSES[loss_type](*args, **kwargs)

    monkeypatch.setitem(LOSSES, loss_type, dataclasses.replace(LOSSES[loss_type], function=spy))
    batch = trainer.data_collator([prepared[i] for i in range(len(prepared))])
    loss, outputs = trainer.compute_loss(trainer.model, dict(batch), return_outputs=True)
    if relevance == "votes":
        expected = [g for row in voted_rows() for g in relevance_from_votes(row["votes"])]
        assert received[0].tolist() == pytest.approx(expected)
    else:
        assert received == [None]  # the loss takes the relevance from the ranks
    rewards = outputs.logits.squeeze(-1).tolist()
    posts = [{"rewards": rewards[a:b], "ranks": row["ranks"], "votes": row["votes"]}
             for row, (a, b) in zip(voted_rows(), [(0, 3), (3, 11), (11, 13)])]  # fmt: skip
    naive = {"lambdaloss": naive_lambdaloss, "listnet": naive_listnet}
    expected = naive[loss_type](posts, relevance) if loss_type in naive else naive_plistmle(posts)
    assert loss.item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(("loss_type", "relevance"), [("lambdaloss", "votes"), ("lambdaloss", "ranks")])
def test_gradient_accumulation_matches_the_full_batch(tiny_bert, tmp_path, loss_type, relevance):
    tokenizer = load_tokenizer(tiny_bert)
    rows = voted_rows()
    rows = datasets.concatenate_datasets([rows, rows.select([0]).map(lambda r: {"post_id": "e"})])
    prepared, _ = prepare_listwise(rows, PairEncoder(tokenizer, max_length=40), relevance=relevance)
    assert_accumulation_matches_the_full_batch(
        lambda folder, **args: make_trainer(tiny_bert, folder, prepared, loss_type, relevance, **args),
        tiny_bert,
        tmp_path,
        prepared,
    )


def test_relevance_votes_without_votes_is_a_clear_error(tiny_bert, tmp_path):
    tokenizer = load_tokenizer(tiny_bert)
    encoder = PairEncoder(tokenizer, max_length=40)
    rows = voted_rows().to_list()
    rows[1]["votes"] = None
    with pytest.raises(ValueError, match="post b has no votes"):
        prepare_listwise(datasets.Dataset.from_list(rows), encoder, relevance="votes")
    with pytest.raises(ValueError, match="post b has no votes"):  # the raw view, tokenized by the trainer
        make_trainer(tiny_bert, tmp_path, datasets.Dataset.from_list(rows), "lambdaloss", "votes")
    with pytest.raises(ValueError, match="no `votes` column"):
        prepare_listwise(voted_rows().remove_columns("votes"), encoder, relevance="votes")
    prepared_without, _ = prepare_listwise(voted_rows(), encoder)
    with pytest.raises(ValueError, match="prepared without votes"):
        make_trainer(tiny_bert, tmp_path, prepared_without, "lambdaloss", "votes")


def test_one_registry_names_every_loss_for_the_config_the_trainer_the_card_and_the_readme():
    import re

    from commentrank.model_card import build_model_card
    from commentrank.train.losses import GRADED_LOSSES, LISTWISE_LOSSES, LOSSES, loss_table

    from conftest import ROOT

    assert LISTWISE_LOSSES == tuple(k for k in LOSSES if k != "pairwise") and set(GRADED_LOSSES) <= set(
        LISTWISE_LOSSES
    )
    assert all(LOSSES[k].function is not None for k in LISTWISE_LOSSES) and LOSSES["pairwise"].function is None
    readme = (ROOT / "README.md").read_text()
    assert loss_table() in readme  # the README's table is the registry's
    heading = re.search(r"### Listwise training \(`loss_type: ([^`]*)`\)", readme)[1]
    assert tuple(heading.split(" | ")) == LISTWISE_LOSSES
    for key, loss in LOSSES.items():
        card = str(build_model_card(model_id="me/rm", base_model=None, dataset=None, results={}, loss_type=key,
                                    text_pair=True))  # fmt: skip
        assert f"**{loss.name}** loss `{loss.formula}`" in card


def test_loss_and_relevance_are_checked_when_the_trainer_is_built(tiny_bert, tmp_path):
    prepared, _ = prepare_listwise(voted_rows(), PairEncoder(load_tokenizer(tiny_bert), max_length=40))
    with pytest.raises(ValueError, match="relevance 'clicks'"):
        make_trainer(tiny_bert, tmp_path, prepared, "lambdaloss", "clicks")


# --------------------------------------------------------------------------------------------------------------------
# Through scripts/reward.py
# --------------------------------------------------------------------------------------------------------------------


def args_for(model, data, out, *extra):
    return ["--model_name_or_path", model, "--dataset_name", data, "--output_dir", str(out), "--use_cpu", "true",
            "--bf16", "false", "--report_to", "none", "--dataloader_num_workers", "0",
            "--activation_checkpointing", "false", "--per_device_train_batch_size", "4",
            "--per_device_eval_batch_size", "8", "--max_length", "64", "--save_strategy", "no", "--logging_steps",
            "1", *extra]  # fmt: skip
