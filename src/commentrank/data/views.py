"""The three training views built from `RankedPost` records: pairwise, listwise and sft."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from commentrank.configs import DEFAULT_PROMPT_TEMPLATE, PAIR_STRATEGIES, SFT_COMMENTS
from commentrank.data.records import Comment, RankedPost


def build_prompt(post: RankedPost, template: str = DEFAULT_PROMPT_TEMPLATE) -> str:
    """The model's prompt from a post: `{title}` ("no context") or e.g. `{title}\\n\\n{body}` ("with context"); the
    prompt itself when the post comes with one (a listwise view's row)."""
    if post.prompt is not None:
        return post.prompt
    return template.format(title=post.title.strip(), body=(post.body or "").strip()).strip()


def candidate_pairs(post: RankedPost, strategy: str) -> list[tuple[Comment, Comment]]:
    """(preferred, other) pairs of a labeled post under one strategy; `adjacent` is the CUP IT solution's."""
    ordered = post.ordered()
    if strategy == "adjacent":
        return list(zip(ordered, ordered[1:]))
    if strategy == "all":
        return list(itertools.combinations(ordered, 2))
    if strategy == "best_vs_rest":
        return [(ordered[0], other) for other in ordered[1:]]
    raise ValueError(f"unknown pair strategy '{strategy}' (choose from {', '.join(PAIR_STRATEGIES)})")


def visible(preferred: Comment, other: Comment) -> bool | None:
    """SHP's rule: a preference is trusted only when the preferred answer was written later (it had less time
    to collect votes). None when a timestamp is missing."""
    if not preferred.created or not other.created:
        return None
    return preferred.created > other.created


@dataclass
class PairOptions:
    strategy: str = "adjacent"
    max_pairs_per_post: int | None = None
    visibility_filter: bool = False
    seed: int = 42


def make_pairs(post: RankedPost, prompt: str, options: PairOptions, counts: dict | None = None) -> list[dict]:
    """Pairwise rows of one post, after the visibility filter and the per-post cap; `counts` tallies each step."""
    counts = counts if counts is not None else {}
    pairs = candidate_pairs(post, options.strategy)
    counts["candidates"] = counts.get("candidates", 0) + len(pairs)
    if options.visibility_filter:
        flags = [visible(a, b) for a, b in pairs]
        counts["dropped_older_preferred"] = counts.get("dropped_older_preferred", 0) + flags.count(False)
        counts["dropped_no_timestamp"] = counts.get("dropped_no_timestamp", 0) + flags.count(None)
        pairs = [pair for pair, flag in zip(pairs, flags) if flag]
    if options.max_pairs_per_post is not None and len(pairs) > options.max_pairs_per_post:
        rng = random.Random(f"{options.seed}:{post.post_id}")
        counts["dropped_cap"] = counts.get("dropped_cap", 0) + len(pairs) - options.max_pairs_per_post
        pairs = rng.sample(pairs, options.max_pairs_per_post)
    counts["kept"] = counts.get("kept", 0) + len(pairs)
    return [
        {
            "post_id": post.post_id,
            "prompt": prompt,
            "chosen": a.text,
            "rejected": b.text,
            "margin": float(b.rank - a.rank),
        }
        for a, b in pairs
    ]


def listwise_row(post: RankedPost, prompt: str) -> dict:
    has_votes = all(c.votes is not None for c in post.comments)
    return {
        "post_id": post.post_id,
        "prompt": prompt,
        "comments": [c.text for c in post.comments],
        "ranks": [c.rank for c in post.comments] if post.labeled else None,
        "votes": [c.votes for c in post.comments] if has_votes else None,
        "site": post.meta.get("site"),
        "url": post.meta.get("url"),
        "license": post.meta.get("license"),
    }


def sft_rows(post: RankedPost, prompt: str, which: str = "all", top_k: int = 1, separator: str = "\n\n") -> list:
    """Causal-LM text: the prompt, a separator, then one comment; `which` picks all, the best or the top k."""
    if which not in SFT_COMMENTS:
        raise ValueError(f"unknown sft_comments '{which}' (choose from {', '.join(SFT_COMMENTS)})")
    comments = post.ordered() if post.labeled else post.comments
    if which == "best":
        comments = comments[:1]
    elif which == "top_k":
        comments = comments[:top_k]
    return [{"post_id": post.post_id, "text": f"{prompt}{separator}{c.text.strip()}"} for c in comments]
