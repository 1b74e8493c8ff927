"""A reward model ready to score: the model and the `PairEncoder` built from the encoder settings it was trained with.

The training script writes `commentrank_config.json` (`EncoderSettings`) next to the model; `load_scorer` reads it
back so that scoring encodes inputs exactly as training did.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from commentrank.configs import ENCODER_SETTINGS_FILE, EncoderSettings
from commentrank.encoding import PairEncoder
from commentrank.inference import score_posts
from commentrank.io_utils import is_hub_id, redact
from commentrank.outputs import check_finished
from commentrank.score.exported import onnx_file_of

logger = logging.getLogger(__name__)


@dataclass
class Scorer:
    """A reward model with its encoder (`encoder.tokenizer`, `encoder.settings`: how inputs were encoded)."""

    model: torch.nn.Module
    encoder: PairEncoder
    dtype: str = "float32"
    dtype_reason: str = "as asked"
    settings_saved: bool = True  # False: the model has no commentrank_config.json, the defaults are used

    @property
    def settings(self) -> EncoderSettings:
        return self.encoder.settings

    def score(self, posts: Sequence[dict], batch_size: int = 32, progress: bool = False, shard=(0, 1)):
        """`score_posts` with this model: (rewards per post, number of truncated inputs)."""
        return score_posts(self.model, self.encoder, posts, batch_size, progress, shard)

    def rank(self, prompt: str, comments: Sequence[str], batch_size: int = 32) -> list[tuple[int, float]]:
        """(index, reward) of each comment, best first."""
        (rewards,), _ = self.score([{"prompt": prompt, "comments": list(comments)}], batch_size)
        return sorted(enumerate(rewards), key=lambda item: -item[1])


def _check_model_source(model_path: str) -> None:
    path = Path(model_path)
    if path.is_dir():
        check_finished(path)
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
    dtype: str = "auto",
    allow_pickle: bool = False,
    onnx_file: str | None = None,
) -> Scorer:
    """Model and encoder of a reward model folder or Hub id, with the encoder settings saved next to it
    (`max_length` overrides the saved one; a length beyond what the model takes is lowered to it).

    `dtype` "auto" picks bfloat16 where the hardware has it (`modeling.choose_dtype`), else float32. A folder written
    by scripts/export.py runs on onnxruntime (`model.onnx`, or `onnx_file`). Clear errors for a missing model, a
    checkpoint without a single-logit head and a multi-label classifier.
    """
    from transformers import AutoConfig

    from commentrank.modeling import choose_dtype, load_reward_model, load_tokenizer

    model_path = str(model_path)
    _check_model_source(model_path)
    try:
        config = AutoConfig.from_pretrained(model_path)
    except OSError as err:
        raise FileNotFoundError(
            f"model not found: {model_path} is neither a local folder nor a Hub model that could be reached "
            f"({redact(str(err).splitlines()[0]) if str(err) else type(err).__name__})"
        ) from None
    check_reward_head(config, model_path)
    saved = EncoderSettings.saved_with(model_path)
    if saved is None:
        logger.warning("%s has no %s: default encoder settings", model_path, ENCODER_SETTINGS_FILE)
    settings = saved or EncoderSettings()
    if max_length:
        settings = settings.replace(max_length=max_length)
        if settings.min_comment_tokens >= max_length:
            logger.warning("max_length %d is not above the model's min_comment_tokens %d: a long comment takes every "
                           "token and its post is left out of the input", max_length,
                           settings.min_comment_tokens)  # fmt: skip
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = load_tokenizer(model_path, pad_at_eos=settings.pad_at_eos)
    exported = onnx_file_of(model_path, onnx_file)
    if exported is not None:
        from commentrank.score.exported import OnnxRewardModel

        model, dtype, why = OnnxRewardModel(exported), exported.name, "an exported model, on onnxruntime"
    else:
        dtype, why = choose_dtype(dtype, str(device))
        model = load_reward_model(model_path, tokenizer, dtype=dtype, allow_pickle=allow_pickle)
        model.to(device).eval()
    return Scorer(model, PairEncoder(tokenizer, settings, model=model), dtype, why, saved is not None)
