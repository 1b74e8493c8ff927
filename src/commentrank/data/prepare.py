"""data_prep: ranked comment lists -> the pairwise, listwise and sft views, split by post, with a summary."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

from commentrank.data.readers import Columns, read_source
from commentrank.data.records import RankedPost
from commentrank.data.validation import PrepSummary, collect_posts
from commentrank.data.views import PAIR_STRATEGIES, PairOptions, build_prompt, listwise_row, make_pairs, sft_rows
from commentrank.io_utils import AtomicDir, atomic_write_text

logger = logging.getLogger(__name__)

VIEWS = ("pairwise", "listwise", "sft")


@dataclass
class PrepConfig:
    """Options of `data_prep/prepare.py` (also usable as YAML keys with `--config`)."""

    inputs: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Input files (CUP IT .jsonl[.gz], Stack Exchange Posts.xml, .csv/.parquet/.json) or Hub "
            "dataset ids."
        },
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Folder for the views (save_to_disk) and summary.json."}
    )
    input_format: str = field(default="auto", metadata={"help": "auto, cupit, stackexchange, table or hub."})
    hub_split: str = field(default="train", metadata={"help": "Split read from a Hub dataset id."})
    title_column: str = field(default="text", metadata={"help": "Field with the post text (title)."})
    body_column: str = field(default="post_body", metadata={"help": "Field with the post body (context), optional."})
    comments_column: str = field(default="comments", metadata={"help": "Field with the list of comments (nested)."})
    comment_text_field: str = field(default="text", metadata={"help": "Comment text key inside each comment."})
    comment_score_field: str = field(default="score", metadata={"help": "Rank key (0 = best; null = unlabeled)."})
    comment_votes_field: str = field(default="votes", metadata={"help": "Vote count key (optional, graded NDCG)."})
    post_id_column: str = field(default="id", metadata={"help": "Post id field (long tables group rows by it)."})
    comment_column: str = field(default="comment", metadata={"help": "Comment text column of long tables."})
    prompt_template: str = field(
        default="{title}",
        metadata={"help": "Prompt from the post: '{title}' (no context) or '{title}\\n\\n{body}' (with context)."},
    )
    pair_strategy: str = field(
        default="adjacent", metadata={"help": "adjacent (CUP IT), all (InstructGPT) or best_vs_rest."}
    )
    max_pairs_per_post: int | None = field(default=None, metadata={"help": "Cap on pairs per post (seeded sample)."})
    visibility_filter: bool = field(
        default=False, metadata={"help": "Keep a pair only if the preferred answer was written later (SHP rule)."}
    )
    sft_comments: str = field(default="all", metadata={"help": "Comments in the sft view: all, best or top_k."})
    sft_top_k: int = field(default=1, metadata={"help": "k for sft_comments=top_k."})
    test_size: float = field(default=0.1, metadata={"help": "Test fraction of posts (or a count if >= 1)."})
    validation_size: float = field(default=0.1, metadata={"help": "Validation fraction of posts (or a count)."})
    split_by: str = field(default="post", metadata={"help": "Unit of the split: post, or site (unseen sites)."})
    seed: int = field(default=42, metadata={"help": "Seed of the split and of pair sampling."})
    max_posts: int | None = field(default=None, metadata={"help": "Keep only this many valid posts (seeded)."})
    min_comments: int = field(default=2, metadata={"help": "Posts with fewer comments are invalid."})
    skip_invalid: bool = field(default=False, metadata={"help": "Skip and count invalid posts instead of stopping."})
    views: list[str] = field(default_factory=lambda: list(VIEWS), metadata={"help": "Views to write."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Hub dataset repo to push the views to."})
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})

    def __post_init__(self):
        if isinstance(self.inputs, str):
            self.inputs = [self.inputs]
        if self.pair_strategy not in PAIR_STRATEGIES:
            raise ValueError(f"pair_strategy '{self.pair_strategy}' is not one of {', '.join(PAIR_STRATEGIES)}")
        unknown = set(self.views) - set(VIEWS)
        if unknown:
            raise ValueError(f"unknown views {sorted(unknown)} (choose from {', '.join(VIEWS)})")
        if self.split_by not in ("post", "site"):
            raise ValueError(f"split_by '{self.split_by}' must be post or site")

    @property
    def columns(self) -> Columns:
        return Columns(
            title=self.title_column, body=self.body_column, comments=self.comments_column,
            comment_text=self.comment_text_field, comment_score=self.comment_score_field,
            comment_votes=self.comment_votes_field, post_id=self.post_id_column, comment=self.comment_column,
        )  # fmt: skip


def load_posts(config: PrepConfig, summary: PrepSummary) -> list[RankedPost]:
    """Read and validate every input; duplicate post ids across inputs are an error."""
    if not config.inputs:
        raise ValueError("no inputs given (--inputs FILE [FILE ...])")
    posts: list[RankedPost] = []
    seen: set[str] = set()
    for source in config.inputs:
        summary.sources.append(source)
        items = read_source(source, config.input_format, config.columns, config.hub_split)
        for post in collect_posts(items, summary, config.skip_invalid, config.min_comments):
            if post.post_id in seen:
                post.post_id = f"{source}:{post.post_id}"
            seen.add(post.post_id)
            posts.append(post)
    if config.max_posts is not None and len(posts) > config.max_posts:
        keep = set(random.Random(config.seed).sample(range(len(posts)), config.max_posts))
        summary.posts_dropped["over_max_posts"] += len(posts) - len(keep)
        summary.comments_dropped["over_max_posts"] += sum(
            len(p.comments) for i, p in enumerate(posts) if i not in keep
        )
        posts = [p for i, p in enumerate(posts) if i in keep]
    return posts


def _size(value: float, total: int) -> int:
    return int(value) if value >= 1 else round(value * total)


def split_posts(posts: list[RankedPost], config: PrepConfig) -> dict[str, list[RankedPost]]:
    """Seeded train/validation/test split by post (or by site): no post is ever in two splits.

    Unlabeled posts (CUP IT test files) go to an `unlabeled` split of the listwise view, for scoring.
    """
    labeled = [p for p in posts if p.labeled]
    groups: dict[str, list[RankedPost]] = {}
    for post in labeled:
        key = post.post_id if config.split_by == "post" else post.meta.get("site", "unknown")
        groups.setdefault(key, []).append(post)
    keys = sorted(groups)
    random.Random(config.seed).shuffle(keys)
    n_test, n_val = _size(config.test_size, len(keys)), _size(config.validation_size, len(keys))
    if n_test + n_val >= len(keys) and keys:
        raise ValueError(f"test_size + validation_size leave no training {config.split_by}s out of {len(keys)}")
    parts = {"test": keys[:n_test], "validation": keys[n_test : n_test + n_val], "train": keys[n_test + n_val :]}
    splits = {name: [p for k in part for p in groups[k]] for name, part in parts.items()}
    unlabeled = [p for p in posts if not p.labeled]
    if unlabeled:
        splits["unlabeled"] = unlabeled
    return splits


def build_views(splits: dict[str, list[RankedPost]], config: PrepConfig, summary: PrepSummary) -> dict:
    """{view: {split: rows}}; counts pairs for every strategy so the summary can compare them."""
    views: dict[str, dict[str, list[dict]]] = {view: {} for view in config.views}
    counts = {s: {} for s in PAIR_STRATEGIES}
    for split, posts in splits.items():
        rows = {view: [] for view in config.views}
        for post in posts:
            prompt = build_prompt(post, config.prompt_template)
            if "listwise" in rows:
                rows["listwise"].append(listwise_row(post, prompt))
            if not post.labeled:
                continue
            for strategy in PAIR_STRATEGIES:
                options = PairOptions(strategy, config.max_pairs_per_post, config.visibility_filter, config.seed)
                pairs = make_pairs(post, prompt, options, counts[strategy])
                if strategy == config.pair_strategy and "pairwise" in rows:
                    rows["pairwise"].extend(pairs)
            if "sft" in rows:
                rows["sft"].extend(sft_rows(post, prompt, config.sft_comments, config.sft_top_k))
        for view, view_rows in rows.items():
            if view_rows:
                views[view][split] = view_rows
    summary.pairs = {f"{s}{' (selected)' if s == config.pair_strategy else ''}": c for s, c in counts.items()}
    summary.splits = {view: {split: len(rows) for split, rows in d.items()} for view, d in views.items()}
    return views


def to_dataset_dicts(views: dict) -> dict:
    import datasets

    return {
        view: datasets.DatasetDict({split: datasets.Dataset.from_list(rows) for split, rows in splits.items()})
        for view, splits in views.items()
        if splits
    }


def prepare_views(config: PrepConfig) -> tuple[dict, PrepSummary]:
    """Read, validate, split and build the views in memory: ({view: DatasetDict}, summary)."""
    summary = PrepSummary()
    posts = load_posts(config, summary)
    if not posts:
        raise ValueError(f"no valid posts in {', '.join(config.inputs)}: {summary.to_json()}")
    splits = split_posts(posts, config)
    return to_dataset_dicts(build_views(splits, config, summary)), summary


def run_prepare(config: PrepConfig) -> PrepSummary:
    """The whole data_prep run: read, validate, split, build views, save atomically, optionally push."""
    dataset_dicts, summary = prepare_views(config)
    if config.output_dir:
        with AtomicDir(config.output_dir) as tmp:
            for view, dataset_dict in dataset_dicts.items():
                dataset_dict.save_to_disk(str(tmp / view))
            atomic_write_text(tmp / "summary.json", summary.to_json() + "\n")
        logger.info("wrote %s to %s", ", ".join(dataset_dicts), config.output_dir)
    if config.push_to_hub:
        push_views(dataset_dicts, summary, config.push_to_hub, config.hub_private)
    return summary


def push_views(dataset_dicts: dict, summary: PrepSummary, repo_id: str, private: bool = False) -> None:
    """Each view becomes a config of one Hub dataset repo; the summary is uploaded next to them."""
    from huggingface_hub import HfApi

    for view, dataset_dict in dataset_dicts.items():
        dataset_dict.push_to_hub(repo_id, config_name=view, private=private)
    HfApi().upload_file(
        path_or_fileobj=(summary.to_json() + "\n").encode(), path_in_repo="summary.json", repo_id=repo_id,
        repo_type="dataset", commit_message="data_prep summary",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> PrepSummary:
    from trl import TrlParser

    from commentrank.data.validation import InvalidInputError

    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    (config,) = TrlParser([PrepConfig]).parse_args_and_config(argv)
    try:
        summary = run_prepare(config)
    except (InvalidInputError, FileNotFoundError, ValueError) as err:
        raise SystemExit(f"data_prep: error: {err}") from None
    print(summary.format())
    return summary
