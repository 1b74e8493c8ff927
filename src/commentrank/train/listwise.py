"""Listwise (K-wise) reward training: all the comments of a post in one batch element, each forwarded once.

InstructGPT (Ouyang et al. 2022, sec. 3.5) trains on all C(K,2) comparisons of a prompt as a single batch element.
Pairwise training on `all` pairs forwards each comment K-1 times per epoch (2 x C(K,2) sequences per post) and
spreads strongly correlated pairs over many batches; here a batch holds whole posts, the comments of all its posts
are flattened into one padded batch, and the loss is computed from the K rewards of each post:

- `pairwise_all`: for each post, the mean over its ordered pairs (i ranked better than j; tied ranks form no pair)
  of `-log sigmoid(r_i - r_j - m_ij)`, then the mean over posts (each post weighs the same, whatever its K).
  With `use_margin`, `m_ij = margin_scale * (rank_j - rank_i)` (the rank gap, as data_prep's `margin` column);
  otherwise 0.
- `listmle`: the Plackett-Luce negative log-likelihood of the observed order (ListMLE, Xia et al. 2008), summed over
  the positions of a post, then the mean over posts: `sum_i [log sum_{j: rank_j >= rank_i} exp(r_j) - r_i]`.
  For a strict order this is exactly the Plackett-Luce NLL; comments with tied ranks share their risk set (each
  one's denominator holds all its ties), so tied comments are treated symmetrically.
- `plistmle`: position-aware ListMLE (Lan et al. 2014): ListMLE's term at position i weighted by
  `a(i) = 2^(n-i) - 1`, normalized over the post, so the top of the order counts most, as in NDCG.
- `listnet`: top-one ListNet (Cao et al. 2007): the cross-entropy `-sum_i softmax(g)_i log softmax(r)_i` between
  the top-one probabilities of the graded relevance `g` and of the rewards.
- `lambdaloss`: LambdaLoss with the NDCG-Loss2++ weighting (Wang et al. 2018, mu = 5): each pair of different
  relevance weighted by the NDCG it costs when swapped at the rewards' current positions,
  `-log2 sigmoid(r_i - r_j) * (rho_ij + mu * delta_ij) * |G_i - G_j|`.
- graded relevance (`relevance`, the gains of listnet and lambdaloss): `ranks` (default) gives `n - 1 - rank`, the
  project's NDCG relevance (linear gain, `commentrank.metrics`); `votes` gives `log1p(votes - min votes)` over the
  comments kept of the post (the vote counts of data_prep's `votes` column, compressed: a few answers of a thread
  often hold most of its votes), carried as a `relevance` column. Tied votes are equal relevance: no lambdaloss pair.
  The other losses take their order from the ranks whatever `relevance` is.
- `center_rewards_coefficient` (RewardConfig) adds `coef * mean(r^2)` over the comments of the batch: each reward
  pulled toward 0, where TRL's pairwise trainer adds `coef * mean((r_chosen + r_rejected)^2)` over its pairs (each
  pair's sum toward 0), so one coefficient weighs a little differently on the two paths; `r` is the model's own
  reward, the length term left out (centering the sum would push the model to cancel the term).
- With `length_feature: odin` the logged `accuracy`, `margin` and rewards are those of the training reward, the length
  term included; the NDCG callback scores the reward the model is saved with (without it).

`ListwiseRewardTrainer` subclasses TRL's `RewardTrainer`: only the dataset preparation, the collator and the loss
change, so LoRA, gradient accumulation, DeepSpeed ZeRO-2/3, checkpointing and the logged metrics (`accuracy`,
`margin`, `min/mean/max_reward`, `num_tokens`) work as in TRL. `accuracy` and `margin` are over all the ordered
pairs of the batch, so they match the stock trainer's on `all` pairs.

Capping (`max_comments`): posts with more comments than the cap keep a seeded random subset of them (seeded by
`seed` and the post id, the same in every epoch, in their original order), not the best-ranked ones: a random
subset keeps both ends of the ranking, so every comparison of the full list has the same chance to be trained on,
whereas keeping the top ranks would never show the model a bad comment of a long thread.

Throughput (benchmarks/bench_throughput.py): a step's comments are one right-padded batch, so short comments pay for
the longest one. `length_sorted_forward` forwards them sorted by length in groups, each padded to its own longest
(`forward_groups`: the fewest padded cells plus a fixed cost per forward), and scatters the rewards back: the same
loss and gradient, fewer padded tokens. `batch_token_budget` replaces the fixed number of posts per step by batches of
whole posts of similar length up to a budget of padded tokens (`token_budget_batches`), drawn in a seeded random
order each epoch.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import random
from dataclasses import dataclass
from typing import Any

import datasets
import torch
from transformers.data.data_collator import DataCollatorMixin
from transformers.modeling_outputs import SequenceClassifierOutput
from trl import RewardTrainer

from commentrank.configs import RELEVANCES, EncoderSettings, ListwiseRewardConfig
from commentrank.encoding import PairEncoder
from commentrank.inference import pad
from commentrank.length import (
    LENGTH_COLUMN,
    LENGTH_FIT_POSTS,
    LENGTH_FIT_RIDGE,  # noqa: F401 (the fit's ridge, used to be here)
    LENGTH_STATE_FILE,
    correlation,
    fit_length_weight,
    length_feature,
)
from commentrank.train.losses import LISTWISE_LOSSES, LOSSES, pair_mask
from commentrank.train.pairwise import PairwiseRewardTrainer, with_segments

logger = logging.getLogger(__name__)

LISTWISE_COLUMNS = ("comment_ids", "ranks")
RELEVANCE_COLUMN = "relevance"  # with relevance votes: the graded relevance of each comment, next to `ranks`
FORWARD_COST_TOKENS = 128  # length_sorted_forward: the cost of one more forward pass, in padded tokens
MEGABATCH_POSTS = 64  # batch_token_budget: posts are sorted by length within seeded random groups of this many


# --------------------------------------------------------------------------------------------------------------------
# Data: one row per post with the encoded (prompt, comment) inputs of all its comments
# --------------------------------------------------------------------------------------------------------------------


def cap_indices(n: int, max_comments: int | None, key: str) -> list[int]:
    """The indices of the comments kept under the cap: all of them, or a random subset seeded by `key`, sorted."""
    if max_comments is None or n <= max_comments:
        return list(range(n))
    return sorted(random.Random(key).sample(range(n), max_comments))


def relevance_from_votes(votes: list[float]) -> list[float]:
    """The graded relevance of a post's comments from their votes: `log1p(votes - min(votes))` (0 for the least voted,
    equal votes give equal relevance)."""
    low = min(votes)
    return [math.log1p(v - low) for v in votes]


def _post_votes(votes, n_comments: int, post_id) -> list[float]:
    """A post's vote counts as floats; a clear error when it has none (relevance votes needs them)."""
    if votes is None or any(v is None for v in votes):
        raise ValueError(
            f"post {post_id} has no votes: relevance votes needs the vote count of every comment (data_prep's "
            "`votes` column); use relevance ranks for data without votes"
        )
    if len(votes) != n_comments:
        raise ValueError(f"post {post_id}: {n_comments} comments but {len(votes)} votes")
    values = [float(v) for v in votes]
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"post {post_id}: votes must be finite numbers, got {votes}")
    return values


def prepare_listwise(
    dataset: datasets.Dataset,
    encoder: PairEncoder,
    max_comments: int | None = None,
    seed: int = 42,
    relevance: str = "ranks",
    with_lengths: bool = False,
) -> tuple[datasets.Dataset, dict]:
    """Encode data_prep's `listwise` view for `ListwiseRewardTrainer`.

    Each post becomes one row with `comment_ids` (one list of input ids per comment: the (prompt, comment) input,
    truncated to the encoder's `max_length`, never dropped) and `ranks` (0 = best). Posts above `max_comments`
    keep a seeded random subset (see the module docstring); posts with fewer than two comments have nothing to
    rank and are dropped. Unlabeled posts (`ranks` null) are an error. With `relevance="votes"` each row also holds
    `relevance`, `relevance_from_votes` of the kept comments' `votes`; a kept post without votes is an error that
    names it (`relevance="ranks"`: the losses derive the relevance from the ranks, no column). With `with_lengths`,
    `log_lengths` holds `encoding.length_feature` of the kept comments' whole texts (the length term's input).

    Returns the dataset and counts: posts, comments (forwarded per epoch), pairs (ordered pairs among them),
    truncated (inputs cut to fit), capped_posts / capped_comments (posts over the cap, comments left out by it),
    dropped (posts with fewer than two comments).
    """
    missing = {"prompt", "comments", "ranks"} - set(dataset.column_names)
    if missing:
        raise ValueError(f"the listwise dataset lacks the column(s) {sorted(missing)}; found {dataset.column_names}")
    if max_comments is not None and max_comments < 2:
        raise ValueError(
            f"max_comments_per_post must be at least 2 (a post needs two comments to rank), got {max_comments}"
        )
    if relevance not in RELEVANCES:
        raise ValueError(f"relevance '{relevance}' is not one of {', '.join(RELEVANCES)}")
    with_votes = relevance == "votes"
    if with_votes and "votes" not in dataset.column_names:
        raise ValueError(
            f"relevance votes needs the comments' votes, but the listwise dataset has no `votes` column (found "
            f"{dataset.column_names}); use relevance ranks for data without votes"
        )
    has_ids = "post_id" in dataset.column_names
    columns = [
        *LISTWISE_COLUMNS,
        *([RELEVANCE_COLUMN] if with_votes else []),
        *([LENGTH_COLUMN] if with_lengths else []),
    ]

    def encode(batch, indices):
        out = {"comment_ids": [], "ranks": [], "_truncated": [], "_capped": [], "_pairs": []}
        if with_votes:
            out[RELEVANCE_COLUMN] = []
        if with_lengths:
            out[LENGTH_COLUMN] = []
        for row, index in enumerate(indices):
            comments, ranks = batch["comments"][row], batch["ranks"][row]
            post_id = batch["post_id"][row] if has_ids else index
            if ranks is None or any(r is None for r in ranks):
                raise ValueError(f"post {post_id} is unlabeled (ranks are null): listwise training needs ranks")
            if len(ranks) != len(comments):
                raise ValueError(f"post {post_id}: {len(comments)} comments but {len(ranks)} ranks")
            if len(comments) < 2:
                continue
            keep = cap_indices(len(comments), max_comments, f"{seed}:{post_id}")
            kept_ranks = [int(ranks[i]) for i in keep]
            if with_votes:
                votes = _post_votes(batch["votes"][row], len(comments), post_id)
                out[RELEVANCE_COLUMN].append(relevance_from_votes([votes[i] for i in keep]))
            if with_lengths:
                out[LENGTH_COLUMN].append(length_feature([comments[i] for i in keep]))
            encoded = encoder.encode([batch["prompt"][row]] * len(keep), [comments[i] for i in keep])
            out["comment_ids"].append(encoded.input_ids)
            out["ranks"].append(kept_ranks)
            out["_truncated"].append(sum(encoded.truncated))
            out["_capped"].append(len(comments) - len(keep))
            out["_pairs"].append(sum(a < b for a in kept_ranks for b in kept_ranks))
        return out

    prepared = dataset.map(
        encode, batched=True, with_indices=True, remove_columns=dataset.column_names, desc="Tokenizing posts"
    )
    counts = {
        "posts": len(prepared),
        "comments": int(sum(len(r) for r in prepared["ranks"])),
        "pairs": int(sum(prepared["_pairs"])),
        "truncated": int(sum(prepared["_truncated"])),
        "capped_posts": int(sum(c > 0 for c in prepared["_capped"])),
        "capped_comments": int(sum(prepared["_capped"])),
        "dropped": len(dataset) - len(prepared),
    }
    return prepared.select_columns(columns), counts


@dataclass
class DataCollatorForListwise(DataCollatorMixin):
    """Flattens the comments of a batch of posts into one right-padded batch.

    Examples are dicts with `comment_ids` (a list of input id lists), `ranks` and, optionally, `relevance` (in every
    example or in none). Returns `input_ids` and `attention_mask` (one row per comment, posts one after the other),
    `post_index` (the row's post in the batch, 0..B-1), `ranks` (the row's rank within its post) and, when the
    examples have it, `relevance` (the row's graded relevance, float).
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        input_ids = [torch.tensor(ids, dtype=torch.long) for ex in examples for ids in ex["comment_ids"]]
        with_relevance = [RELEVANCE_COLUMN in ex for ex in examples]
        if any(with_relevance) and not all(with_relevance):
            raise ValueError(f"some posts of the batch have `{RELEVANCE_COLUMN}` and some do not")
        for ex in examples:
            if len(ex["comment_ids"]) != len(ex["ranks"]):
                raise ValueError(f"{len(ex['comment_ids'])} comments but {len(ex['ranks'])} ranks in one post")
            if any(with_relevance) and len(ex[RELEVANCE_COLUMN]) != len(ex["ranks"]):
                raise ValueError(f"{len(ex['ranks'])} ranks but {len(ex[RELEVANCE_COLUMN])} relevances in one post")
        attention_mask = [torch.ones_like(ids) for ids in input_ids]
        batch = {
            "input_ids": pad(input_ids, self.pad_token_id, self.pad_to_multiple_of),
            "attention_mask": pad(attention_mask, 0, self.pad_to_multiple_of),
            "post_index": torch.tensor([i for i, ex in enumerate(examples) for _ in ex["ranks"]], dtype=torch.long),
            "ranks": torch.tensor([r for ex in examples for r in ex["ranks"]], dtype=torch.long),
        }
        if any(with_relevance):
            batch[RELEVANCE_COLUMN] = torch.tensor(
                [g for ex in examples for g in ex[RELEVANCE_COLUMN]], dtype=torch.float32
            )
        if all(LENGTH_COLUMN in ex for ex in examples):
            batch[LENGTH_COLUMN] = torch.tensor([n for ex in examples for n in ex[LENGTH_COLUMN]], dtype=torch.float32)
        return batch


# --------------------------------------------------------------------------------------------------------------------
# Throughput: fewer padded tokens per step
# --------------------------------------------------------------------------------------------------------------------


def _round_up(length: int, multiple: int | None) -> int:
    return -(-length // multiple) * multiple if multiple else length


def padded_cells(lengths: list[int], pad_to_multiple_of: int | None = None) -> int:
    """The cells of one right-padded batch of sequences of these lengths: count x longest (rounded up)."""
    return len(lengths) * _round_up(max(lengths), pad_to_multiple_of) if lengths else 0


def forward_groups(
    lengths: list[int], pad_to_multiple_of: int | None = None, cost_per_forward: int = FORWARD_COST_TOKENS
) -> list[list[int]]:
    """Partition sequences into forward passes of similar length: sorted longest first, cut where the padded cells
    of all the passes plus `cost_per_forward` per pass are fewest (an exact dynamic programme over the sorted order).
    Returns lists of indices into `lengths`, each list longest first."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    n = len(order)
    best, cut = [0] + [math.inf] * n, [0] * (n + 1)  # best[j]: the cost of the first j sorted sequences
    for j in range(1, n + 1):
        for i in range(j):  # the last pass holds sorted sequences i..j-1, padded to the longest, order[i]
            cost = best[i] + (j - i) * _round_up(lengths[order[i]], pad_to_multiple_of) + cost_per_forward
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def token_budget_batches(
    post_lengths: list[list[int]],
    budget: int,
    seed: int,
    pad_to_multiple_of: int | None = None,
    megabatch: int = MEGABATCH_POSTS,
) -> list[list[int]]:
    """Batches of whole posts (indices into `post_lengths`, each a post's comment lengths in tokens) of similar
    length: the posts in a seeded random order, cut into groups of `megabatch` posts, each group sorted by its posts'
    longest comment and cut greedily into batches of at most `budget` padded cells (`padded_cells` of all their
    comments); a post above the budget on its own is a batch of its own. Every post is in exactly one batch."""
    if budget < 1:
        raise ValueError(f"batch_token_budget must be positive, got {budget}")
    order = list(range(len(post_lengths)))
    random.Random(seed).shuffle(order)
    batches = []
    for start in range(0, len(order), megabatch):
        group = sorted(order[start : start + megabatch], key=lambda i: -max(post_lengths[i], default=0))
        batch, lengths = [], []
        for post in group:
            if batch and padded_cells(lengths + post_lengths[post], pad_to_multiple_of) > budget:
                batches.append(batch)
                batch, lengths = [], []
            batch.append(post)
            lengths = lengths + post_lengths[post]
        if batch:
            batches.append(batch)
    return batches


class TokenBudgetBatchSampler(torch.utils.data.Sampler):
    """`token_budget_batches` (made once), yielded in a seeded random order that changes with each epoch."""

    def __init__(self, post_lengths, budget: int, seed: int, pad_to_multiple_of: int | None = None):
        self.batches = token_budget_batches(post_lengths, budget, seed, pad_to_multiple_of)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        order = list(range(len(self.batches)))
        random.Random(f"{self.seed}:{self.epoch}").shuffle(order)
        self.epoch += 1  # a loader that never calls set_epoch still gets a new order each epoch
        yield from (self.batches[i] for i in order)

    def __len__(self) -> int:
        return len(self.batches)


# --------------------------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------------------------


class ListwiseRewardTrainer(PairwiseRewardTrainer):
    """TRL's `RewardTrainer` on whole posts: each comment is forwarded once, the loss sees all the post's comments.

    Takes the same arguments as `RewardTrainer`, its options in `args`, a `ListwiseRewardConfig` (checked there):
        loss_type: `pairwise_all` (mean over the ordered pairs of each post, each post weighted equally), `listmle`
            (Plackett-Luce NLL of the observed order), `plistmle` (ListMLE weighted by position), `listnet` (top-one
            cross-entropy) or `lambdaloss` (NDCG-Loss2++); see the module docstring and `losses.LOSSES`.
        relevance: the graded relevance of `listnet` and `lambdaloss`: `ranks` (`n - 1 - rank`) or `votes`
            (`log1p` of the vote gap; the dataset needs votes, or a `relevance` column from
            `prepare_listwise(..., relevance="votes")`). The other losses take their order from the ranks.
        use_margin, margin_scale: `pairwise_all` only: subtract `margin_scale * rank gap` inside the sigmoid.
        max_comments_per_post: cap applied when the trainer tokenizes a raw listwise view itself (None: no cap).
        length_feature, length_init, length_learning_rate, odin_weight: the length term (see `ListwiseRewardConfig`).
        batch_token_budget: batches of whole posts of similar length up to this many padded tokens per step
            (`token_budget_batches`) instead of `per_device_train_batch_size` posts; None: the fixed post count.
        length_sorted_forward: forward a step's comments sorted by length in groups, each padded to its own longest
            (`forward_groups`), instead of one batch padded to the step's longest comment.
    and `encoder_settings`: how it encodes a raw listwise view (the recipe's `EncoderSettings`, also saved with every
        checkpoint); default: the default settings at `args.max_length`.

    Datasets are either `prepare_listwise` outputs (`comment_ids`, `ranks`, and `relevance` with relevance votes) or
    raw listwise views (`prompt`, `comments`, `ranks`, and `votes` with relevance votes), then encoded here with a
    `PairEncoder` of `encoder_settings` (truncated, never dropped).
    The loss is a mean over the posts of a micro-batch, divided by the gradient accumulation steps as in TRL.
    """

    _tag_names = ["trl", "reward-trainer", "commentrank", "listwise"]

    def __init__(self, *args, **kwargs):
        trl_kwargs = {k: v for k, v in kwargs.items() if k != "encoder_settings"}
        bound = inspect.signature(RewardTrainer.__init__).bind_partial(self, *args, **trl_kwargs).arguments
        config = bound.get("args")
        if not isinstance(config, ListwiseRewardConfig):
            raise TypeError(
                f"ListwiseRewardTrainer reads its options from args, a ListwiseRewardConfig; "
                f"got {type(config).__name__}"
            )
        if not config.listwise:
            raise ValueError(
                "loss_type pairwise trains on pairs with PairwiseRewardTrainer (TRL's RewardTrainer); "
                f"ListwiseRewardTrainer takes {', '.join(LISTWISE_LOSSES)}"
            )
        # the length term's weight w: reward = model(prompt, comment) + w * log1p(characters of the whole comment)
        self.length_weight = torch.nn.Parameter(torch.zeros(())) if config.length_feature != "none" else None
        super().__init__(*args, **kwargs)
        if bound.get("data_collator") is None:
            collator = DataCollatorForListwise(
                pad_token_id=self.processing_class.pad_token_id, pad_to_multiple_of=self.args.pad_to_multiple_of
            )
            self.data_collator = with_segments(collator, self.processing_class)  # token_type_ids as scoring has them
        if self.length_weight is not None and self.is_deepspeed_enabled and self.args.length_learning_rate > 0:
            raise ValueError(
                f"length_learning_rate {self.args.length_learning_rate} trains the length weight, which DeepSpeed's "
                "optimizer (the model's parameters) cannot hold: keep the fitted weight (length_learning_rate: 0, "
                "the recipes') or train without DeepSpeed"
            )
        if self.length_weight is not None and self.is_deepspeed_enabled:
            self.length_weight.requires_grad_(False)  # fixed: outside the model DeepSpeed trains
        if (
            self.args.length_init == "fit"
            and self.length_weight is not None
            and isinstance(self.train_dataset, datasets.Dataset)
        ):
            fitted = self.fit_length_weight(self.train_dataset)
            with torch.no_grad():
                self.length_weight.fill_(fitted)

    def _loss(self, rewards, post_index, ranks, relevance=None):
        """The configured loss of flattened rewards (the one `compute_loss` trains with)."""
        extra, args = {}, self.args
        if args.loss_type == "pairwise_all":
            extra["margin_scale"] = float(args.margin_scale) if args.use_margin else None
        elif LOSSES[args.loss_type].graded and args.relevance == "votes":
            if relevance is None:
                raise ValueError(f"relevance votes: the batch has no `{RELEVANCE_COLUMN}` (DataCollatorForListwise)")
            extra["relevance"] = relevance
        return LOSSES[args.loss_type].function(rewards, post_index, ranks, **extra)

    def fit_length_weight(self, dataset, max_posts: int = LENGTH_FIT_POSTS, chunk: int = 64) -> float:
        """The starting weight of the length term (length_init: fit): `length.fit_length_weight` with this trainer's
        loss over the first `max_posts` posts of `dataset`."""
        graded = self.args.relevance == "votes" and LOSSES[self.args.loss_type].graded
        return fit_length_weight(dataset, self._loss, RELEVANCE_COLUMN if graded else None, max_posts, chunk,
                                 label=self.args.loss_type)  # fmt: skip

    # The length term: one scalar trained with the model, saved in the encoder settings and in each checkpoint
    def create_optimizer(self, *args, **kwargs):
        optimizer = super().create_optimizer(*args, **kwargs)
        if self.is_deepspeed_enabled:  # a fixed weight (checked in __init__): DeepSpeed's optimizer holds the model's
            return optimizer
        if self.length_weight is not None and not any(
            p is self.length_weight for group in optimizer.param_groups for p in group["params"]
        ):
            optimizer.add_param_group({"params": [self.length_weight], "lr": self.args.length_learning_rate,
                                       "weight_decay": 0.0})  # fmt: skip
        return optimizer

    def scored_length_weight(self) -> float:
        """The weight every scorer applies: the learned one (additive), or 0 (odin drops the term; none has none)."""
        return float(self.length_weight.detach()) if self.args.length_feature == "additive" else 0.0

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        if self.length_weight is not None and self.encoder_settings is not None:
            self.encoder_settings = self.encoder_settings.replace(length_weight=self.scored_length_weight())
        super()._save(output_dir, state_dict=state_dict)
        if self.length_weight is not None and self.args.should_save:
            from commentrank.io_utils import atomic_write_text

            state = {"length_feature": self.args.length_feature, "weight": float(self.length_weight.detach())}
            atomic_write_text(os.path.join(output_dir or self.args.output_dir, LENGTH_STATE_FILE), json.dumps(state))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._load_length_weight(resume_from_checkpoint)

    def _load_best_model(self):
        """`load_best_model_at_end`: the best checkpoint's network with that checkpoint's own length weight."""
        super()._load_best_model()
        self._load_length_weight(self.state.best_model_checkpoint)

    def _load_length_weight(self, checkpoint: str | None) -> None:
        """The length weight a checkpoint saved (`LENGTH_STATE_FILE`), if it has one."""
        path = os.path.join(checkpoint or "", LENGTH_STATE_FILE)
        if self.length_weight is not None and checkpoint and os.path.isfile(path):
            with torch.no_grad():
                self.length_weight.fill_(json.loads(open(path, encoding="utf-8").read())["weight"])

    def get_train_dataloader(self):
        if self.args.batch_token_budget is None:
            return super().get_train_dataloader()
        from torch.utils.data import DataLoader

        dataset = self._remove_unused_columns(self.train_dataset, description="Training")
        lengths = [[len(ids) for ids in post] for post in dataset["comment_ids"]]
        sampler = TokenBudgetBatchSampler(
            lengths, self.args.batch_token_budget, self.args.seed, self.args.pad_to_multiple_of
        )
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(loader)

    def _rewards(self, model, model_inputs) -> tuple[torch.Tensor, Any]:
        """The model's reward of each row and the outputs, in one forward pass or (length_sorted_forward) in
        `forward_groups` (the outputs then hold the rewards as `logits` only)."""
        mask = model_inputs.get("attention_mask")
        if not self.args.length_sorted_forward or mask is None:
            outputs = model(**model_inputs)
            return outputs.logits.squeeze(-1).float(), outputs
        lengths = mask.sum(1).tolist()
        rewards = []
        for group in forward_groups(lengths, self.args.pad_to_multiple_of):
            width = min(_round_up(lengths[group[0]], self.args.pad_to_multiple_of), mask.shape[1])
            index = torch.tensor(group, device=mask.device)
            inputs = {k: v[index, :width] if torch.is_tensor(v) and v.dim() == 2 else v
                      for k, v in model_inputs.items()}  # fmt: skip
            rewards.append((index, model(**inputs).logits.squeeze(-1).float()))
        flat = torch.cat([r for _, r in rewards])
        flat = flat[torch.argsort(torch.cat([i for i, _ in rewards]))]  # back in the batch's row order
        return flat, SequenceClassifierOutput(logits=flat[:, None])

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        columns = dataset.column_names if dataset.column_names is not None else []
        if set(LISTWISE_COLUMNS) <= set(columns):
            if args.relevance == "votes" and RELEVANCE_COLUMN not in columns:
                raise ValueError(
                    f"relevance votes needs a `{RELEVANCE_COLUMN}` column: the {dataset_name} dataset was prepared "
                    "without votes (prepare_listwise(..., relevance='votes'), or pass data_prep's listwise view)"
                )
            return dataset
        if {"prompt", "comments", "ranks"} <= set(columns) and isinstance(dataset, datasets.Dataset):
            from trl.trainer.utils import global_then_local_main_first

            settings = self.encoder_settings or EncoderSettings(max_length=args.max_length or 512)
            encoder = PairEncoder(processing_class, settings, model=getattr(self, "model", None))
            with global_then_local_main_first():
                dataset, counts = prepare_listwise(
                    dataset, encoder, args.max_comments_per_post, args.seed, relevance=args.relevance,
                    with_lengths=self.length_weight is not None,
                )  # fmt: skip
            logger.info("%s dataset: %s", dataset_name, counts)
            return dataset
        raise ValueError(
            f"ListwiseRewardTrainer needs a listwise dataset: `comment_ids` and `ranks` (prepare_listwise) or "
            f"`prompt`, `comments` and `ranks` (data_prep's listwise view); {dataset_name} has {columns}"
        )

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            relevance = [RELEVANCE_COLUMN] if self.args.relevance == "votes" else []
            lengths = [LENGTH_COLUMN] if self.length_weight is not None else []
            self._signature_columns = [*LISTWISE_COLUMNS, *relevance, *lengths]

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # Rewards of variable-size posts cannot be gathered as predictions: evaluation reports the loss and the
        # metrics logged by `compute_loss` (NDCG comes from RankingEvalCallback).
        return super().prediction_step(model, inputs, True, ignore_keys=ignore_keys)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        post_index, ranks = inputs["post_index"], inputs["ranks"]
        model_inputs = {
            k: v for k, v in inputs.items() if k not in ("post_index", "ranks", RELEVANCE_COLUMN, LENGTH_COLUMN)
        }
        model_inputs["use_cache"] = False
        rewards, outputs = self._rewards(model, model_inputs)
        own = rewards  # the model's own reward, before the length term: what centering keeps near 0
        penalty = None
        if self.length_weight is not None:
            if LENGTH_COLUMN not in inputs:
                raise ValueError(f"length_feature {self.args.length_feature}: the batch has no `{LENGTH_COLUMN}`")
            lengths = inputs[LENGTH_COLUMN].to(rewards)
            if self.args.length_feature == "odin":  # keep the model's own reward uncorrelated with length
                penalty = self.args.odin_weight * correlation(rewards, lengths) ** 2
            rewards = rewards + self.length_weight.to(rewards.device) * lengths

        loss = self._loss(rewards, post_index, ranks, inputs.get(RELEVANCE_COLUMN))
        if self.args.center_rewards_coefficient is not None:
            loss = loss + self.args.center_rewards_coefficient * torch.mean(own**2)
        if penalty is not None:
            loss = loss + penalty

        with torch.no_grad():
            if self.length_weight is not None:
                self._metrics[mode]["length_weight"].append(float(self.length_weight.detach()))
            mask = pair_mask(post_index, ranks)
            diff = (rewards[:, None] - rewards[None, :])[mask]
            local = torch.stack([
                rewards.sum(), rewards.new_tensor(rewards.numel()), rewards.min(), rewards.max(),
                (diff > 0).sum().to(rewards.dtype), rewards.new_tensor(diff.numel()), diff.sum(),
                inputs["attention_mask"].sum().to(rewards.dtype),
            ])  # fmt: skip
            stats = self.accelerator.gather(local[None]).reshape(-1, local.numel())
            total = stats.sum(0)
            if mode == "train":
                self._total_train_tokens += int(total[7].item()) // self._tp_size
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            self._metrics[mode]["min_reward"].append(stats[:, 2].min().item())
            self._metrics[mode]["mean_reward"].append((total[0] / total[1]).item())
            self._metrics[mode]["max_reward"].append(stats[:, 3].max().item())
            if total[5] > 0:
                self._metrics[mode]["accuracy"].append((total[4] / total[5]).item())
                self._metrics[mode]["margin"].append((total[6] / total[5]).item())

        return (loss, outputs) if return_outputs else loss
