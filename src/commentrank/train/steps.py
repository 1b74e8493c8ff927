"""The steps `scripts/reward.py` and `scripts/sft.py` share: data, subsets, resuming, the Hub repo and the one push."""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import logging
import os
import shutil
from pathlib import Path

import datasets

from commentrank import outputs
from commentrank.configs import TrainingScriptArguments
from commentrank.data.loading import RankedData, open_ranked_data
from commentrank.io_utils import atomic_write_text, usual_permissions
from commentrank.outputs import OutputDirError, check_output_dir, read_marker
from commentrank.train.checkpoints import WEIGHT_FILES, checkpoint_problem, last_complete_checkpoint

logger = logging.getLogger(__name__)


def open_training_data(script_args: TrainingScriptArguments, **template) -> RankedData:
    """The script's dataset (a data_prep folder, raw ranked file or Hub dataset), its prompt template settled: the one
    the data was built with (an explicit `prompt_template` that disagrees is an error). `template`: another
    `prompt_template` (and its `asked_by`) than the script's, e.g. a reward model's (`policy.reward_template`). The
    training seed plays no part: a raw file is split with data_prep's default seed (`loading.open_ranked_data`)."""
    options = {"prompt_template": script_args.prompt_template, **template}
    return open_ranked_data(
        script_args.dataset_name, pair_strategy=script_args.pair_strategy, skip_invalid=script_args.skip_invalid,
        hub_config=script_args.dataset_config, **options,
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
    weights_only = checkpoint is not None and checkpoint_problem(checkpoint, needs_optimizer=False) is None
    if weights_only and checkpoint_problem(checkpoint) is not None:
        logger.warning("%s holds no optimizer state (save_only_model): training goes on from its weights with a "
                       "fresh optimizer and learning-rate schedule, not as the uninterrupted run would",
                       checkpoint)  # fmt: skip
    if checkpoint is None:
        checkpoint = last_complete_checkpoint(
            training_args.output_dir, needs_optimizer=not training_args.save_only_model
        )
        if checkpoint:
            logger.info("resuming from %s", checkpoint)
    return checkpoint


# The settings that decide what a training run produces. Recorded in the output folder's marker when training starts:
# a run whose settings differ from those recorded is refused, naming each difference (resuming would mix two runs),
# and a finished run re-run is a no-op. Every field that commentrank's own configs declare (RewardArguments,
# ListwiseRewardConfig, SFTArguments, TextFormat ...) is one, a new field included, unless NOT_RUN_SETTINGS names it;
# the fields of TRL's and transformers' configs that are one are listed in TRL_RUN_SETTINGS (by the arguments object
# that holds them). Left out: logging, saving, evaluation and Hub options, batch sizes of evaluation, the number of
# processes, and options that change how fast a run goes but not what it computes.
NOT_RUN_SETTINGS = ("overwrite_output", "allow_pickle_weights", "dataset_test_split", "max_eval_samples",
                    "ndcg_eval_posts", "length_sorted_forward", "reward_batch_size",
                    # GRPO's before/after report on held-out posts: not part of the policy it trains
                    "report_split", "report_posts", "report_max_new_tokens", "report_batch_size",
                    "n_bootstrap")  # fmt: skip
TRL_RUN_SETTINGS = {
    "model": ("model_name_or_path", "model_revision", "dtype", "use_peft", "lora_r", "lora_alpha", "lora_dropout",
              "lora_target_modules", "load_in_8bit", "load_in_4bit"),
    "script": ("dataset_train_split",),
    "training": ("max_length", "learning_rate", "num_train_epochs", "max_steps", "seed", "data_seed",
                 "per_device_train_batch_size", "gradient_accumulation_steps", "weight_decay", "warmup_steps",
                 "lr_scheduler_type", "optim", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm",
                 "center_rewards_coefficient", "packing", "completion_only_loss", "assistant_only_loss",
                 "dataset_text_field", "bf16", "fp16"),
}  # fmt: skip


def commentrank_fields(obj) -> list[str]:
    """The fields of a dataclass (instance or class) that commentrank's own classes declare (TRL's not)."""
    cls = obj if isinstance(obj, type) else type(obj)
    ours = {name for base in cls.__mro__ if base.__module__.split(".")[0] == "commentrank"
            for name in inspect.get_annotations(base)}  # fmt: skip
    return [f.name for f in dataclasses.fields(cls) if f.name in ours]


def run_setting_names(source: str, obj) -> list[str]:
    """The names of the run settings `obj` (the script's `source` arguments: model, script or training) holds."""
    ours = [name for name in commentrank_fields(obj) if name not in NOT_RUN_SETTINGS]
    return [*ours, *(name for name in TRL_RUN_SETTINGS[source] if name not in ours and hasattr(obj, name))]


TRAINING_ENTRY_PATTERNS = ["checkpoint-*", "runs"]  # written as training goes: ours, whatever the list says
# written in place by the Trainer (TRL: the card, at each checkpoint): registered when the run starts
IN_PLACE_FILES = ["README.md", "train_results.json", "eval_results.json", "all_results.json", "trainer_state.json"]


def run_settings(script_args, training_args, model_args) -> dict:
    """The values of this run's settings (`run_setting_names`), as JSON values (local paths normalized)."""
    values = {}
    for source, args in (("model", model_args), ("script", script_args), ("training", training_args)):
        for name in run_setting_names(source, args):
            value = getattr(args, name)
            if isinstance(value, enum.Enum):
                value = value.value
            if name in ("model_name_or_path", "dataset_name") and isinstance(value, str) and os.path.exists(value):
                value = os.path.normpath(value)
            values[name] = value
    return json.loads(json.dumps(values, default=str))


def settings_changes(recorded: dict, settings: dict) -> list[str]:
    """`name old -> new` for every setting that differs (one that only one side records included)."""
    missing = "(unset)"
    return [f"{name} {json.dumps(recorded.get(name, missing))} -> {json.dumps(settings.get(name, missing))}"
            for name in sorted(set(recorded) | set(settings))
            if recorded.get(name, missing) != settings.get(name, missing)]  # fmt: skip


def space_needed(model_name_or_path: str) -> int:
    """About the disk space a training run needs: a checkpoint (the weights and Adam's two moments) and the final
    model, from the size of the base model's weights; the generic minimum for a Hub id."""
    folder = Path(model_name_or_path)
    weights = sum((folder / name).stat().st_size for name in WEIGHT_FILES if (folder / name).is_file())
    weights += sum(p.stat().st_size for p in folder.glob("model-*.safetensors")) if folder.is_dir() else 0
    return max(outputs.MIN_FREE_BYTES, 4 * weights)


def check_training_output(training_args, kind: str, inputs, overwrite: bool, settings: dict) -> bool:
    """Whether this run may train into its output folder, said before any work (nothing is written); False when the
    folder already holds this run, finished (said in the log: nothing to do).

    Absent or empty: yes. An earlier run of this `kind` with the same `settings`: yes, to resume it (from its last
    complete checkpoint). One with other settings that made progress (a checkpoint, or finished): refused, naming each
    difference, unless `overwrite` (`claim_training_output` then removes its entries, the folder's other files kept);
    one without progress is taken over. Never an input, a folder inside one, files commentrank did not write, or a
    location without room (`outputs.check_output_dir`)."""
    out = training_args.output_dir
    marker = read_marker(out)
    check_output_dir(out, kind, inputs=inputs, overwrite=overwrite, entries=IN_PLACE_FILES,
                     min_free_bytes=space_needed(settings.get("model_name_or_path", "")))  # fmt: skip
    if marker is None or marker["kind"] != kind or overwrite:
        return True
    if not (marker.get("finished") or any(Path(out).glob("checkpoint-*"))):
        return True  # nothing to resume: taken over
    recorded = marker.get("run")
    if not isinstance(recorded, dict):
        raise OutputDirError(
            f"output_dir {out} holds a {kind} run of an older commentrank that did not record its settings: "
            "choose another folder, or pass --overwrite_output true to replace it"
        )
    changes = settings_changes(recorded, settings)
    if changes:
        raise OutputDirError(
            f"output_dir {out} holds another training run ({'; '.join(changes)}): choose another folder, "
            "or pass --overwrite_output true to replace it"
        )
    if marker.get("finished"):
        logger.warning("output_dir %s already holds this run, finished: nothing to do (pass --overwrite_output true "
                       "to train it again)", out)  # fmt: skip
        return False
    weights_only = last_complete_checkpoint(out, needs_optimizer=False) if training_args.save_only_model else None
    if weights_only and training_args.resume_from_checkpoint is None:
        raise OutputDirError(
            f"output_dir {out} holds an unfinished run whose checkpoints were saved with save_only_model (weights "
            "only: no optimizer, learning-rate schedule or random state), which cannot go on as if uninterrupted: "
            f"pass --resume_from_checkpoint {weights_only} to go on from its weights with a fresh optimizer and "
            "schedule, or --overwrite_output true to train again"
        )
    return True


def claim_training_output(training_args, kind: str, inputs, overwrite: bool, settings: dict) -> None:
    """Just before training: checked again (`check_training_output`), the folder becomes this run's, its settings
    recorded in the marker (with `overwrite`, the earlier run's entries removed first, a user's files kept). The main
    process writes first, the others check after it."""
    out = training_args.output_dir
    with training_args.main_process_first(local=False, desc="claiming the output folder"):
        check_training_output(training_args, kind, inputs, overwrite, settings)
        if training_args.process_index != 0 or (read_marker(out) or {}).get("run") == settings and not overwrite:
            return
        if overwrite and read_marker(out) is not None:
            outputs.remove_entries(out)  # the earlier run's entries, the folder's other files kept
        outputs.claim_output_dir(out, kind, inputs=inputs, overwrite=overwrite, run=settings, finished=False,
                                 entry_patterns=TRAINING_ENTRY_PATTERNS, extra_entries=IN_PLACE_FILES)  # fmt: skip


def save_final(trainer, kind: str, settings: dict, write_files=None) -> None:
    """The final model (`trainer.save_model`) and the files `write_files(folder)` adds (card, summaries), saved into
    a temporary folder beside `output_dir` (named with the main process's id) and moved in at once, registered in
    the marker first; the run is then marked finished. A kill or a full disk while saving leaves the folder as the
    last checkpoint left it (and the temporary folder, which the next run removes): never a model without weights."""
    from accelerate.utils import broadcast_object_list

    out = Path(trainer.args.output_dir)
    name = [str(out.with_name(f".{out.name}.tmp-{os.getpid()}-final"))]
    if trainer.accelerator.num_processes > 1:
        broadcast_object_list(name)  # every process saves its part into the main process's folder
    staging = Path(name[0])
    try:
        trainer.save_model(str(staging))
        if trainer.accelerator.is_main_process:
            for weights in staging.glob("*.safetensors"):
                usual_permissions(weights)  # readable as every other file of the folder (transformers: owner only)
            if write_files is not None:
                write_files(staging)
            outputs.install_entries(staging, out, kind, replace_all=False, run=settings, finished=True,
                            entry_patterns=TRAINING_ENTRY_PATTERNS)  # fmt: skip
    finally:
        if trainer.accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()


def take_hub_push(training_args) -> str | None:
    """The repo to push to once at the end (`hub_model_id`, else the output folder's name), or None; its token is
    checked now, before any work (a HubError without one). The Trainer's own push is turned off, as it would upload
    every checkpoint."""
    from commentrank.hub import hub_token, repo_name_for

    repo = repo_name_for(training_args.output_dir, training_args.hub_model_id) if training_args.push_to_hub else None
    if repo is not None:
        hub_token(repo, training_args.hub_token, "--hub_token")
    training_args.push_to_hub = False
    return repo


def push_final(training_args, repo: str | None, commit_message: str) -> None:
    """Push the finished output folder to `repo` (None: no push), from the main process: at the end of a run, or when
    a rerun finds the run finished (a push that failed, retried)."""
    from commentrank.hub import push_model_folder

    if repo is not None and training_args.process_index == 0:
        push_model_folder(training_args.output_dir, repo, private=bool(training_args.hub_private_repo),
                          commit_message=commit_message, token=training_args.hub_token,
                          token_flag="--hub_token")  # fmt: skip


def write_json(folder: str, name: str, values: dict) -> None:
    atomic_write_text(os.path.join(folder, name), json.dumps(values, indent=2) + "\n")
