"""Batched reward inference: length-sorted batches with dynamic padding, no gradients; and the check that a model's
rewards did not collapse.

Neutral ground for training (the NDCG callback, the listwise collator's `pad`) and scoring (`commentrank.score`:
`scorer` loads a reward model with the encoder settings saved next to it, and `report` turns rewards into metrics
and output files), so that training does not import the scoring package. `commentrank.score.inference` re-exports
these names.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from commentrank.data.records import ranks_by
from commentrank.encoding import PairEncoder, segment_ids
from commentrank.length import add_length_term


def pad(tensors: Sequence[torch.Tensor], value: int, pad_to_multiple_of: int | None = None) -> torch.Tensor:
    """Right-pad 1-D tensors to the longest (rounded up to a multiple of `pad_to_multiple_of`) as one 2-D tensor, as
    TRL's `pad` does; here so that scoring does not import TRL (seconds of start-up)."""
    length = max(t.shape[0] for t in tensors)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    out = tensors[0].new_full((len(tensors), length), value)
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t
    return out


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_token_id: int, pad_to: int | None = None, segment_sep_id: int | None = None
) -> dict:
    """Right-pad token id lists to the longest (or to `pad_to`, which none exceeds) with an attention mask, and the
    text pairs' `token_type_ids` when `segment_sep_id` is set (`PairEncoder.segment_sep_id`)."""
    ids = [torch.tensor(seq, dtype=torch.long) for seq in sequences]
    batch = {
        "input_ids": pad(ids, pad_token_id, pad_to),
        "attention_mask": pad([torch.ones_like(seq) for seq in ids], 0, pad_to),
    }
    if segment_sep_id is not None:
        batch["token_type_ids"] = segment_ids(batch["input_ids"], batch["attention_mask"], segment_sep_id)
    return batch


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so padding stays small."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def check_logits(logits: torch.Tensor) -> None:
    """A reward model returns one logit per input; anything else is a classifier, not a reward model."""
    if logits.ndim != 2 or logits.shape[-1] != 1:
        raise ValueError(
            f"the model returns logits of shape {tuple(logits.shape)}: a reward model returns one logit per input "
            "(a sequence-classification head with num_labels=1)"
        )


@torch.no_grad()
def score_ids(
    model: torch.nn.Module,
    input_ids: Sequence[Sequence[int]],
    pad_token_id: int,
    batch_size: int = 32,
    sort_by_length: bool = True,
    pad_to: int | None = None,
    progress: bool = False,
    segment_sep_id: int | None = None,
    shard: tuple[int, int] = (0, 1),
) -> list[float | None]:
    """Rewards for already-encoded inputs, in input order.

    Each distinct input is scored once and every copy of it gets that reward: the same comment under the same prompt
    ("+1" three times in a post) gets the same float whichever batch a copy would land in (the batch's padding moves
    the last bits, up to 2e-3 in bfloat16), so copies tie and rank in input order (`predicted_ranks`) at any batch
    size. Equal input ids mean equal segment ids (`segment_ids` reads them off the ids).

    `shard=(rank, world)`: score only every `world`-th batch from the `rank`-th (None for the others), for one process
    of a distributed run. The batches are formed before sharding, so every input is scored in the same batch (and so
    to the same float) as in a single-process run.

    `no_grad`, not `inference_mode`: the training callback scores mid-training, and buffers a model caches lazily
    during this forward must stay usable by autograd afterwards.
    """
    if not input_ids:
        return []
    slots: dict[tuple[int, ...], int] = {}  # each distinct input -> its slot, in order of first appearance
    slot_of = [slots.setdefault(tuple(ids), len(slots)) for ids in input_ids]
    distinct = list(slots)
    device = next(model.parameters()).device
    if sort_by_length:
        batches = length_sorted_batches([len(x) for x in distinct], batch_size)
    else:
        batches = [list(range(i, min(i + batch_size, len(distinct)))) for i in range(0, len(distinct), batch_size)]
    rank, world = shard
    batches = batches[rank::world]
    rewards: list[float | None] = [None] * len(distinct)
    was_training = model.training
    model.eval()
    iterator = batches
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(batches, desc="scoring", unit="batch")
    try:
        for batch in iterator:
            inputs = pad_batch([distinct[i] for i in batch], pad_token_id, pad_to, segment_sep_id)
            logits = model(**{k: v.to(device) for k, v in inputs.items()}).logits
            check_logits(logits)
            for i, value in zip(batch, logits[:, 0].float().tolist()):
                rewards[i] = value
    finally:
        model.train(was_training)
    return [rewards[slot] for slot in slot_of]


def check_finite(rewards: Sequence[float | None]) -> None:
    """Refuse non-finite rewards (None: another process's share), which would be written as `NaN` (not JSON) and
    ranked in input order: a model's output, so scoring stops right after the forward passes."""
    scored = [r for r in rewards if r is not None]
    bad = sum(not math.isfinite(r) for r in scored)
    if bad:
        raise ValueError(
            f"{bad} of {len(scored)} rewards are not finite (NaN or infinite): the model's weights most likely hold "
            "NaN or infinite values (a training run that diverged), or its activations overflow the dtype it runs in "
            "(in float16 or bfloat16, score with --dtype float32)"
        )


def encode_posts(encoder: PairEncoder, posts: Sequence[dict]) -> tuple[list[list[int]], int]:
    """The input ids of every comment of every post (dicts with `prompt` and `comments`), flat, and how many were
    truncated."""
    prompts = [post["prompt"] for post in posts for _ in post["comments"]]
    comments = [comment for post in posts for comment in post["comments"]]
    encoded = encoder.encode(prompts, comments)
    return encoded.input_ids, sum(encoded.truncated)


def split_by_post(flat: Sequence[float], posts: Sequence[dict]) -> list[list[float]]:
    """Flat per-comment values back into one list per post."""
    values, start = [], 0
    for post in posts:
        values.append(list(flat[start : start + len(post["comments"])]))
        start += len(post["comments"])
    return values


def score_posts(
    model: torch.nn.Module,
    encoder: PairEncoder,
    posts: Sequence[dict],
    batch_size: int = 32,
    progress: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> tuple[list[list[float]], int]:
    """Rewards for every comment of every post (dicts with `prompt` and `comments`); also the number truncated
    (every copy of a repeated comment counts). With `shard`, this process's share (see `score_ids`; None for the
    comments of other processes). A non-finite reward is an error (`check_finite`)."""
    input_ids, n_truncated = encode_posts(encoder, posts)
    flat = score_ids(model, input_ids, encoder.tokenizer.pad_token_id, batch_size, progress=progress,
                     segment_sep_id=encoder.segment_sep_id, shard=shard)  # fmt: skip
    check_finite(flat)
    comments = [comment for post in posts for comment in post["comments"]]
    flat = add_length_term(flat, comments, encoder.settings.length_weight)  # length_feature additive, as in training
    return split_by_post(flat, posts), n_truncated


def merge_shards(parts: Sequence[list[list[float | None]]]) -> list[list[float]]:
    """Per-post rewards of a distributed run: each process's `score_posts(..., shard=...)` result, merged (every
    comment was scored by exactly one process)."""
    merged = []
    for posts in zip(*parts):
        merged.append([next(v for v in values if v is not None) for values in zip(*posts)])
    return merged


COLLAPSE_RATIO = 0.02  # the model's own rewards vary less than this share of its length term's: it ranks by length


def collapse_warning(rows: Sequence[dict], rewards: Sequence[Sequence[float]], length_weight: float) -> str | None:
    """A warning when the model's own rewards (`rewards` without its length term) are all but constant over the scored
    comments: it then ranks by the length term alone, or not at all. A training run that collapsed leaves such a
    model (its rewards stopped depending on the text), and its metrics look like longest-first's or random's."""
    import numpy as np

    from commentrank.length import length_feature

    flat = np.array([r for post in rewards for r in post], dtype=np.float64)
    if flat.size < 2:
        return None
    term = length_weight * np.array(length_feature([c for row in rows for c in row["comments"]]))
    own, term_std = float(np.std(flat - term)), float(np.std(term))
    scale = COLLAPSE_RATIO * term_std if term_std > 0 else 1e-6 * max(1.0, float(np.abs(flat).mean()))
    if own > scale:
        return None
    n = f"{flat.size} comments"
    if term_std > 0:
        return (f"the model's own rewards (its length term left out) vary by {own:.2g} (std over {n}) against "
                f"{term_std:.2g} for its length term: it ranks by the comments' length alone. Its training most "
                "likely collapsed (rewards that no longer depend on the text); train again with another seed or a "
                "lower learning rate.")  # fmt: skip
    return (f"the model's rewards are constant (std {own:.2g} over {n}): it ranks nothing. Its training most likely "
            "collapsed; train again with another seed or a lower learning rate.")  # fmt: skip


def predicted_ranks(rewards: Sequence[float]) -> list[int]:
    """Rank of each comment from its reward: 0 = highest reward; equal rewards keep their input order."""
    return ranks_by([-r for r in rewards])
