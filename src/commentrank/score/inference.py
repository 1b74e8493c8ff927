"""Batched reward inference: moved to `commentrank.inference` (shared by training and scoring); re-exported here."""

from commentrank.inference import (  # noqa: F401
    check_finite,
    check_logits,
    encode_posts,
    length_sorted_batches,
    merge_shards,
    pad,
    pad_batch,
    predicted_ranks,
    score_ids,
    score_posts,
    split_by_post,
)
