"""A commentrank reward model as a reward function for TRL's online trainers (GRPOTrainer, RLOOTrainer).

    from commentrank import RewardFunction
    reward = RewardFunction("outputs/quickstart/reward")
    trainer = GRPOTrainer(model=policy, reward_funcs=reward, train_dataset=prompts, ...)

Why not `reward_funcs=<the model>`: TRL calls a reward *model* with `tokenizer(prompt + completion,
add_special_tokens=False)`, so an encoder never sees its [CLS]/[SEP] or segment ids, a decoder loses its separator and
EOS, and the length term of `commentrank_config.json` is dropped: the rewards are not the ones the model was trained
to give. A `RewardFunction` is a plain callable (not a `torch.nn.Module`, so TRL calls it with the texts) that encodes
each (post, comment) with the scorer's `PairEncoder` and adds the length term, exactly as `scripts/score.py` does.

The post: TRL passes every dataset column to the function, so a `post` column (the post's prompt as the reward model
was trained on it, e.g. data_prep's `prompt`) is used when the dataset has one; otherwise the policy's prompt itself
(its last user message for conversational prompts).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch

from commentrank.inference import score_ids
from commentrank.length import add_length_term, length_feature
from commentrank.score.scorer import Scorer, load_scorer

_EXPECTED = "a string or a list of messages ({'role': ..., 'content': ...})"


def prompt_text(prompt, index: int = 0) -> str:
    """The post of a prompt: a plain string, or of a conversational prompt (TRL's `[{"role": ..., "content": ...}]`,
    few-shot examples and a system message included) its last user message. `index`: the prompt's, for errors."""
    return _role_texts(prompt, f"prompt {index}", "user", "the post is the prompt's last user message")[-1]


def completion_text(completion, index: int = 0) -> str:
    """The comment of a completion: a plain string, or of a conversational completion its assistant message(s),
    joined. `index`: the completion's, for errors."""
    return "".join(_role_texts(completion, f"completion {index}", "assistant", "the comment is the assistant's text"))


def _role_texts(value, item: str, role: str, why: str) -> list[str]:
    """The texts of the `role` messages of a conversational `value` (a plain string: itself); a ValueError naming
    `item` when it has none (`why`: what that role's text is)."""
    if isinstance(value, str):
        return [value]
    texts = [_content_text(at, m, item) for at, m in enumerate(_messages(value, item)) if m.get("role") == role]
    if not texts:
        raise ValueError(f"{item}: no {role} message ({why})")
    return texts


def _messages(value, item: str) -> list[dict]:
    """A conversational prompt or completion as its list of messages (a message alone: a list of one); a ValueError
    naming the item and what was expected otherwise."""
    messages = [value] if isinstance(value, dict) else value
    if not isinstance(messages, (list, tuple)):
        got = "None" if value is None else type(value).__name__
        raise ValueError(f"{item}: expected {_EXPECTED}, got {got}")
    for message in messages:
        if not isinstance(message, dict):
            raise ValueError(f"{item}: expected {_EXPECTED}, got a list holding {type(message).__name__}")
    return list(messages)


def _content_text(at: int, message: dict, item: str) -> str:
    """The text of message `at` of `item`: its content, a string or blocks (`[{"type": "text", "text": ...}]`: their
    texts joined; other blocks, e.g. images, have none)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)) and all(isinstance(block, dict) for block in content):
        return "".join(block["text"] for block in content if isinstance(block.get("text"), str))
    got = "None" if content is None else f"of type {type(content).__name__}"
    raise ValueError(f"{item}: message {at}'s content is {got} (expected a string or a list of text blocks)")


def _state_device() -> torch.device | None:
    """The device of this process under accelerate (the trainer's: its GPU, or the CPU with use_cpu), once a trainer
    or `PartialState` has set it up; None before (it is never set up from here: that would fix it for the trainer)."""
    from accelerate.state import PartialState

    return PartialState().device if PartialState._shared_state else None


def _clip_bounds(clip) -> tuple[float, float] | None:
    if clip is None:
        return None
    if isinstance(clip, (int, float)):
        if clip <= 0:
            raise ValueError(f"clip must be positive (rewards clipped to [-clip, clip]), got {clip}")
        return -float(clip), float(clip)
    low, high = (float(x) for x in clip)
    if not low < high:
        raise ValueError(f"clip (low, high) needs low < high, got {clip}")
    return low, high


class RewardFunction:
    """`reward(prompts, completions, **kwargs) -> list[float]`, the signature of TRL's `reward_funcs` callables.

    Args:
        model_or_path: a reward model folder or Hub id (loaded with `load_scorer`), or a `Scorer`.
        length_free: return the model's own part only, without the length term of `commentrank_config.json`
            (`length_weight * log1p(characters)`): the reward a longer comment cannot raise through that term.
        length_penalty: subtract `length_penalty * log1p(characters of the completion)`: the same log-length feature
            as the model's length term, so that `length_penalty = settings.length_weight` gives the length-free
            reward and a larger one makes every extra character cost (diminishing: doubling a comment costs
            `length_penalty * log 2`). Log-length rather than per character: the reward model's own length signal
            is logarithmic, and a per-character cost would dwarf every reward difference for long comments.
        clip: a number c (rewards clipped to [-c, c]) or (low, high); after the penalty.
        post_column: the dataset column holding each post's prompt for the reward model.
        batch_size: inputs per forward pass (length-sorted batches, dynamic padding, as `scripts/score.py`).
        device: "auto" (default): the trainer's device, read from accelerate's state at each call (the model moves
            there on first use); or a device name.
        dtype: "auto": the scorer's choice (`modeling.choose_dtype`: bfloat16 where the hardware has it); float32 for
            rewards equal to float32 scoring.
        max_length: tokens per input (default: the model's own).
        allow_pickle: load a reward model whose weights are only a pickle (`--allow_pickle_weights`).
    """

    def __init__(
        self,
        model_or_path: str | os.PathLike | Scorer,
        *,
        length_free: bool = False,
        length_penalty: float = 0.0,
        clip: float | Sequence[float] | None = None,
        post_column: str = "post",
        batch_size: int = 32,
        device: str | torch.device = "auto",
        dtype: str = "auto",
        max_length: int | None = None,
        allow_pickle: bool = False,
    ):
        if length_penalty < 0:
            raise ValueError(f"length_penalty must be >= 0 (it is subtracted), got {length_penalty}")
        self.device = device
        if isinstance(model_or_path, Scorer):
            self.scorer = model_or_path
        else:
            # Loaded on the CPU (a trainer may not have set up its device yet) in the dtype its device gets; moved to
            # the trainer's device on first use.
            if device == "auto":
                device_for_dtype = _state_device() or ("cuda" if torch.cuda.is_available() else "cpu")
            else:
                device_for_dtype = device
            from commentrank.modeling import choose_dtype

            dtype, _ = choose_dtype(dtype, str(device_for_dtype))
            self.scorer = load_scorer(model_or_path, max_length=max_length, device="cpu", dtype=dtype,
                                      allow_pickle=allow_pickle)  # fmt: skip
        self.length_free = length_free
        self.length_penalty = float(length_penalty)
        self.clip = _clip_bounds(clip)
        self.post_column = post_column
        self.batch_size = batch_size
        self.__name__ = "commentrank"  # the name TRL logs the reward under (rewards/commentrank/mean)

    @property
    def settings(self):
        return self.scorer.settings

    def _target_device(self) -> torch.device:
        if self.device != "auto":
            return torch.device(self.device)
        return _state_device() or torch.device("cpu")

    def _model_on_device(self) -> torch.nn.Module:
        model = self.scorer.model
        params = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
        if params is not None:
            target = self._target_device()
            if params.device != target:
                model.to(target)
        return model

    def model_rewards(self, posts: Sequence[str], comments: Sequence[str]) -> list[float]:
        """The reward model's rewards for aligned (post, comment) texts, with its length term unless `length_free`:
        what `scripts/score.py` gives (without the shaping of `__call__`)."""
        encoder = self.scorer.encoder
        encoded = encoder.encode(list(posts), list(comments))
        model = self._model_on_device()
        raw = score_ids(model, encoded.input_ids, encoder.tokenizer.pad_token_id, self.batch_size,
                        segment_sep_id=encoder.segment_sep_id)  # fmt: skip
        weight = 0.0 if self.length_free else self.settings.length_weight
        return add_length_term(raw, list(comments), weight)

    def shape(self, rewards: Sequence[float], comments: Sequence[str]) -> list[float]:
        """The length penalty and the clip applied to rewards of `comments`."""
        out = list(rewards)
        if self.length_penalty:
            out = [r - self.length_penalty * n for r, n in zip(out, length_feature(comments), strict=True)]
        if self.clip is not None:
            low, high = self.clip
            out = [min(max(r, low), high) for r in out]
        return out

    def __call__(self, prompts=None, completions=None, completion_ids=None, **kwargs) -> list[float]:
        if completions is None:
            raise ValueError("RewardFunction needs the completions (TRL passes prompts= and completions=)")
        comments = [completion_text(c, i) for i, c in enumerate(completions)]
        posts = kwargs.get(self.post_column)
        if posts is None:
            if prompts is None:
                raise ValueError(f"RewardFunction needs the prompts, or a '{self.post_column}' column")
            posts = [prompt_text(p, i) for i, p in enumerate(prompts)]
        if len(posts) != len(comments):
            raise ValueError(f"{len(posts)} posts for {len(comments)} completions")
        rewards = self.shape(self.model_rewards(posts, comments), comments)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and comments:
            log_metric("commentrank/completion_chars", sum(len(c) for c in comments) / len(comments))
        return [r if math.isfinite(r) else None for r in rewards]

    def __repr__(self) -> str:
        return (f"RewardFunction(length_free={self.length_free}, length_penalty={self.length_penalty}, "
                f"clip={self.clip}, length_weight={self.settings.length_weight})")  # fmt: skip
