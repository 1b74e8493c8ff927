"""Pairwise reward training: data_prep's `pairwise` view tokenized here, and TRL's RewardTrainer that saves the encoder
settings with every checkpoint and with the final model, and no pickled training arguments."""

from __future__ import annotations

import logging

import datasets
from trl import RewardTrainer

from commentrank.configs import EncoderSettings
from commentrank.encoding import PairEncoder, segment_ids, segment_sep_id
from commentrank.train.checkpoints import SafeSavingMixin

logger = logging.getLogger(__name__)


def tokenize_pairs(dataset: datasets.Dataset, encoder: PairEncoder, keep_margin: bool = False) -> tuple:
    """Add `chosen_ids`/`rejected_ids` (truncated, never dropped) so RewardTrainer skips its own processing.

    Returns the tokenized dataset and counts: pairs, and how many chosen and rejected inputs were truncated.
    """
    missing = {"prompt", "chosen", "rejected"} - set(dataset.column_names)
    if missing:
        raise ValueError(f"the pairwise dataset lacks the column(s) {sorted(missing)}; found {dataset.column_names}")

    def encode(batch):
        chosen = encoder.encode(batch["prompt"], batch["chosen"])
        rejected = encoder.encode(batch["prompt"], batch["rejected"])
        return {
            "chosen_ids": chosen.input_ids,
            "rejected_ids": rejected.input_ids,
            "chosen_truncated": chosen.truncated,
            "rejected_truncated": rejected.truncated,
        }

    keep = {"margin"} if keep_margin else set()
    remove = [c for c in dataset.column_names if c not in keep]
    tokenized = dataset.map(encode, batched=True, remove_columns=remove, desc="Tokenizing pairs")
    counts = {
        "pairs": len(tokenized),
        "truncated_chosen": int(sum(tokenized["chosen_truncated"])),
        "truncated_rejected": int(sum(tokenized["rejected_truncated"])),
    }
    return tokenized.remove_columns(["chosen_truncated", "rejected_truncated"]), counts


class PairwiseRewardTrainer(SafeSavingMixin, RewardTrainer):
    """TRL's `RewardTrainer`, plus `encoder_settings`: written as `commentrank_config.json` next to every saved model,
    checkpoints included, so that any checkpoint scores exactly as it was trained; the training arguments are saved
    as JSON without tokens, never as a pickle (`SafeSavingMixin`)."""

    _tag_names = ["trl", "reward-trainer", "commentrank"]

    def __init__(self, *args, encoder_settings: EncoderSettings | None = None, **kwargs):
        self.encoder_settings = encoder_settings
        super().__init__(*args, **kwargs)
        self.data_collator = with_segments(self.data_collator, self.processing_class)


class _WithSegments:
    """A collator that adds the text pairs' `token_type_ids` to another collator's batches."""

    def __init__(self, collator, sep_token_id: int):
        self.collator, self.sep_token_id = collator, sep_token_id

    def __call__(self, examples):
        batch = self.collator(examples)
        batch["token_type_ids"] = segment_ids(batch["input_ids"], batch["attention_mask"], self.sep_token_id)
        return batch


def with_segments(collator, tokenizer):
    """`collator`, adding `token_type_ids` for models that take them (as `tokenizer(prompt, comment)` would)."""
    sep_id = segment_sep_id(tokenizer)
    if sep_id is None or isinstance(collator, _WithSegments):
        return collator
    return _WithSegments(collator, sep_id)
