"""Validation of ranked lists, with errors that name the file, line and field, and a summary of what was kept."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from commentrank.data.records import RankedPost

logger = logging.getLogger(__name__)


@dataclass
class Problem:
    """Why one input record cannot be used. `reason` is the summary key, `field` the offending field, `n_comments`
    the comments the record holds when it is known (counted as read and dropped)."""

    reason: str
    field: str
    message: str
    n_comments: int = 0


class InvalidInputError(ValueError):
    """Bad input that stops the run; the message names the file, line (or row) and field."""

    def __init__(self, location: str, problem: Problem, hint: bool = True):
        self.location = location
        self.problem = problem
        hint = " (pass --skip_invalid to skip and count such posts)" if hint else ""
        super().__init__(f"{location}: field '{problem.field}': {problem.message}{hint}")


@dataclass(frozen=True)
class ValidationRules:
    """What makes a post usable. Training needs two comments to compare and distinct texts (the same text cannot be
    both better and worse); scoring takes any post with a comment, and scores every copy of a repeated text ("+1")."""

    min_comments: int = 2
    allow_duplicate_texts: bool = False


TRAINING = ValidationRules()
SCORING = ValidationRules(min_comments=1, allow_duplicate_texts=True)


def duplicate_texts(post: RankedPost) -> list[tuple[int, int]]:
    """(i, j) for each comment i whose text (stripped) repeats that of an earlier comment j of the post."""
    seen: dict[str, int] = {}
    repeats = []
    for i, comment in enumerate(post.comments):
        key = comment.text.strip()
        if key in seen:
            repeats.append((i, seen[key]))
        else:
            seen[key] = i
    return repeats


def validate_post(post: RankedPost, rules: ValidationRules = TRAINING) -> Problem | None:
    """Semantic checks of one post under `rules`; structural checks (types, missing fields) are the readers' job."""
    text_field = "prompt" if post.prompt is not None else "text"
    if not (post.prompt if post.prompt is not None else post.title).strip():
        return Problem("empty_post_text", text_field, "the post text is empty")
    if len(post.comments) < rules.min_comments:
        return Problem(
            "too_few_comments", "comments", f"{len(post.comments)} comment(s), at least {rules.min_comments} needed"
        )
    for i, comment in enumerate(post.comments):
        if not comment.text.strip():
            return Problem("empty_comment_text", f"comments[{i}].text", "the comment text is empty")
    if not rules.allow_duplicate_texts:
        for i, j in duplicate_texts(post)[:1]:
            return Problem("duplicate_comment", f"comments[{i}].text", f"the same text as comments[{j}] in this post")
    ranks = [c.rank for c in post.comments]
    labeled = [r is not None for r in ranks]
    if any(labeled) and not all(labeled):
        i = labeled.index(False)
        return Problem("mixed_labels", f"comments[{i}].score", "null score in a post whose other comments are scored")
    if all(labeled):
        n = len(ranks)
        for i, rank in enumerate(ranks):
            if not 0 <= rank < n:
                return Problem("score_out_of_range", f"comments[{i}].score", f"score {rank} is outside 0..{n - 1}")
        counts = Counter(ranks)
        for i, rank in enumerate(ranks):
            if counts[rank] > 1:
                return Problem(
                    "tied_scores", f"comments[{i}].score", f"score {rank} is given to {counts[rank]} comments (a tie)"
                )
    return None


@dataclass
class PrepSummary:
    """What a data_prep run read, kept and dropped (by reason), and what each view produced."""

    posts_read: int = 0
    comments_read: int = 0
    posts_kept: int = 0
    comments_kept: int = 0
    unlabeled_posts: int = 0
    posts_dropped: Counter = field(default_factory=Counter)
    comments_dropped: Counter = field(default_factory=Counter)
    duplicate_texts: int = 0  # comments kept whose text repeats another of their post (scoring rules)
    posts_over_max_posts: int = 0  # valid posts left out by --max_posts (not dropped: a sample was asked for)
    comments_over_max_posts: int = 0
    pairs: dict = field(default_factory=dict)
    splits: dict = field(default_factory=dict)
    sources: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    per_source: dict = field(default_factory=dict)  # input -> posts kept, per split, dropped (data_prep's balancing)
    sites: dict = field(default_factory=dict)  # split -> site -> posts

    def drop(self, reason: str, n_comments: int = 0) -> None:
        self.posts_dropped[reason] += 1
        if n_comments:
            self.comments_dropped[reason] += n_comments

    def unkeep(self, post: RankedPost, reason: str | None = None) -> None:
        """A post (or its `prepare.PostRef`) counted as kept is left out after all: dropped for `reason`, or (None)
        left out by --max_posts. The counts still add up: read = kept + dropped + over_max_posts."""
        self.posts_kept -= 1
        self.comments_kept -= post.n_comments
        self.unlabeled_posts -= not post.labeled
        if reason is None:
            self.posts_over_max_posts += 1
            self.comments_over_max_posts += post.n_comments
        else:
            self.drop(reason, post.n_comments)

    def warn(self, message: str) -> None:
        """A warning that is logged and recorded in summary.json."""
        logger.warning(message)
        self.warnings.append(message)

    def to_dict(self) -> dict:
        return {
            "sources": self.sources,
            "posts_read": self.posts_read,
            "comments_read": self.comments_read,
            "posts_kept": self.posts_kept,
            "comments_kept": self.comments_kept,
            "unlabeled_posts": self.unlabeled_posts,
            "posts_dropped": dict(self.posts_dropped),
            "comments_dropped": dict(self.comments_dropped),
            "duplicate_texts": self.duplicate_texts,
            **(
                {"over_max_posts": {"posts": self.posts_over_max_posts, "comments": self.comments_over_max_posts}}
                if self.posts_over_max_posts
                else {}
            ),
            "pairs": self.pairs,
            "splits": self.splits,
            **({"warnings": self.warnings} if self.warnings else {}),
            **({"per_source": self.per_source} if self.per_source else {}),
            **({"sites": self.sites} if self.sites else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def format(self) -> str:
        """A plain-text table for the terminal."""
        lines = [
            f"posts    read {self.posts_read:>7}  kept {self.posts_kept:>7}  "
            f"dropped {sum(self.posts_dropped.values()):>5}"
            f"  (unlabeled kept: {self.unlabeled_posts})",
            f"comments read {self.comments_read:>7}  kept {self.comments_kept:>7}  "
            f"dropped {sum(self.comments_dropped.values()):>5}",
        ]
        for reason, n in sorted(self.posts_dropped.items()):
            lines.append(f"  dropped: {reason:<28} {n:>6} posts {self.comments_dropped.get(reason, 0):>7} comments")
        if self.posts_over_max_posts:
            lines.append(f"  left out by --max_posts: {self.posts_over_max_posts:>16} posts "
                         f"{self.comments_over_max_posts:>7} comments")  # fmt: skip
        for name, counts in self.pairs.items():
            detail = ", ".join(f"{k} {v}" for k, v in counts.items())
            lines.append(f"pairs {name:<22} {detail}")
        for view, splits in self.splits.items():
            lines.append(f"view {view:<10} " + ", ".join(f"{k} {v}" for k, v in splits.items()))
        return "\n".join(lines)


ReaderItem = tuple[str, "RankedPost | Problem"]


def collect_posts(
    items: Iterable[ReaderItem], summary: PrepSummary, skip_invalid: bool = False, rules: ValidationRules = TRAINING
) -> Iterator[RankedPost]:
    """Validate what a reader yields: raise on the first problem, or skip and count it with `skip_invalid`.

    A reader yields `(location, record)` with `location` like ``data.jsonl:12`` and `record` either a
    `RankedPost` or the structural `Problem` that kept it from being one.
    """
    for location, record in items:
        summary.posts_read += 1
        n_comments = len(record.comments) if isinstance(record, RankedPost) else record.n_comments
        summary.comments_read += n_comments
        problem = record if isinstance(record, Problem) else validate_post(record, rules)
        if problem is not None:
            if not skip_invalid:
                raise InvalidInputError(location, problem)
            summary.drop(problem.reason, n_comments)
            continue
        summary.posts_kept += 1
        summary.comments_kept += n_comments
        summary.unlabeled_posts += not record.labeled
        summary.duplicate_texts += len(duplicate_texts(record)) if rules.allow_duplicate_texts else 0
        yield record
