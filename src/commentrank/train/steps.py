"""The steps `scripts/reward.py` and `scripts/sft.py` share: data, subsets, resuming, the Hub repo and the one push."""

from __future__ import annotations

import json
import logging
import os

import datasets

from commentrank.configs import TrainingScriptArguments
from commentrank.data.loading import RankedData, open_ranked_data
from commentrank.io_utils import atomic_write_text
from commentrank.outputs import check_output_dir, claim_output_dir
from commentrank.train.checkpoints import last_complete_checkpoint

logger = logging.getLogger(__name__)


def open_training_data(script_args: TrainingScriptArguments, seed: int) -> RankedData:
    """The script's dataset (a data_prep folder, raw ranked file or Hub dataset), its prompt template settled: the one
    the data was built with (an explicit `prompt_template` that disagrees is an error)."""
    return open_ranked_data(
        script_args.dataset_name, prompt_template=script_args.prompt_template, pair_strategy=script_args.pair_strategy,
        seed=seed, skip_invalid=script_args.skip_invalid, hub_config=script_args.dataset_config,
    )  # fmt: skip


def split_of(view: datasets.DatasetDict, split: str, source: str) -> datasets.Dataset:
    if split not in view:
        raise ValueError(f"{source} has no split '{split}' (splits: {', '.join(map(str, view))})")
    return view[split]


def subset(dataset: datasets.Dataset, n: int | None, seed: int | None = None) -> datasets.Dataset:
    """The first `n` rows (of a shuffle with `seed` when given); the whole dataset when `n` is None or too large."""
    if n is None or n >= len(dataset):
        return dataset
    return (dataset.shuffle(seed=seed) if seed is not None else dataset).select(range(n))


def checkpoint_to_resume(training_args) -> str | None:
    """`resume_from_checkpoint`, else the last complete checkpoint in `output_dir` (newer incomplete ones, left by a
    kill while saving, are skipped with a warning): a killed run resumes with the same command."""
    checkpoint = training_args.resume_from_checkpoint
    if checkpoint is None:
        checkpoint = last_complete_checkpoint(
            training_args.output_dir, needs_optimizer=not training_args.save_only_model
        )
        if checkpoint:
            logger.info("resuming from %s", checkpoint)
    return checkpoint


def claim_training_output(training_args, kind: str, inputs, overwrite: bool) -> None:
    """The output folder is ours before training writes into it: absent, empty, or an earlier run of this `kind` (to
    resume); never an input or a folder of files commentrank did not write. Marked by the main process."""
    check_output_dir(training_args.output_dir, kind, inputs=inputs, overwrite=overwrite)
    if training_args.process_index == 0:
        claim_output_dir(training_args.output_dir, kind, inputs=inputs, overwrite=overwrite)


def take_hub_push(training_args) -> str | None:
    """The repo to push to once at the end (`hub_model_id`, else the output folder's name), or None; the Trainer's
    own push is turned off, as it would upload every checkpoint."""
    from commentrank.hub import repo_name_for

    repo = repo_name_for(training_args.output_dir, training_args.hub_model_id) if training_args.push_to_hub else None
    training_args.push_to_hub = False
    return repo


def write_json(folder: str, name: str, values: dict) -> None:
    atomic_write_text(os.path.join(folder, name), json.dumps(values, indent=2) + "\n")
