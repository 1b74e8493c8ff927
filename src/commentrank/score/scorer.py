"""A reward model ready to score: the model, its tokenizer and the encoder settings it was trained with.

The training script writes `commentrank_config.json` next to the model (how inputs were encoded: length, separator,
truncation, prompt template); loading here reads it back so that scoring encodes inputs the same way.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from commentrank.encoding import PairEncoder
from commentrank.io_utils import is_hub_id
from commentrank.score.inference import score_posts

logger = logging.getLogger(__name__)

encoder_settings_path = "commentrank_config.json"
DEFAULT_ENCODER_SETTINGS = {
    "max_length": 512,
    "separator": "\n\n",
    "min_comment_tokens": 64,
    "truncation_side": "right",
    "text_prefix": "",
    "prompt_template": "{title}",
    "pad_at_eos": True,
}


def save_encoder_settings(output_dir: str | os.PathLike, **settings) -> Path:
    """Write `commentrank_config.json` (the defaults completed by `settings`) into a model folder, atomically."""
    from commentrank.io_utils import atomic_write_text

    unknown = set(settings) - set(DEFAULT_ENCODER_SETTINGS)
    if unknown:
        logger.info("encoder settings: keeping extra keys %s", sorted(unknown))
    values = {**DEFAULT_ENCODER_SETTINGS, **{k: v for k, v in settings.items() if v is not None}}
    path = Path(output_dir) / encoder_settings_path
    atomic_write_text(path, json.dumps(values, indent=2) + "\n")
    return path


def _settings_file(model_dir_or_id: str) -> Path | None:
    """The settings file of a local folder, or of a Hub model (downloaded or cached); None when there is none."""
    local = Path(model_dir_or_id)
    if local.is_dir():
        path = local / encoder_settings_path
        return path if path.is_file() else None
    if not is_hub_id(str(model_dir_or_id)):
        return None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(str(model_dir_or_id), encoder_settings_path))
    except Exception as err:  # not on the Hub, offline, or no such file: the defaults apply
        logger.info(
            "no %s for %s (%s): default encoder settings", encoder_settings_path, model_dir_or_id, type(err).__name__
        )
        return None


def read_encoder_settings(model_dir_or_id: str | os.PathLike) -> dict:
    """The encoder settings saved with a model, completed with the defaults (the defaults alone when none saved)."""
    path = _settings_file(str(model_dir_or_id))
    if path is None:
        return dict(DEFAULT_ENCODER_SETTINGS)
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: expected a JSON object of encoder settings, got {type(saved).__name__}")
    return {**DEFAULT_ENCODER_SETTINGS, **{k: v for k, v in saved.items() if v is not None}}


def _model_max_positions(tokenizer, model=None) -> int | None:
    limits = []
    if 0 < getattr(tokenizer, "model_max_length", 0) < 100_000:
        limits.append(int(tokenizer.model_max_length))
    config = getattr(model, "config", None)
    if getattr(config, "max_position_embeddings", None):
        limits.append(int(config.max_position_embeddings))
    return min(limits) if limits else None


def load_encoder(
    model_dir_or_id: str | os.PathLike, tokenizer, max_length: int | None = None, model=None, settings=None
) -> PairEncoder:
    """A `PairEncoder` built from the model's `commentrank_config.json` (defaults when absent; `settings` when
    already read); `max_length` overrides the saved one. A length beyond what the model can embed is lowered."""
    settings = settings if settings is not None else read_encoder_settings(model_dir_or_id)
    length = int(max_length or settings["max_length"] or DEFAULT_ENCODER_SETTINGS["max_length"])
    limit = _model_max_positions(tokenizer, model)
    if limit is not None and length > limit:
        logger.warning("max_length %d is more than the model takes (%d): using %d", length, limit, limit)
        length = limit
    return PairEncoder.from_settings(tokenizer, {**settings, "max_length": length})


@dataclass
class Scorer:
    """A reward model ready to score: model, tokenizer, encoder and the encoder settings it was trained with."""

    model: torch.nn.Module
    tokenizer: object
    encoder: PairEncoder
    settings: dict = field(default_factory=dict)
    name_or_path: str = ""

    def score(self, posts: Sequence[dict], batch_size: int = 32, progress: bool = False):
        """`score_posts` with this model: (rewards per post, number of truncated inputs)."""
        return score_posts(self.model, self.encoder, posts, batch_size, progress)

    def rank(self, prompt: str, comments: Sequence[str], batch_size: int = 32) -> list[tuple[int, float]]:
        """(index, reward) of each comment, best first."""
        (rewards,), _ = self.score([{"prompt": prompt, "comments": list(comments)}], batch_size)
        return sorted(enumerate(rewards), key=lambda item: -item[1])


def _check_model_source(model_path: str) -> None:
    path = Path(model_path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model folder {model_path} has no config.json: not a saved model")
        return
    if path.exists():
        raise FileNotFoundError(f"model {model_path} is a file: pass the folder of a saved model or a Hub model id")
    if not is_hub_id(model_path):
        raise FileNotFoundError(f"model not found: {model_path} (no such folder)")


def check_reward_head(config, name: str) -> None:
    """Refuse checkpoints without a one-label sequence-classification head (their scores would be random)."""
    from commentrank.modeling import check_num_labels, is_classifier

    check_num_labels(config, name)
    if not is_classifier(config):
        raise ValueError(
            f"{name} has no reward head (architectures: {getattr(config, 'architectures', None) or 'unknown'}): a new "
            "one would score at random. Train a reward model with scripts/reward.py"
        )


def load_scorer(
    model_path: str | os.PathLike,
    max_length: int | None = None,
    device: str | torch.device | None = None,
    dtype: str = "float32",
    settings: dict | None = None,
) -> Scorer:
    """Model, tokenizer and encoder of a reward model folder or Hub id, with the encoder settings saved next to it
    (`settings`: those already read with `read_encoder_settings`).

    Clear errors for a missing model, a checkpoint without a single-logit head and a multi-label classifier.
    """
    from transformers import AutoConfig

    from commentrank.modeling import load_reward_model, load_tokenizer

    model_path = str(model_path)
    _check_model_source(model_path)
    try:
        config = AutoConfig.from_pretrained(model_path)
    except OSError as err:
        raise FileNotFoundError(
            f"model not found: {model_path} is neither a local folder nor a Hub model available offline "
            f"({str(err).splitlines()[0] if str(err) else type(err).__name__})"
        ) from None
    check_reward_head(config, model_path)
    settings = dict(settings) if settings is not None else read_encoder_settings(model_path)
    tokenizer = load_tokenizer(model_path, pad_at_eos=bool(settings["pad_at_eos"]))
    model = load_reward_model(model_path, tokenizer, dtype=dtype)
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    encoder = load_encoder(model_path, tokenizer, max_length, model, settings)
    settings["max_length"] = encoder.max_length
    return Scorer(model, tokenizer, encoder, settings, model_path)
