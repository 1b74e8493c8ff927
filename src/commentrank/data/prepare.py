"""data_prep: ranked comment lists -> the pairwise, listwise and sft views, split by post, with a summary."""

from __future__ import annotations

import json
import logging
import random
import tempfile
from pathlib import Path

from commentrank.configs import PAIR_STRATEGIES, PrepArguments
from commentrank.data.readers import read_source
from commentrank.data.records import RankedPost
from commentrank.data.validation import PrepSummary, ValidationRules, collect_posts
from commentrank.data.views import PairOptions, build_prompt, listwise_row, make_pairs, pair_counts, sft_rows
from commentrank.io_utils import atomic_write_text
from commentrank.outputs import OutputDir, check_output_dir

logger = logging.getLogger(__name__)


def load_posts(config: PrepArguments, summary: PrepSummary, rules: ValidationRules | None = None) -> list[RankedPost]:
    """Read and validate every input (under `rules`; default: training's, with `config.min_comments`); a post id
    seen in an earlier input is prefixed with its source."""
    if not config.inputs:
        raise ValueError("no inputs given (--inputs FILE [FILE ...])")
    posts: list[RankedPost] = []
    seen: set[str] = set()
    for source in config.inputs:
        summary.sources.append(source)
        items = read_source(source, config.input_format, config.columns, config.hub_split)
        rules = rules or ValidationRules(min_comments=config.min_comments)
        for post in collect_posts(items, summary, config.skip_invalid, rules):
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


def split_keys(keys: list[str], config: PrepArguments) -> dict[str, list[str]]:
    """The seeded test / validation / train parts of the split keys (post ids or sites), in their shuffled order."""
    keys = sorted(keys)
    random.Random(config.seed).shuffle(keys)
    n_test, n_val = _size(config.test_size, len(keys)), _size(config.validation_size, len(keys))
    if n_test + n_val >= len(keys) and keys:
        raise ValueError(f"test_size + validation_size leave no training {config.split_by}s out of {len(keys)}")
    return {"test": keys[:n_test], "validation": keys[n_test : n_test + n_val], "train": keys[n_test + n_val :]}


def split_posts(posts: list[RankedPost], config: PrepArguments) -> dict[str, list[RankedPost]]:
    """Seeded train/validation/test split by post (or by site): no post is ever in two splits.

    Unlabeled posts (CUP IT test files) go to an `unlabeled` split of the listwise view, for scoring.
    """
    labeled = [p for p in posts if p.labeled]
    groups: dict[str, list[RankedPost]] = {}
    for post in labeled:
        key = post.post_id if config.split_by == "post" else post.meta.get("site", "unknown")
        groups.setdefault(key, []).append(post)
    parts = split_keys(list(groups), config)
    splits = {name: [p for k in part for p in groups[k]] for name, part in parts.items()}
    unlabeled = [p for p in posts if not p.labeled]
    if unlabeled:
        splits["unlabeled"] = unlabeled
    return splits


def post_view_rows(post: RankedPost, config: PrepArguments, counts: dict) -> dict[str, list[dict]]:
    """The rows one post adds to each of `config.views`; adds its pair counts of every strategy to `counts`."""
    rows = {view: [] for view in config.views}
    prompt = build_prompt(post, config.prompt_template)
    if "listwise" in rows:
        rows["listwise"].append(listwise_row(post, prompt))
    if not post.labeled:
        return rows
    for strategy in PAIR_STRATEGIES:  # counted for every strategy, built for the selected one only
        options = PairOptions(strategy, config.max_pairs_per_post, config.visibility_filter, config.seed)
        for key, n in pair_counts(post, options).items():
            counts[strategy][key] = counts[strategy].get(key, 0) + n
        if strategy == config.pair_strategy and "pairwise" in rows:
            rows["pairwise"].extend(make_pairs(post, prompt, options))
    if "sft" in rows:
        rows["sft"].extend(sft_rows(post, prompt, config.sft_comments, config.sft_top_k))
    return rows


def build_views(splits: dict[str, list[RankedPost]], config: PrepArguments, summary: PrepSummary) -> dict:
    """{view: {split: rows}}; counts the pairs of every strategy (without building them) so the summary can compare
    them."""
    views: dict[str, dict[str, list[dict]]] = {view: {} for view in config.views}
    counts = {s: {} for s in PAIR_STRATEGIES}
    for split, posts in splits.items():
        rows = {view: [] for view in config.views}
        for post in posts:
            for view, post_rows in post_view_rows(post, config, counts).items():
                rows[view].extend(post_rows)
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


def prepare_views(config: PrepArguments) -> tuple[dict, PrepSummary]:
    """Read, validate, split and build the views in memory: ({view: DatasetDict}, summary)."""
    summary = PrepSummary()
    posts = load_posts(config, summary)
    if not posts:
        raise ValueError(f"no valid posts in {', '.join(config.inputs)}: {summary.to_json()}")
    splits = split_posts(posts, config)
    return to_dataset_dicts(build_views(splits, config, summary)), summary


PREP_CONFIG_FILE = "prep_config.json"
SUMMARY_FILE = "summary.json"


def record_files(config: PrepArguments, summary: PrepSummary) -> dict[str, str]:
    """The texts of `summary.json` and `prep_config.json` that go next to the views."""
    return {SUMMARY_FILE: summary.to_json() + "\n", PREP_CONFIG_FILE: json.dumps(config.recorded(), indent=2) + "\n"}


def write_views(folder, dataset_dicts: dict, files: dict[str, str], **output_dir_options) -> None:
    """The views and `files` saved to `folder` at once (`OutputDir`: a half-written folder is never left; its
    `inputs` / `overwrite` options guard what commentrank did not write)."""
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
        check_output_dir(config.output_dir, "data_prep", inputs=config.inputs, overwrite=config.overwrite_output)
    import datasets

    from commentrank.data.ondisk import prepare_views_on_disk

    parent = Path(config.output_dir).resolve().parent if config.output_dir else None
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".data_prep-work-", dir=parent) as workdir:  # next to the output: room
        staged, summary = prepare_views_on_disk(config, workdir)  # bounded memory: the views are staged on disk
        files = record_files(config, summary)
        if config.output_dir:
            write_views(config.output_dir, staged, files, inputs=config.inputs, overwrite=config.overwrite_output)
            logger.info("wrote %s to %s", ", ".join(staged), config.output_dir)
        if config.push_to_hub:
            from commentrank.hub import push_dataset_views

            saved = Path(config.output_dir) if config.output_dir else Path(workdir) / "saved"
            if not config.output_dir:
                for view, staged_dict in staged.items():
                    staged_dict.save_to_disk(str(saved / view))
            dataset_dicts = {view: datasets.load_from_disk(str(saved / view)) for view in staged}  # memory-mapped
            push_dataset_views(dataset_dicts, files, config.push_to_hub, config.hub_private)
    return summary


def main(argv: list[str] | None = None) -> PrepSummary:
    from trl import TrlParser

    from commentrank.io_utils import exits_on_bad_input

    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    (config,) = TrlParser([PrepArguments]).parse_args_and_config(argv)
    with exits_on_bad_input("data_prep"):
        summary = run_prepare(config)
    print(summary.format())
    return summary
