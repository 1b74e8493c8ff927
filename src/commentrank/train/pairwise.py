"""Datasets for reward training: data_prep's views from a folder, a raw ranked file or the Hub, tokenized here."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import datasets

from commentrank.data.readers import is_ranked_file_name
from commentrank.encoding import PairEncoder

logger = logging.getLogger(__name__)


def load_view(
    dataset_name: str, view: str, prompt_template: str = "{title}", pair_strategy: str = "adjacent", seed: int = 42
) -> datasets.DatasetDict | None:
    """One view as a DatasetDict from a data_prep folder, a raw ranked file (converted on the fly with the same
    data_prep code), or a Hub dataset id (the view is the config name). None when the source lacks that view."""
    path = Path(dataset_name)
    if path.is_dir():
        if (path / view).is_dir():
            return datasets.load_from_disk(str(path / view))
        if (path / "dataset_dict.json").exists() and view == "pairwise":
            return datasets.load_from_disk(str(path))
        if any(path.iterdir()):
            return None
        raise FileNotFoundError(f"{path} is empty: expected a folder written by data_prep/prepare.py")
    if is_ranked_file_name(path):
        if not path.exists():
            raise FileNotFoundError(f"dataset file not found: {path}")
        views = _convert_raw_file(str(path), prompt_template, pair_strategy, seed)
        return views.get(view)
    try:
        return datasets.load_dataset(dataset_name, view)
    except ValueError:  # the Hub dataset has no such config
        return None


@functools.lru_cache(maxsize=4)
def _convert_raw_file(path: str, prompt_template: str, pair_strategy: str, seed: int) -> dict:
    """All views of a raw ranked file, converted once per run by the same code as data_prep (skipping invalid posts)."""
    from commentrank.data.prepare import PrepConfig, prepare_views

    config = PrepConfig(
        inputs=[path], prompt_template=prompt_template, pair_strategy=pair_strategy, seed=seed, skip_invalid=True
    )
    views, summary = prepare_views(config)
    logger.info("converted %s on the fly:\n%s", path, summary.format())
    return views


def tokenize_pairs(dataset: datasets.Dataset, encoder: PairEncoder, keep_margin: bool = False) -> tuple:
    """Add `chosen_ids`/`rejected_ids` (truncated, never dropped) so RewardTrainer skips its own processing.

    Returns the tokenized dataset and a count of truncated chosen and rejected inputs.
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
        "dropped": 0,
    }
    return tokenized.remove_columns(["chosen_truncated", "rejected_truncated"]), counts
