"""How a (prompt, comment) pair becomes a reward model's input ids, from the `EncoderSettings` saved with the model.

TRL's RewardTrainer joins prompt and completion as plain strings and drops every pair longer than
`max_length`. Here each (prompt, comment) is encoded on its own and truncated to fit, and the trainer gets
`chosen_ids`/`rejected_ids`, so it skips its own processing:

- encoders (BERT, MiniLM, RoBERTa): a text pair, `[CLS] prompt [SEP] comment [SEP]`;
- decoders (GPT-2, Llama, SmolLM2): `prompt + separator + comment + EOS`, the reward read at the end.

When the input is too long the comment's tail is cut first; when the prompt alone leaves fewer than
`min_comment_tokens` for the comment, the prompt's tail is cut too. `truncation_side="left"` instead keeps the
end of the text (the original CUP IT solution's behaviour for GPT-2); `"head_tail"` keeps the comment's beginning
and end, half the comment's budget each, and cuts its middle (a conclusion or signature stays in view).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from commentrank.configs import EncoderSettings
from commentrank.length import add_length_term, length_feature  # noqa: F401 (re-exported: the length term)

logger = logging.getLogger(__name__)


def is_text_pair_tokenizer(tokenizer: PreTrainedTokenizerBase) -> bool:
    """True for tokenizers that build text pairs with CLS/SEP (BERT-like encoders), False for causal LMs."""
    return tokenizer.sep_token is not None and tokenizer.cls_token is not None


def segment_sep_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The [SEP] id that splits a text pair's segments, for models that take `token_type_ids` (BERT, MiniLM); None for
    those that do not (RoBERTa, MPNet, decoders)."""
    takes_segments = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
    return tokenizer.sep_token_id if is_text_pair_tokenizer(tokenizer) and takes_segments else None


def segment_ids(input_ids, attention_mask, sep_token_id: int):
    """`token_type_ids` of right-padded text pairs `[CLS] prompt [SEP] comment [SEP]`, as `tokenizer(prompt, comment)`
    makes them: 0 up to the first [SEP], 1 after it (the last [SEP] too), 0 on padding. Texts never hold a [SEP] of
    their own (`PairEncoder` tokenizes them with special tokens split), so the first one is the pair's middle."""
    is_sep = (input_ids == sep_token_id).long()
    return ((is_sep.cumsum(dim=1) - is_sep) >= 1).long() * attention_mask


def model_max_length(tokenizer: PreTrainedTokenizerBase, model=None) -> int | None:
    """The most tokens the model takes: the tokenizer's `model_max_length` and the model's position embeddings."""
    limits = []
    if 0 < getattr(tokenizer, "model_max_length", 0) < 100_000:
        limits.append(int(tokenizer.model_max_length))
    config = getattr(model, "config", None)
    if getattr(config, "max_position_embeddings", None):
        limits.append(int(config.max_position_embeddings))
    return min(limits) if limits else None


def _cut(text: str, limit: int, side: str) -> str:
    """The first ("head") or last ("tail") at most `limit` characters of `text`, cut at a space that follows a
    non-space in the second half of that span (the part ends before it, or starts with it), else at `limit`."""
    if side == "head":
        i = text.rfind(" ", limit // 2, limit)
        while i > limit // 2 and text[i - 1].isspace():
            i = text.rfind(" ", limit // 2, i)
        return text[:i] if i > limit // 2 else text[:limit]
    start, stop = len(text) - limit, len(text) - limit // 2
    i = text.find(" ", start + 1, stop)
    while 0 <= i and text[i - 1].isspace():
        i = text.find(" ", i + 1, stop)
    return text[i:] if i >= 0 else text[start:]


@dataclass
class EncodedBatch:
    input_ids: list[list[int]]
    truncated: list[bool]


class PairEncoder:
    """Encodes (prompt, comment) pairs into input ids of at most `settings.max_length` tokens.

        encoder = PairEncoder(tokenizer, EncoderSettings.load(model_dir))
        encoder = PairEncoder(tokenizer, max_length=64)  # the default settings with these changes

    A `max_length` beyond what the model takes (`model_max_length`; pass `model` to include its position
    embeddings) is lowered to it, with a warning; `settings.max_length` then holds the length actually used.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, settings: EncoderSettings | None = None, *, model=None,
                 **changes):  # fmt: skip
        settings = (settings or EncoderSettings()).replace(**changes)
        limit = model_max_length(tokenizer, model)
        if limit is not None and settings.max_length > limit:
            logger.warning(
                "max_length %d is more than the model takes (%d): using %d", settings.max_length, limit, limit
            )
            settings = settings.replace(max_length=limit)
        self.tokenizer = tokenizer
        self.settings = settings
        self.text_pair = is_text_pair_tokenizer(tokenizer)
        # Segment ids for models that take them (BERT, MiniLM), exactly as CrossEncoder, TEI and tokenizer(a, b) pass
        # them, so a published model ranks the same everywhere; None for RoBERTa/MPNet-like encoders and decoders.
        self.segment_sep_id = segment_sep_id(tokenizer)
        if not self.text_pair and tokenizer.eos_token_id is None:
            raise ValueError("a decoder reward model needs an EOS token to read the reward at (set eos_token)")
        if self.text_pair:
            self.pair_template = self._pair_template()
            self.n_special = sum(len(part) for part in self.pair_template)
        else:
            self.bos = [tokenizer.bos_token_id] if self._adds_bos() else []
            self.n_special = len(self.bos) + 1  # BOS (when the tokenizer adds one) and the appended EOS
        if self.max_length <= self.n_special + 2:
            raise ValueError(f"max_length {self.max_length} leaves no room for text")
        # Texts are tokenized (a very long one only in the parts that can be kept: `_tokenize_bounded`) and cut to
        # max_length here (and counted); the tokenizer's "sequence length is longer than the specified maximum ...
        # indexing errors" warning would only mislead.
        warned = getattr(tokenizer, "deprecation_warnings", None)
        if isinstance(warned, dict):
            warned["sequence-length-is-longer-than-the-specified-maximum"] = True

    @property
    def max_length(self) -> int:
        return self.settings.max_length

    def _pair_template(self) -> tuple[list[int], list[int], list[int]]:
        """The special tokens around a text pair (e.g. [CLS] / [SEP] / [SEP]), read off the tokenizer itself."""
        ((a,), (b,)) = self._tokenize(["a", "b"])
        ids = self.tokenizer("a", "b")["input_ids"]
        i, j = ids.index(a), len(ids) - 1 - ids[::-1].index(b)
        return ids[:i], ids[i + 1 : j], ids[j + 1 :]

    def _adds_bos(self) -> bool:
        bos = self.tokenizer.bos_token_id
        return bos is not None and self.tokenizer("x")["input_ids"][:1] == [bos]

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        # split_special_tokens: a "[SEP]" or "<|endoftext|>" typed in a comment is text, never a special token
        return self.tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    # A text longer than (max_length + TOKEN_MARGIN) * CHARS_PER_TOKEN characters is tokenized only in its first and/or
    # last that many characters (doubled while they hold too few tokens), cut where a space follows a non-space (no
    # pre-tokenizer piece crosses that point, so the ids kept are those of the whole text): a 20 MB comment no longer
    # takes gigabytes to score.
    CHARS_PER_TOKEN = 8
    TOKEN_MARGIN = 8

    def _tokenize_bounded(self, texts: list[str], sides: tuple[str, ...]) -> list[list[int]]:
        """`_tokenize(texts)` where only the first ("head") and/or last ("tail") tokens of a text can be kept: a very
        long text gives the ids of its head and/or tail parts, each holding more tokens than max_length."""
        need = self.max_length + self.TOKEN_MARGIN
        limit = need * self.CHARS_PER_TOKEN
        ids = self._tokenize([text if len(text) <= limit else "" for text in texts])
        for i, text in enumerate(texts):
            if len(text) > limit:
                ids[i] = self._tokenize_long(text, sides, need, limit)
        return ids

    def _tokenize_long(self, text: str, sides: tuple[str, ...], need: int, limit: int) -> list[int]:
        while limit < len(text):
            parts = [self._tokenize([_cut(text, limit, side)])[0] for side in sides]
            if all(len(part) >= need for part in parts):
                return [token for part in parts for token in part]
            limit *= 2
        return self._tokenize([text])[0]

    def _fit(self, prompt: list[int], comment: list[int]) -> tuple[list[int], list[int], bool]:
        budget = self.max_length - self.n_special
        if len(prompt) + len(comment) <= budget:
            return prompt, comment, False
        if self.settings.truncation_side == "left":
            joined = (prompt + comment)[-budget:]
            cut = max(0, len(prompt) - (len(prompt) + len(comment) - budget))
            return joined[:cut], joined[cut:], True
        keep_comment = min(len(comment), max(budget - len(prompt), self.settings.min_comment_tokens))
        keep_comment = min(keep_comment, budget)
        if self.settings.truncation_side == "head_tail" and keep_comment < len(comment):
            head = (keep_comment + 1) // 2
            return (
                prompt[: budget - keep_comment],
                comment[:head] + comment[len(comment) - keep_comment + head :],
                True,
            )
        return prompt[: budget - keep_comment], comment[:keep_comment], True

    def encode(self, prompts: list[str], comments: list[str]) -> EncodedBatch:
        """Encode aligned lists of prompts and comments; report which inputs were truncated."""
        if len(prompts) != len(comments):
            raise ValueError("prompts and comments must have the same length")
        if not self.text_pair:
            prompts = [f"{self.settings.text_prefix}{p}{self.settings.separator}" for p in prompts]
        side = self.settings.truncation_side
        unique = list(dict.fromkeys(prompts))  # a post's prompt comes once per comment: tokenize it once
        tokenized = dict(zip(unique, self._tokenize_bounded(unique, ("tail",) if side == "left" else ("head",))))
        prompt_ids = [tokenized[prompt] for prompt in prompts]
        comment_sides = {"right": ("head",), "left": ("tail",), "head_tail": ("head", "tail")}[side]
        comment_ids = self._tokenize_bounded(comments, comment_sides)
        ids, truncated = [], []
        for p, c in zip(prompt_ids, comment_ids):
            p, c, cut = self._fit(p, c)
            if self.text_pair:
                head, middle, tail = self.pair_template
                ids.append(head + p + middle + c + tail)
            else:
                ids.append(self.bos + p + c + [self.tokenizer.eos_token_id])
            truncated.append(cut)
        return EncodedBatch(ids, truncated)
