"""Saving that loses nothing and leaks nothing, and resuming that never trusts a half-written checkpoint.

- `SafeSavingMixin` (for any transformers Trainer): each saved model folder, checkpoints included, gets the training
  arguments as `training_args.json` without tokens instead of the pickled `training_args.bin` (which holds
  `hub_token` in plain text), and the encoder settings as `commentrank_config.json`.
- `last_complete_checkpoint`: the newest checkpoint whose files are all there. The Trainer writes a checkpoint's
  `trainer_state.json` last, so a kill at any moment leaves the newest complete checkpoint complete and the one being
  written detectably incomplete (it is skipped with a warning naming it, and written again by the resumed run).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from commentrank.io_utils import atomic_write_text

logger = logging.getLogger(__name__)

TRAINING_ARGS_JSON = "training_args.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "pytorch_model.bin")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class SafeSavingMixin:
    """Mix into a Trainer before it: `class T(SafeSavingMixin, RewardTrainer)`. `encoder_settings` (an
    `EncoderSettings` or None) is saved next to every saved model."""

    encoder_settings = None

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        from transformers.trainer import TRAINING_ARGS_NAME

        super()._save(output_dir, state_dict=state_dict)
        folder = Path(output_dir or self.args.output_dir)
        (folder / TRAINING_ARGS_NAME).unlink(missing_ok=True)  # a pickle, with the token: never kept
        atomic_write_text(folder / TRAINING_ARGS_JSON, self.args.to_json_string())  # tokens redacted by transformers
        if self.encoder_settings is not None:
            self.encoder_settings.save(folder)


def checkpoint_problem(folder: str | os.PathLike, needs_optimizer: bool = True) -> str | None:
    """Why a checkpoint folder cannot be resumed from (None: it is complete)."""
    folder = Path(folder)
    try:
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no trainer_state.json"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "a half-written trainer_state.json"
    if not isinstance(state, dict) or "global_step" not in state:
        return "trainer_state.json without global_step"
    if (folder / "latest").is_file() and any(folder.glob("global_step*")):
        return None  # DeepSpeed: weights and optimizer states in global_step*/, `latest` written when they are
    weights = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not weights or any(path.stat().st_size == 0 for path in weights):
        return "no model weights" if not weights else f"an empty {weights[0].name}"
    if needs_optimizer:
        optimizer = folder / "optimizer.pt"
        if not optimizer.is_file() or optimizer.stat().st_size == 0:
            return "no optimizer state" if not optimizer.is_file() else "an empty optimizer.pt"
    return None


def last_complete_checkpoint(output_dir: str | os.PathLike, needs_optimizer: bool = True) -> str | None:
    """The newest `checkpoint-N` in `output_dir` that is complete; newer incomplete ones are skipped with a warning."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    steps = sorted(
        (int(m.group(1)), path) for path in folder.iterdir() if path.is_dir() and (m := _CHECKPOINT.match(path.name))
    )
    for _, path in reversed(steps):
        problem = checkpoint_problem(path, needs_optimizer)
        if problem is None:
            return str(path)
        logger.warning("skipping the incomplete checkpoint %s (%s): it will be written again", path, problem)
    return None
