"""data_prep: ranked comment lists -> the pairwise, listwise and sft views, split by post, with a summary."""

from __future__ import annotations

import json
import logging
import random
from collections import Counter

from commentrank.configs import PAIR_STRATEGIES, PrepArguments
from commentrank.data.readers import read_source
from commentrank.data.records import RankedPost
from commentrank.data.validation import PrepSummary, ValidationRules, collect_posts
from commentrank.data.views import (
    PairOptions,
    build_prompt,
    listwise_row,
    make_pairs,
    pair_counts,
    prompt_warnings,
    sft_rows,
)
from commentrank.io_utils import atomic_write_text
from commentrank.outputs import OutputDir, check_output_dir

logger = logging.getLogger(__name__)
INPUT_KEY = "input"  # a post's meta key: the input file it was read from


def load_posts(
    config: PrepArguments, summary: PrepSummary, rules: ValidationRules | None = None, drop_duplicates: bool = True
) -> list[RankedPost]:
    """Read and validate every input (under `rules`; default: training's, with `config.min_comments`); a post id
    seen in an earlier input is prefixed with its source. With `drop_duplicates` (data_prep; scoring keeps every post)
    a post that repeats an earlier one (`post_key`) is dropped as `duplicate_post`, so that the split cannot put its
    copies on both sides; then `config.max_posts` keeps a seeded sample (the rest counted as `over_max_posts`)."""
    if not config.inputs:
        raise ValueError("no inputs given (--inputs FILE [FILE ...])")
    posts: list[RankedPost] = []
    seen: set[str] = set()
    first_of: dict[tuple, str] = {}
    repeats: list[str] = []
    for source in config.inputs:
        summary.sources.append(source)
        items = read_source(source, config.input_format, config.columns, config.hub_split)
        rules = rules or ValidationRules(min_comments=config.min_comments)
        for post in collect_posts(items, summary, config.skip_invalid, rules):
            if drop_duplicates:
                key = post_key(post)
                if key in first_of:
                    summary.unkeep(post, "duplicate_post")
                    repeats.append(f"post {post.post_id} of {source} repeats {first_of[key]}")
                    continue
                first_of[key] = f"post {post.post_id} of {source}"
            if post.post_id in seen:
                post.post_id = f"{source}:{post.post_id}"
            seen.add(post.post_id)
            post.meta[INPUT_KEY] = source  # the source of max_train_posts_per_source (never a model input)
            posts.append(post)
    if repeats:
        summary.warn(
            f"{len(repeats)} post(s) repeat an earlier post (the same text, body and comment texts) and were dropped "
            f"before the split, counted as duplicate_post (e.g. {repeats[0]})"
        )
    if config.max_posts is not None and len(posts) > config.max_posts:
        keep = set(random.Random(config.seed).sample(range(len(posts)), config.max_posts))
        for i, post in enumerate(posts):
            if i not in keep:
                summary.unkeep(post)
        posts = [p for i, p in enumerate(posts) if i in keep]
    return posts


def post_key(post: RankedPost) -> tuple:
    """What makes two posts the same post: the same text (or built prompt), body and multiset of comment texts
    (stripped; order and scores do not matter, so a re-crawl with other votes is still the same post)."""
    title = post.prompt if post.prompt is not None else post.title
    return title.strip(), (post.body or "").strip(), tuple(sorted(c.text.strip() for c in post.comments))


def _size(value: float, total: int) -> int:
    return int(value) if value >= 1 else round(value * total)


def split_posts(posts: list[RankedPost], config: PrepArguments) -> dict[str, list[RankedPost]]:
    """Seeded train/validation/test split by post (or by site): no post is ever in two splits.

    Unlabeled posts (CUP IT test files) go to an `unlabeled` split of the listwise view, for scoring.
    """
    labeled = [p for p in posts if p.labeled]
    groups: dict[str, list[RankedPost]] = {}
    for post in labeled:
        key = post.post_id if config.split_by == "post" else post.meta.get("site", "unknown")
        groups.setdefault(key, []).append(post)
    if config.validation_sites or config.test_sites:
        parts = named_site_split(sorted(groups), config)
        splits = {name: [p for k in part for p in groups[k]] for name, part in parts.items()}
        unlabeled = [p for p in posts if not p.labeled]
        return {**splits, **({"unlabeled": unlabeled} if unlabeled else {})}
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


def named_site_split(sites: list[str], config: PrepArguments) -> dict[str, list[str]]:
    """The sites of each split when the recipe names the held-out ones: every other site trains."""
    unknown = [s for s in [*config.validation_sites, *config.test_sites] if s not in sites]
    if unknown:
        raise ValueError(
            f"unknown site(s) {', '.join(unknown)} in validation_sites / test_sites: the labeled posts' sites are "
            f"{', '.join(sites)}"
        )
    held_out = set(config.validation_sites) | set(config.test_sites)
    return {
        "test": list(config.test_sites),
        "validation": list(config.validation_sites),
        "train": [s for s in sites if s not in held_out],
    }


def vote_tie_ranks(post: RankedPost) -> list[int] | None:
    """The ranks of a post's comments with tied votes sharing one (the number of comments with strictly more votes);
    None when the post has no vote tie or a comment without votes (its ranks then stay)."""
    votes = [c.votes for c in post.comments]
    if any(v is None for v in votes) or len(set(votes)) == len(votes):
        return None
    return [sum(other > v for other in votes) for v in votes]


def apply_vote_ties(posts: list[RankedPost], mode: str, summary: PrepSummary) -> list[RankedPost]:
    """Training posts under `vote_ties` (configs): `order` keeps them, `drop` drops the posts with a vote tie, `equal`
    gives tied comments one rank and drops the posts left without any order; drops counted in `summary`."""
    if mode == "order":
        return posts
    kept = []
    for post in posts:
        ranks = vote_tie_ranks(post)
        if ranks is not None and (mode == "drop" or len(set(ranks)) == 1):
            reason = "train_vote_ties" if mode == "drop" else "train_all_votes_tied"
            summary.drop(reason, len(post.comments))
            continue
        if ranks is not None:
            for comment, rank in zip(post.comments, ranks):
                comment.rank = rank
        kept.append(post)
    return kept


def balance_sources(splits: dict[str, list[RankedPost]], config: PrepArguments, summary: PrepSummary) -> None:
    """The training split under `vote_ties` and `max_train_posts_per_source` (a seeded sample of each input's posts,
    in their order), with the counts per input (`summary.per_source`: kept = train + validation + test + dropped)
    and per split and site (`summary.sites`)."""
    before = {name: list(part) for name, part in splits.items()}
    train = apply_vote_ties(splits.get("train", []), config.vote_ties, summary)
    cap = config.max_train_posts_per_source
    by_source: dict[str, list[int]] = {}
    for i, post in enumerate(train):
        by_source.setdefault(post.meta.get(INPUT_KEY), []).append(i)
    keep = set(range(len(train)))
    for source, indices in by_source.items():
        if cap is not None and len(indices) > cap:
            dropped = set(indices) - set(random.Random(f"{config.seed}:{source}").sample(indices, cap))
            summary.posts_dropped["train_over_source_cap"] += len(dropped)
            summary.comments_dropped["train_over_source_cap"] += sum(len(train[i].comments) for i in dropped)
            keep -= dropped
    if "train" in splits:
        splits["train"] = [p for i, p in enumerate(train) if i in keep]
    for source in config.inputs:
        counts = {name: sum(p.meta.get(INPUT_KEY) == source for p in part) for name, part in splits.items()}
        train_before = sum(p.meta.get(INPUT_KEY) == source for p in before.get("train", []))
        kept = sum(counts.values()) + train_before - counts.get("train", 0)
        summary.per_source[source] = {"posts": kept, **counts, "train_dropped": train_before - counts.get("train", 0)}
    summary.sites = {
        name: dict(sorted(Counter(p.meta.get("site", "unknown") for p in part).items()))
        for name, part in splits.items()
    }


def build_views(splits: dict[str, list[RankedPost]], config: PrepArguments, summary: PrepSummary) -> dict:
    """{view: {split: rows}}; counts the pairs of every strategy (without building them) so the summary can compare
    them."""
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
            for strategy in PAIR_STRATEGIES:  # counted for every strategy, built for the selected one only
                options = PairOptions(strategy, config.max_pairs_per_post, config.visibility_filter, config.seed)
                for key, n in pair_counts(post, options).items():
                    counts[strategy][key] = counts[strategy].get(key, 0) + n
                if strategy == config.pair_strategy and "pairwise" in rows:
                    rows["pairwise"].extend(make_pairs(post, prompt, options))
            if "sft" in rows:
                rows["sft"].extend(sft_rows(post, prompt, config.sft_comments, config.sft_top_k))
        for view, view_rows in rows.items():
            if view_rows:
                views[view][split] = view_rows
    summary.pairs = {f"{s}{' (selected)' if s == config.pair_strategy else ''}": c for s, c in counts.items()}
    summary.splits = {view: {split: len(rows) for split, rows in d.items()} for view, d in views.items()}
    selected = counts[config.pair_strategy]
    if config.visibility_filter and "pairwise" in views and not views["pairwise"].get("train"):
        removed = selected.get("dropped_older_preferred", 0) + selected.get("dropped_no_timestamp", 0)
        summary.warn(
            f"the pairwise view has no training pairs: --visibility_filter removed {removed} of "
            f"{selected.get('candidates', 0)} pairs ({selected.get('dropped_older_preferred', 0)} with the preferred "
            f"comment written first, {selected.get('dropped_no_timestamp', 0)} without a timestamp)"
        )
    return views


def to_dataset_dicts(views: dict) -> dict:
    import datasets

    return {
        view: datasets.DatasetDict({split: datasets.Dataset.from_list(rows) for split, rows in splits.items()})
        for view, splits in views.items()
        if splits
    }


def prepare_views(config: PrepArguments) -> tuple[dict, PrepSummary]:
    """Read, validate, split and build the views in memory: ({view: DatasetDict}, summary)."""
    summary = PrepSummary()
    posts = load_posts(config, summary)
    if not posts:
        raise ValueError(f"no valid posts in {', '.join(config.inputs)}: {summary.to_json()}")
    for warning in prompt_warnings(posts, config.prompt_template):
        summary.warn(warning)
    splits = split_posts(posts, config)
    balance_sources(splits, config, summary)
    return to_dataset_dicts(build_views(splits, config, summary)), summary


PREP_CONFIG_FILE = "prep_config.json"
SUMMARY_FILE = "summary.json"


def record_files(config: PrepArguments, summary: PrepSummary) -> dict[str, str]:
    """The texts of `summary.json` and `prep_config.json` that go next to the views."""
    return {SUMMARY_FILE: summary.to_json() + "\n", PREP_CONFIG_FILE: json.dumps(config.recorded(), indent=2) + "\n"}


def output_entries(config: PrepArguments) -> list[str]:
    """The names a data_prep run writes in its output folder (a user's file of that name there stops it)."""
    return [*config.views, SUMMARY_FILE, PREP_CONFIG_FILE]


def write_views(folder, dataset_dicts: dict, files: dict[str, str], **output_dir_options) -> None:
    """The views and `files` saved to `folder` at once (`OutputDir`: a half-written folder is never left; its
    `inputs` / `overwrite` / `entries` options guard what commentrank did not write)."""
    with OutputDir(folder, "data_prep", **output_dir_options) as tmp:
        for view, dataset_dict in dataset_dicts.items():
            dataset_dict.save_to_disk(str(tmp / view))
        for name, text in files.items():
            atomic_write_text(tmp / name, text)


def run_prepare(config: PrepArguments) -> PrepSummary:
    """The whole data_prep run: read, validate, split, build views, save atomically, optionally push.

    The output folder (and the Hub repo) holds the views, `summary.json` (the counts) and `prep_config.json` (how the
    data was built: training reads its prompt template from there).
    """
    if not config.output_dir and not config.push_to_hub:
        raise ValueError("no output: give --output_dir FOLDER (or --push_to_hub REPO)")
    if config.output_dir:  # before the work: never replace an input or what commentrank did not write
        ours = dict(inputs=config.inputs, overwrite=config.overwrite_output, entries=output_entries(config))
        check_output_dir(config.output_dir, "data_prep", **ours)
    dataset_dicts, summary = prepare_views(config)
    files = record_files(config, summary)
    if config.output_dir:
        write_views(config.output_dir, dataset_dicts, files, **ours)
        logger.info("wrote %s to %s", ", ".join(dataset_dicts), config.output_dir)
    if config.push_to_hub:
        from commentrank.hub import push_dataset_views

        push_dataset_views(dataset_dicts, files, config.push_to_hub, config.hub_private)
    return summary


def main(argv: list[str] | None = None) -> PrepSummary:
    from commentrank.cli import Parser
    from commentrank.io_utils import exits_on_bad_input

    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    (config,) = Parser([PrepArguments], prog="data_prep").parse_args_and_config(argv)
    from commentrank.hub import HubError

    with exits_on_bad_input("data_prep", HubError):
        summary = run_prepare(config)
    print(summary.format())
    return summary
