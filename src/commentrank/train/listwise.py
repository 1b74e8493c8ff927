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
- `center_rewards_coefficient` (RewardConfig) adds `coef * mean(r^2)` over the comments of the batch, as TRL does
  over the chosen and rejected rewards.

`ListwiseRewardTrainer` subclasses TRL's `RewardTrainer`: only the dataset preparation, the collator and the loss
change, so LoRA, gradient accumulation, DeepSpeed ZeRO-2/3, checkpointing and the logged metrics (`accuracy`,
`margin`, `min/mean/max_reward`, `num_tokens`) work as in TRL. `accuracy` and `margin` are over all the ordered
pairs of the batch, so they match the stock trainer's on `all` pairs.

Capping (`max_comments`): posts with more comments than the cap keep a seeded random subset of them (seeded by
`seed` and the post id, the same in every epoch, in their original order), not the best-ranked ones: a random
subset keeps both ends of the ranking, so every comparison of the full list has the same chance to be trained on,
whereas keeping the top ranks would never show the model a bad comment of a long thread.
"""

from __future__ import annotations

import inspect
import logging
import random
from dataclasses import dataclass
from typing import Any

import datasets
import torch
from transformers.data.data_collator import DataCollatorMixin
from trl import RewardTrainer
from trl.trainer.utils import pad

from commentrank.configs import LISTWISE_LOSSES, EncoderSettings
from commentrank.encoding import PairEncoder
from commentrank.train.losses import listmle_loss, pair_mask, pairwise_all_loss
from commentrank.train.pairwise import PairwiseRewardTrainer

logger = logging.getLogger(__name__)

LISTWISE_COLUMNS = ("comment_ids", "ranks")


# --------------------------------------------------------------------------------------------------------------------
# Data: one row per post with the encoded (prompt, comment) inputs of all its comments
# --------------------------------------------------------------------------------------------------------------------


def cap_indices(n: int, max_comments: int | None, key: str) -> list[int]:
    """The indices of the comments kept under the cap: all of them, or a random subset seeded by `key`, sorted."""
    if max_comments is None or n <= max_comments:
        return list(range(n))
    return sorted(random.Random(key).sample(range(n), max_comments))


def prepare_listwise(
    dataset: datasets.Dataset, encoder: PairEncoder, max_comments: int | None = None, seed: int = 42
) -> tuple[datasets.Dataset, dict]:
    """Encode data_prep's `listwise` view for `ListwiseRewardTrainer`.

    Each post becomes one row with `comment_ids` (one list of input ids per comment: the (prompt, comment) input,
    truncated to the encoder's `max_length`, never dropped) and `ranks` (0 = best). Posts above `max_comments`
    keep a seeded random subset (see the module docstring); posts with fewer than two comments have nothing to
    rank and are dropped. Unlabeled posts (`ranks` null) are an error.

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
    has_ids = "post_id" in dataset.column_names

    def encode(batch, indices):
        out = {"comment_ids": [], "ranks": [], "_truncated": [], "_capped": [], "_pairs": []}
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
    return prepared.select_columns(list(LISTWISE_COLUMNS)), counts


@dataclass
class DataCollatorForListwise(DataCollatorMixin):
    """Flattens the comments of a batch of posts into one right-padded batch.

    Examples are dicts with `comment_ids` (a list of input id lists) and `ranks`. Returns `input_ids` and
    `attention_mask` (one row per comment, posts one after the other), `post_index` (the row's post in the batch,
    0..B-1) and `ranks` (the row's rank within its post).
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        input_ids = [torch.tensor(ids, dtype=torch.long) for ex in examples for ids in ex["comment_ids"]]
        for ex in examples:
            if len(ex["comment_ids"]) != len(ex["ranks"]):
                raise ValueError(f"{len(ex['comment_ids'])} comments but {len(ex['ranks'])} ranks in one post")
        attention_mask = [torch.ones_like(ids) for ids in input_ids]
        return {
            "input_ids": pad(input_ids, self.pad_token_id, "right", self.pad_to_multiple_of),
            "attention_mask": pad(attention_mask, 0, "right", self.pad_to_multiple_of),
            "post_index": torch.tensor([i for i, ex in enumerate(examples) for _ in ex["ranks"]], dtype=torch.long),
            "ranks": torch.tensor([r for ex in examples for r in ex["ranks"]], dtype=torch.long),
        }


# --------------------------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------------------------


class ListwiseRewardTrainer(PairwiseRewardTrainer):
    """TRL's `RewardTrainer` on whole posts: each comment is forwarded once, the loss sees all the post's comments.

    Takes the same arguments as `RewardTrainer`, plus:
        loss_type: `pairwise_all` (mean over the ordered pairs of each post, each post weighted equally) or
            `listmle` (Plackett-Luce NLL of the observed order).
        use_margin: `pairwise_all` only: subtract `margin_scale * rank gap` inside the sigmoid.
        margin_scale: the margin per rank of gap.
        max_comments_per_post: cap applied when the trainer tokenizes a raw listwise view itself.
        encoder_settings: how it encodes a raw listwise view (the recipe's `EncoderSettings`, also saved with every
            checkpoint); default: the default settings at `args.max_length`.

    Datasets are either `prepare_listwise` outputs (`comment_ids`, `ranks`) or raw listwise views (`prompt`,
    `comments`, `ranks`), then encoded here with a `PairEncoder` of `encoder_settings` (truncated, never dropped).
    The loss is a mean over the posts of a micro-batch, divided by the gradient accumulation steps as in TRL.
    """

    _tag_names = ["trl", "reward-trainer", "commentrank", "listwise"]

    def __init__(
        self,
        *args,
        loss_type: str = "pairwise_all",
        use_margin: bool = False,
        margin_scale: float = 1.0,
        max_comments_per_post: int | None = None,
        **kwargs,
    ):
        if loss_type not in LISTWISE_LOSSES:
            raise ValueError(f"unknown listwise loss_type '{loss_type}' (choose from {', '.join(LISTWISE_LOSSES)})")
        if use_margin and loss_type != "pairwise_all":
            raise ValueError("use_margin applies to loss_type pairwise_all only (ListMLE has no margin)")
        if max_comments_per_post is not None and max_comments_per_post < 2:
            raise ValueError(f"max_comments_per_post must be at least 2, got {max_comments_per_post}")
        self.loss_type = loss_type
        self.margin_scale = float(margin_scale) if use_margin else None
        self.max_comments_per_post = max_comments_per_post
        trl_kwargs = {k: v for k, v in kwargs.items() if k != "encoder_settings"}
        bound = inspect.signature(RewardTrainer.__init__).bind_partial(self, *args, **trl_kwargs).arguments
        super().__init__(*args, **kwargs)
        if bound.get("data_collator") is None:
            self.data_collator = DataCollatorForListwise(
                pad_token_id=self.processing_class.pad_token_id, pad_to_multiple_of=self.args.pad_to_multiple_of
            )

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        columns = dataset.column_names if dataset.column_names is not None else []
        if set(LISTWISE_COLUMNS) <= set(columns):
            return dataset
        if {"prompt", "comments", "ranks"} <= set(columns) and isinstance(dataset, datasets.Dataset):
            from trl.trainer.utils import global_then_local_main_first

            settings = self.encoder_settings or EncoderSettings(max_length=args.max_length or 512)
            encoder = PairEncoder(processing_class, settings, model=getattr(self, "model", None))
            with global_then_local_main_first():
                dataset, counts = prepare_listwise(dataset, encoder, self.max_comments_per_post, args.seed)
            logger.info("%s dataset: %s", dataset_name, counts)
            return dataset
        raise ValueError(
            f"ListwiseRewardTrainer needs a listwise dataset: `comment_ids` and `ranks` (prepare_listwise) or "
            f"`prompt`, `comments` and `ranks` (data_prep's listwise view); {dataset_name} has {columns}"
        )

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = list(LISTWISE_COLUMNS)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # Rewards of variable-size posts cannot be gathered as predictions: evaluation reports the loss and the
        # metrics logged by `compute_loss` (NDCG comes from RankingEvalCallback).
        return super().prediction_step(model, inputs, True, ignore_keys=ignore_keys)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        post_index, ranks = inputs["post_index"], inputs["ranks"]
        model_inputs = {k: v for k, v in inputs.items() if k not in ("post_index", "ranks")}
        model_inputs["use_cache"] = False
        outputs = model(**model_inputs)
        rewards = outputs.logits.squeeze(-1).float()

        if self.loss_type == "pairwise_all":
            loss = pairwise_all_loss(rewards, post_index, ranks, self.margin_scale)
        elif self.loss_type == "listmle":
            loss = listmle_loss(rewards, post_index, ranks)
        else:
            raise NotImplementedError(f"loss_type {self.loss_type} is not implemented yet")
        if self.args.center_rewards_coefficient is not None:
            loss = loss + self.args.center_rewards_coefficient * torch.mean(rewards**2)

        with torch.no_grad():
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
