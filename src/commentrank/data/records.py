"""The normalized "ranked list" record that every reader produces and every view is built from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Comment:
    """One comment (answer) under a post.

    `rank` is the label: 0 = best, unique within a post as read (data_prep's `vote_ties: equal` gives comments
    with equal votes one rank), `None` for unlabeled posts (CUP IT test files).
    `votes` is the raw vote count when the source has one (graded, tie-aware NDCG); `created` an ISO
    timestamp when known (only used by the visibility filter, never as a model input).
    """

    text: str
    rank: int | None
    votes: int | None = None
    created: str | None = None


@dataclass
class RankedPost:
    """A post with its comments. `title` is the CUP IT post text; `body` the optional context."""

    post_id: str
    title: str
    comments: list[Comment]
    body: str | None = None
    meta: dict = field(default_factory=dict)  # site, url, license: carried to outputs, never model inputs
    prompt: str | None = None  # the model's prompt when the source holds it already built (a listwise view's row)

    @property
    def labeled(self) -> bool:
        return all(c.rank is not None for c in self.comments)

    @property
    def n_comments(self) -> int:
        return len(self.comments)

    def ordered(self) -> list[Comment]:
        """Comments best first (labeled posts only)."""
        return sorted(self.comments, key=lambda c: c.rank)


def ranks_by(keys: Sequence) -> list[int]:
    """The rank of each item when sorted by `keys` (rank 0 = the smallest key); equal keys keep their input order."""
    order = sorted(range(len(keys)), key=lambda i: keys[i])
    ranks = [0] * len(keys)
    for rank, i in enumerate(order):
        ranks[i] = rank
    return ranks
