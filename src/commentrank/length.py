"""The length term, in one place: `reward = model(prompt, comment) + w * log1p(characters of the whole comment)`.

Truncation hides how long most comments are, the one signal every baseline uses. With `length_feature: additive` the
listwise trainer learns `w` (fitted before the first step by `fit_length_weight`, `length_init: fit`), saves it as
`length_weight` in `commentrank_config.json`, and every scorer adds the term (`add_length_term`: scoring, the training
callback, `rank.py`, exported ONNX models, the model card's snippet `length_term_code`); `odin` keeps the term during
training only, with the model's own reward kept uncorrelated with length (`correlation`), and scores without it.

Used by `configs` (the options' choices), `train.listwise` (the column, the fit, the checkpointed weight),
`inference` / `score` (the term at scoring time) and `model_card`. Light: torch is imported only by the functions
that need it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

logger = logging.getLogger(__name__)

LENGTH_FEATURES = ("none", "additive", "odin")
LENGTH_INITS = ("fit", "zero")  # the first is the default
LENGTH_LEARNING_RATE = 0.0  # the default: the fitted weight is kept
LENGTH_COLUMN = "log_lengths"  # with a length_feature: length_feature of each comment's whole text, per post
LENGTH_STATE_FILE = "length_term.json"  # the length term's weight in each checkpoint (resume)
LENGTH_FIT_POSTS = 10_000  # length_init fit: the posts the length term's starting weight is fitted on
LENGTH_FIT_RIDGE = 1e-3  # and a ridge on it: data that length orders perfectly still gets a finite weight


def length_feature(texts) -> list[float]:
    """The length signal of `EncoderSettings.length_weight`: log1p of each whole comment's characters (the model sees
    at most `max_length` tokens of it), surrounding whitespace left out, so that "+1" and "+1 " (one text to the
    duplicate check and to an encoder's tokenizer) get the same term. One definition for training and every scorer."""
    return [math.log1p(len(text.strip())) for text in texts]


def add_length_term(rewards, comments, weight: float) -> list:
    """`rewards` (aligned with `comments`; None for comments another process scores) plus the model's length term
    `weight * length_feature(comment)`, as every scorer and the training callback add it; unchanged when `weight` is
    0."""
    if not weight:
        return list(rewards)
    return [None if r is None else r + weight * n for r, n in zip(rewards, length_feature(comments), strict=True)]


def length_term_code(weight: float) -> str:
    """The lines of the model card's plain-transformers snippet that add the length term (empty without one)."""
    if not weight:
        return ""
    return (
        "# the model's length term (`length_weight` in commentrank_config.json), which every commentrank scorer adds\n"
        "characters = torch.tensor([float(len(c.strip())) for c in comments])\n"
        f"rewards = rewards + {float(weight)!r} * torch.log1p(characters)\n"
    )


def correlation(x, y):
    """Pearson correlation of two tensors (0 when either is constant): `length_feature: odin` penalizes its square."""
    x, y = x - x.mean(), y - y.mean()
    denominator = (x.square().sum() * y.square().sum()).sqrt()
    return (x * y).sum() / denominator if float(denominator) > 0 else x.sum() * 0.0


def fit_length_weight(
    dataset,
    loss: Callable,
    relevance_column: str | None = None,
    max_posts: int = LENGTH_FIT_POSTS,
    chunk: int = 64,
    label: str = "training",
) -> float:
    """The w that minimizes the training loss of `w * log1p(characters)` alone plus `LENGTH_FIT_RIDGE * w**2`
    (length_init: fit), over the first `max_posts` posts of `dataset` (rows with `LENGTH_COLUMN` and `ranks`, and
    `relevance_column` when given; the loss of each chunk of posts, a mean over its posts with an order, weighted by
    their number, so that the objective is the mean over all such posts): a one-dimensional L-BFGS
    fit, deterministic, the same in every process. `loss(rewards, post_index, ranks, relevance)` is the trainer's.
    Training then starts from what longest-first knows, and the model learns what length does not say."""
    import torch

    posts = dataset.select(range(min(len(dataset), max_posts)))
    chunks = []
    for start in range(0, len(posts), chunk):
        rows = posts[start : start + chunk]
        sizes = [len(r) for r in rows["ranks"]]
        targets = rows[relevance_column] if relevance_column else rows["ranks"]
        ordered = sum(len(set(values)) > 1 for values in targets)  # the posts a loss counts (it leaves out the rest)
        chunks.append((
            torch.tensor([x for lengths in rows[LENGTH_COLUMN] for x in lengths], dtype=torch.float64),
            torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)),
            torch.tensor([r for ranks in rows["ranks"] for r in ranks]),
            torch.tensor([g for gains in rows[relevance_column] for g in gains], dtype=torch.float64)
            if relevance_column else None,
            ordered,
        ))  # fmt: skip
    total = sum(n for *_, n in chunks) or 1
    weight = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight], lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        value = sum(loss(weight * x, i, r, g) * n for x, i, r, g, n in chunks) / total
        value = value + LENGTH_FIT_RIDGE * weight**2
        value.backward()
        return value

    start_loss = float(closure().detach())
    optimizer.step(closure)
    fitted = float(weight.detach())
    logger.info("length term fitted on %d posts: w = %.4f (%s loss %.4f at w = 0, %.4f fitted)", len(posts), fitted,
                label, start_loss, float(closure().detach()))  # fmt: skip
    return fitted
