"""The three training views built from `RankedPost` records: pairwise, listwise and sft."""

from __future__ import annotations

import bisect
import itertools
import random
import string
from dataclasses import dataclass

from commentrank.configs import DEFAULT_PROMPT_TEMPLATE, PAIR_STRATEGIES, SFT_COMMENTS
from commentrank.data.records import Comment, RankedPost


def build_prompt(post: RankedPost, template: str = DEFAULT_PROMPT_TEMPLATE) -> str:
    """The model's prompt from a post: `{title}` ("no context") or e.g. `{title}\\n\\n{body}` ("with context"); the
    prompt itself when the post comes with one (a listwise view's row)."""
    if post.prompt is not None:
        return post.prompt
    return template.format(title=post.title.strip(), body=(post.body or "").strip()).strip()


def template_fields(template: str) -> set[str]:
    """The placeholders of a prompt template (`{title}`, `{body}`)."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def prompt_warnings(posts: list[RankedPost], template: str) -> list[str]:
    """What is wrong with the prompts `template` builds for `posts`, though nothing fails (`prompt_warnings_of`).
    Posts that come with their prompt built are not checked for bodies."""
    built = [p for p in posts if p.prompt is None]
    return prompt_warnings_of(template, len(built), sum(not (p.body or "").strip() for p in built))


def prompt_warnings_of(template: str, n_built: int, n_without: int) -> list[str]:
    """The warnings about `template` for `n_built` posts whose prompt it builds, `n_without` of them without a body:
    a template without a placeholder gives every post the same prompt; one with `{body}` (a with-context model)
    gives a post without a body its title alone, or without `{title}` no post text at all (data_prep drops a post
    whose prompt is then empty, as `empty_prompt`: `prepare.iter_posts`)."""
    warnings = []
    fields = template_fields(template)
    if not fields:
        warnings.append(
            f"prompt template {template!r} has no placeholder ({{title}}, {{body}}): every post gets the same prompt"
        )
    if "body" in fields and n_without:
        what = "the post text (title) alone" if "title" in fields else "no post text, only the template's own text"
        warnings.append(
            f"{n_without} of {n_built} posts have no body (post_body), but the prompt template {template!r} "
            f"uses {{body}}: their prompts hold {what}"
        )
    return warnings


def candidate_pairs(post: RankedPost, strategy: str) -> list[tuple[Comment, Comment]]:
    """(preferred, other) pairs of a labeled post under one strategy; `adjacent` is the CUP IT solution's."""
    return candidate_pairs_of(post.ordered(), strategy)


def has_tied_ranks(ordered: list[Comment]) -> bool:
    """Whether two comments share a rank (data_prep's `vote_ties: equal`)."""
    return len({c.rank for c in ordered}) < len(ordered)


def candidate_pairs_of(ordered: list[Comment], strategy: str) -> list[tuple[Comment, Comment]]:
    """The pairs of comments in rank order; comments of one rank (tied) form no pair: with ties `adjacent` pairs each
    comment of a rank with each of the next rank, `best_vs_rest` the best rank's with every worse one."""
    if strategy not in PAIR_STRATEGIES:
        raise ValueError(f"unknown pair strategy '{strategy}' (choose from {', '.join(PAIR_STRATEGIES)})")
    if has_tied_ranks(ordered):
        groups = [list(g) for _, g in itertools.groupby(ordered, key=lambda c: c.rank)]
        later = {"adjacent": lambda i: groups[i + 1 : i + 2], "all": lambda i: groups[i + 1 :],
                 "best_vs_rest": lambda i: groups[1:] if i == 0 else []}[strategy]  # fmt: skip
        return [(a, b) for i, group in enumerate(groups) for worse in later(i) for a in group for b in worse]
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


def _visible_counts(ordered: list[Comment], strategy: str) -> tuple[int, int]:
    """(visible pairs, pairs without a timestamp) of a strategy, counted without building the pairs: O(n log n) for
    `all` (an inversion count over the creation times in rank order), O(n) otherwise."""
    if strategy != "all" or has_tied_ranks(ordered):
        flags = [visible(a, b) for a, b in candidate_pairs_of(ordered, strategy)]
        return flags.count(True), flags.count(None)
    n = len(ordered)
    timed = [c.created for c in ordered if c.created]
    no_timestamp = n * (n - 1) // 2 - len(timed) * (len(timed) - 1) // 2
    earlier: list[str] = []  # creation times of the better-ranked comments seen so far, sorted
    n_visible = 0
    for created in timed:  # a pair (better, worse) is visible when the better one was written later
        n_visible += len(earlier) - bisect.bisect_right(earlier, created)
        bisect.insort(earlier, created)
    return n_visible, no_timestamp


def pair_counts(post: RankedPost, options: PairOptions) -> dict:
    """What `make_pairs` keeps and drops at each step, counted without building a pair (memory linear in comments):
    candidates, dropped_older_preferred and dropped_no_timestamp (with the visibility filter), dropped_cap, kept."""
    ordered = post.ordered()
    n = len(ordered)
    if has_tied_ranks(ordered):
        counts = {"candidates": len(candidate_pairs_of(ordered, options.strategy))}
    else:
        counts = {"candidates": n * (n - 1) // 2 if options.strategy == "all" else max(n - 1, 0)}
    remaining = counts["candidates"]
    if options.visibility_filter:
        remaining, no_timestamp = _visible_counts(ordered, options.strategy)
        counts["dropped_older_preferred"] = counts["candidates"] - remaining - no_timestamp
        counts["dropped_no_timestamp"] = no_timestamp
    if options.max_pairs_per_post is not None and remaining > options.max_pairs_per_post:
        counts["dropped_cap"] = remaining - options.max_pairs_per_post
        remaining = options.max_pairs_per_post
    counts["kept"] = remaining
    return counts


def _all_pairs_at(n: int, indices: list[int]) -> list[tuple[int, int]]:
    """The (i, j) of the given positions in `itertools.combinations(range(n), 2)` order, without listing them all."""

    def start(i: int) -> int:  # position of (i, i + 1)
        return i * (2 * n - i - 1) // 2

    pairs = []
    for t in indices:
        lo, hi = 0, n - 2
        while lo < hi:  # the last i with start(i) <= t
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if start(mid) <= t else (lo, mid - 1)
        pairs.append((lo, lo + 1 + t - start(lo)))
    return pairs


def make_pairs(post: RankedPost, prompt: str, options: PairOptions) -> list[dict]:
    """Pairwise rows of one post, after the visibility filter and the per-post cap (a sample seeded by the seed and
    the post id). `all` pairs under a cap and no filter are sampled by position, never all built."""
    ordered = post.ordered()
    cap = options.max_pairs_per_post
    rng = random.Random(f"{options.seed}:{post.post_id}")
    n_all = len(ordered) * (len(ordered) - 1) // 2
    sample_positions = not options.visibility_filter and not has_tied_ranks(ordered)
    if options.strategy == "all" and sample_positions and cap is not None and n_all > cap:
        pairs = [(ordered[i], ordered[j]) for i, j in _all_pairs_at(len(ordered), rng.sample(range(n_all), cap))]
    else:
        pairs = candidate_pairs_of(ordered, options.strategy)
        if options.visibility_filter:
            pairs = [(a, b) for a, b in pairs if visible(a, b)]
        if cap is not None and len(pairs) > cap:
            pairs = rng.sample(pairs, cap)  # the same draw as sampling positions: random.sample picks by index
    return [
        {"post_id": post.post_id, "prompt": prompt, "chosen": a.text, "rejected": b.text,
         "margin": float(b.rank - a.rank)}
        for a, b in pairs
    ]  # fmt: skip


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
