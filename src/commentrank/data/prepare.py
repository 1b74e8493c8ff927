"""data_prep: ranked comment lists -> the pairwise, listwise and sft views, split by post, with a summary."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from commentrank.configs import PAIR_STRATEGIES, PrepArguments, site_key
from commentrank.data.readers import read_source
from commentrank.data.records import RankedPost
from commentrank.data.validation import PrepSummary, ValidationRules, collect_posts
from commentrank.data.views import (
    PairOptions,
    build_prompt,
    listwise_row,
    make_pairs,
    pair_counts,
    prompt_warnings_of,
    sft_rows,
)
from commentrank.io_utils import atomic_write_text
from commentrank.outputs import OutputDir, check_output_dir

logger = logging.getLogger(__name__)
INPUT_KEY = "input"  # a post's meta key: the input file it was read from
NO_SITE = "unknown"  # the site of a post whose record names none
READ_ID_KEY = "read_id"  # a post's meta key: its id as read (before a repeat is renamed): with its site, one unit


def iter_posts(
    config: PrepArguments,
    summary: PrepSummary,
    rules: ValidationRules | None = None,
    drop_duplicates: bool = True,
    workdir: str | Path | None = None,
) -> Iterator[RankedPost]:
    """Read and validate every input (under `rules`; default: training's, with `config.min_comments`), one post at a
    time. A post whose prompt (`config.prompt_template`) is empty, e.g. '{body}' of a post without a body, is dropped
    as `empty_prompt`. With `drop_duplicates` (data_prep; scoring keeps every post) a post that repeats an earlier
    one (`post_key`: the same model inputs) is dropped as `duplicate_post`, so that the split cannot put its copies
    on both sides. A post whose id an earlier post has (another crawl of it, in a later input or the same one) is
    kept, with a warning, under a new unique id (`input:id`, then `input:id:2`, ...); its id as read
    (`meta[READ_ID_KEY]`) puts it in the same split as the earlier one (`split_refs`). With a `workdir`, a Posts.xml
    is read in bounded memory, in `config.num_proc` processes (`read_source`)."""
    if not config.inputs:
        raise ValueError("no inputs given (--inputs FILE [FILE ...])")
    seen: set[str] = set()
    first_of: dict[bytes, tuple[str, str, bytes]] = {}  # digests of each post's key and labels: small per post
    relabeled = 0  # repeats whose comments are ranked otherwise than in the copy kept
    repeats: list[str] = []
    renamed: list[str] = []
    empty: list[str] = []
    contradicted: list[str] = []
    rules = rules or ValidationRules(min_comments=config.min_comments)
    for n, source in enumerate(config.inputs):
        summary.sources.append(source)
        where = {} if workdir is None else {"num_proc": config.num_proc, "workdir": Path(workdir) / f"input-{n}"}
        items = read_source(source, config.input_format, config.columns, config.hub_split, **where)
        for post in collect_posts(items, summary, config.skip_invalid, rules):
            if not build_prompt(post, config.prompt_template):
                summary.unkeep(post, "empty_prompt")
                empty.append(f"post {post.post_id} of {source}")
                continue
            if drop_duplicates:
                key, labels = post_digest(post, config.prompt_template), label_digest(post)
                if key in first_of:
                    summary.unkeep(post, "duplicate_post")
                    first_id, first_source, first_labels = first_of[key]
                    repeats.append(f"post {post.post_id} of {source} repeats post {first_id} of {first_source}")
                    relabeled += labels != first_labels
                    continue
                first_of[key] = (post.post_id, source, labels)
            if votes_contradict_ranks(post):
                contradicted.append(f"post {post.post_id} of {source}")
            post.meta[READ_ID_KEY] = post.post_id  # never a model input, nor in the views
            if post.post_id in seen:
                post.post_id = unique_id(f"{Path(source).name}:{post.post_id}", seen)  # no local folder in the views
                renamed.append(f"post {post.meta[READ_ID_KEY]} of {source}, now {post.post_id}")
            seen.add(post.post_id)
            post.meta[INPUT_KEY] = source  # the source of max_train_posts_per_source (never a model input)
            yield post
    if empty:
        summary.warn(
            f"{len(empty)} post(s) get an empty prompt from the prompt template {config.prompt_template!r} (e.g. "
            f"{{body}} of a post without a body): dropped before the split, counted as empty_prompt (e.g. {empty[0]})"
        )
    if repeats:
        other = f"; {relabeled} of them rank the comments otherwise than the copy kept" if relabeled else ""
        summary.warn(
            f"{len(repeats)} post(s) repeat an earlier post (the same prompt and comment texts) and were dropped "
            f"before the split, counted as duplicate_post{other} (e.g. {repeats[0]})"
        )
    if contradicted:
        summary.warn(
            f"{len(contradicted)} post(s) have votes that contradict their ranks (a better-ranked comment with fewer "
            f"votes): the ranks are the labels and are kept; votes only give the vote NDCG and, with vote_ties, which "
            f"neighbours in rank tie (e.g. {contradicted[0]})"
        )
    if renamed:
        summary.warn(
            f"{len(renamed)} post(s) share their id with an earlier post but differ from it (another crawl of it?): "
            "both kept, the later under a new id, and posts of one id and site go to the same split "
            f"(e.g. {renamed[0]})"
        )


def votes_contradict_ranks(post: RankedPost) -> bool:
    """Whether a labeled post with votes on every comment ranks a comment above one with more votes."""
    if not post.labeled or any(c.votes is None for c in post.comments):
        return False
    votes = [c.votes for c in post.ordered()]
    return any(better < worse for better, worse in zip(votes, votes[1:]))


def unique_id(post_id: str, seen: set[str]) -> str:
    """`post_id`, or `post_id:2`, `post_id:3`, ... : the first that is not in `seen`."""
    candidate, n = post_id, 1
    while candidate in seen:
        n += 1
        candidate = f"{post_id}:{n}"
    return candidate


def sample_max_posts(posts: list, config: PrepArguments, summary: PrepSummary) -> list:
    """`config.max_posts` keeps a seeded sample of the posts (or `PostRef`s), in their order; the rest are counted as
    `over_max_posts`."""
    if config.max_posts is None or len(posts) <= config.max_posts:
        return posts
    keep = set(random.Random(config.seed).sample(range(len(posts)), config.max_posts))
    for i, post in enumerate(posts):
        if i not in keep:
            summary.unkeep(post)
    return [p for i, p in enumerate(posts) if i in keep]


def load_posts(
    config: PrepArguments, summary: PrepSummary, rules: ValidationRules | None = None, drop_duplicates: bool = True
) -> list[RankedPost]:
    """Every input's valid posts in memory (`iter_posts`), then `config.max_posts`'s sample (`sample_max_posts`)."""
    return sample_max_posts(list(iter_posts(config, summary, rules, drop_duplicates)), config, summary)


def post_key(post: RankedPost, template: str) -> tuple:
    """What makes two posts the same post: the same model inputs, i.e. the same prompt (`build_prompt` with
    `template`: the body counts only where the template uses it) and multiset of comment texts (stripped; order and
    scores do not matter, so a re-crawl with other votes is still the same post)."""
    return build_prompt(post, template).strip(), tuple(sorted(c.text.strip() for c in post.comments))


def post_digest(post: RankedPost, template: str) -> bytes:
    """16 bytes that stand for `post_key` (equal keys, equal digests): each part length-prefixed, so that no two keys
    give the same bytes."""
    prompt, texts = post_key(post, template)
    parts = [part.encode("utf-8", "surrogatepass") for part in (prompt, *texts)]
    return hashlib.blake2b(b"".join(len(data).to_bytes(8, "little") + data for data in parts), digest_size=16).digest()


def label_digest(post: RankedPost) -> bytes:
    """16 bytes that stand for a post's labels: each comment's text (stripped) with its rank, in text order."""
    labels = sorted((c.text.strip(), -1 if c.rank is None else c.rank) for c in post.comments)
    return hashlib.blake2b(json.dumps(labels).encode("utf-8", "surrogatepass"), digest_size=16).digest()


@dataclass(slots=True)
class PostRef:
    """What the split and the balancing need of a post, without its texts: both the in-memory and the bounded path
    select on these (`select_splits`), then build the views of the posts they point to (`index`: the n-th post)."""

    index: int
    post_id: str
    read_id: str  # the id as read: the posts of one id on one site are one unit of the split
    labeled: bool
    n_comments: int
    site: str
    source: str | None
    vote_ties: int  # 0: none (or a comment without votes), 1: some comments tied, 2: all of them
    has_prompt: bool  # comes with its prompt built
    bodiless: bool

    @classmethod
    def of(cls, index: int, post: RankedPost) -> PostRef:
        ranks = vote_tie_ranks(post)
        ties = 0 if ranks is None else 2 if len(set(ranks)) == 1 else 1
        site, source = post.meta.get("site", NO_SITE), post.meta.get(INPUT_KEY)
        bodiless = not (post.body or "").strip()
        read_id = post.meta.get(READ_ID_KEY, post.post_id)
        return cls(index, post.post_id, read_id, post.labeled, len(post.comments), site, source, ties,
                   post.prompt is not None, bodiless)  # fmt: skip


def _size(value: float, total: int) -> int:
    return int(value) if value >= 1 else round(value * total)


def split_refs(refs: list[PostRef], config: PrepArguments) -> dict[str, list[PostRef]]:
    """Seeded train/validation/test split by post (or by site, or the named held-out sites): no post is ever in two
    splits, and the posts of one id as read on one site (`_crawl_key`: two crawls of a post) are in one: the first of
    them is split, the others follow it.

    Sites are matched by `site_key` (without case and a trailing '/'): named sites hold every data site that matches
    them, and with `split_by: site` sites that match one another are one unit. Unlabeled posts (CUP IT test files)
    go to an `unlabeled` split of the listwise view, for scoring.
    """
    labeled = [r for r in refs if r.labeled]
    crawls: dict[tuple[str, str], list[PostRef]] = {}  # (site, read id) -> its posts, the first of them split for all
    for ref in labeled:
        crawls.setdefault(_crawl_key(ref), []).append(ref)
    firsts = [posts[0] for posts in crawls.values()]
    by_site: dict[str, list[PostRef]] = {}
    if config.split_by == "site":
        for ref in firsts:
            by_site.setdefault(ref.site, []).append(ref)
    if config.validation_sites or config.test_sites:
        parts = named_site_split(sorted(by_site), config)
        splits = {name: [r for k in part for r in by_site[k]] for name, part in parts.items()}
    else:  # the sorted keys shuffled (a shuffle's swaps depend on the length alone): one unit per post or per site
        if by_site:  # sites that match one another join the unit of the first of them in sorted order
            groups: dict[str, list[PostRef]] = {}
            for site in sorted(by_site):
                groups.setdefault(site_key(site), []).extend(by_site[site])
            units = list(groups.values())
        else:
            units = [[r] for r in sorted(firsts, key=_crawl_key)]
        random.Random(config.seed).shuffle(units)
        n_test, n_val = _size(config.test_size, len(units)), _size(config.validation_size, len(units))
        if n_test + n_val >= len(units) and units:
            raise ValueError(f"test_size + validation_size leave no training {config.split_by}s out of {len(units)}")
        bounds = {"test": (0, n_test), "validation": (n_test, n_test + n_val), "train": (n_test + n_val, len(units))}
        splits = {name: [r for unit in units[a:b] for r in unit] for name, (a, b) in bounds.items()}
    splits = {name: [post for r in part for post in crawls[_crawl_key(r)]] for name, part in splits.items()}
    unlabeled = [r for r in refs if not r.labeled]
    return {**splits, **({"unlabeled": unlabeled} if unlabeled else {})}


def _crawl_key(ref: PostRef) -> tuple[str, str]:
    """What makes posts crawls of one post, split together: the same id as read on the same site (two sites' posts
    are never one post, whatever their ids: two files without ids give the same default ids)."""
    return ref.read_id, ref.site


def named_site_split(sites: list[str], config: PrepArguments) -> dict[str, list[str]]:
    """The data's sites of each split when the recipe names the held-out ones: a named site holds every site of the
    data that matches it (`site_key`), in the order the recipe names them; every other site trains."""

    def matching(names: list[str]) -> list[str]:
        found: list[str] = []
        for name in names:
            found += [s for s in sites if site_key(s) == site_key(name) and s not in found]
        return found

    keys = {site_key(s) for s in sites}
    unknown = [s for s in [*config.validation_sites, *config.test_sites] if site_key(s) not in keys]
    if unknown:
        raise ValueError(
            f"unknown site(s) {', '.join(unknown)} in validation_sites / test_sites (matched without case and a "
            f"trailing '/'): the labeled posts' sites are {', '.join(sites)}"
        )
    test, validation = matching(config.test_sites), matching(config.validation_sites)
    return {"test": test, "validation": validation, "train": [s for s in sites if s not in {*test, *validation}]}


def vote_tie_ranks(post: RankedPost) -> list[int] | None:
    """The ranks of a post's comments with the comments that sit next to each other in the file's order (its ranks)
    and have equal votes sharing one (the rank of the first of them); None when the post has no such tie, is
    unlabeled or has a comment without votes (its ranks then stay). Votes never reorder the file's ranks: where they
    contradict them (a better-ranked comment with fewer votes), the file's order is kept."""
    votes = [c.votes for c in post.comments]
    if any(v is None for v in votes) or not post.labeled or len(set(votes)) == len(votes):
        return None
    order = sorted(range(len(votes)), key=lambda i: post.comments[i].rank)
    ranks = [0] * len(votes)
    for position, i in enumerate(order):
        before = order[position - 1] if position else None
        ranks[i] = ranks[before] if before is not None and votes[before] == votes[i] else position
    return ranks if len(set(ranks)) < len(ranks) else None


def apply_vote_ties(refs: list[PostRef], mode: str, summary: PrepSummary) -> list[PostRef]:
    """Training posts under `vote_ties` (configs): `order` keeps them, `drop` drops the posts with a vote tie, `equal`
    drops the posts without any order (their tied comments get one rank when the views are built,
    `training_ranks`); drops counted in `summary`."""
    if mode == "order":
        return refs
    kept = []
    for ref in refs:
        if ref.vote_ties and (mode == "drop" or ref.vote_ties == 2):
            summary.unkeep(ref, "train_vote_ties" if mode == "drop" else "train_all_votes_tied")
            continue
        kept.append(ref)
    return kept


def training_ranks(post: RankedPost, mode: str) -> None:
    """A training post's ranks under `vote_ties: equal`: tied comments share one (`vote_tie_ranks`)."""
    ranks = vote_tie_ranks(post) if mode == "equal" else None
    if ranks is not None:
        for comment, rank in zip(post.comments, ranks):
            comment.rank = rank


def balance_sources(splits: dict[str, list[PostRef]], config: PrepArguments, summary: PrepSummary) -> None:
    """The training split under `vote_ties` and `max_train_posts_per_source` (a seeded sample of each input's posts,
    in their order), its drops taken from the posts kept (read = kept + dropped still), with the counts per input
    (`summary.per_source`: the posts split = train + validation + test + train_dropped) and per split and site
    (`summary.sites`)."""
    before = {name: list(part) for name, part in splits.items()}
    train = apply_vote_ties(splits.get("train", []), config.vote_ties, summary)
    tied = sum(bool(r.vote_ties) for r in train)
    if config.vote_ties == "order" and tied:
        summary.warn(
            f"{tied} of {len(train)} training posts have comments with equal votes, which train in the file's order "
            "(its tie-break, e.g. the earlier answer first; vote_ties: order): vote_ties: equal trains them as ties"
        )
    cap = config.max_train_posts_per_source
    by_source: dict[str, list[int]] = {}
    for i, ref in enumerate(train):
        by_source.setdefault(ref.source, []).append(i)
    keep = set(range(len(train)))
    for source, indices in by_source.items():
        if cap is not None and len(indices) > cap:
            dropped = set(indices) - set(random.Random(f"{config.seed}:{source}").sample(indices, cap))
            for i in sorted(dropped):
                summary.unkeep(train[i], "train_over_source_cap")
            keep -= dropped
    if "train" in splits:
        splits["train"] = [r for i, r in enumerate(train) if i in keep]
    for source in config.inputs:
        counts = {name: sum(r.source == source for r in part) for name, part in splits.items()}
        train_before = sum(r.source == source for r in before.get("train", []))
        kept = sum(counts.values()) + train_before - counts.get("train", 0)
        summary.per_source[source] = {"posts": kept, **counts, "train_dropped": train_before - counts.get("train", 0)}
    summary.sites = {name: dict(sorted(Counter(r.site for r in part).items())) for name, part in splits.items()}


def select_splits(posts: list, config: PrepArguments, summary: PrepSummary) -> dict[str, list]:
    """The splits of `posts` (or of their `PostRef`s): `split_refs`, then `balance_sources`; counted in `summary`."""
    refs = posts if not posts or isinstance(posts[0], PostRef) else [PostRef.of(i, p) for i, p in enumerate(posts)]
    splits = split_refs(refs, config)
    siteless = sum(r.site == NO_SITE for r in splits.get("train", []))
    if (config.validation_sites or config.test_sites) and siteless:
        summary.warn(
            f"{siteless} post(s) have no site ({NO_SITE!r}) and train: validation_sites / test_sites cannot hold "
            "them out"
        )
    balance_sources(splits, config, summary)
    empty_split_warnings(splits, config, summary)
    return splits if refs is posts else {name: [posts[r.index] for r in part] for name, part in splits.items()}


def empty_split_warnings(splits: dict[str, list], config: PrepArguments, summary: PrepSummary) -> None:
    """Warn (in the summary and the log) about a split the recipe asks for that holds no post: no training posts
    left (every site held out, every post dropped by `vote_ties`), or a `test_size` / `validation_size` above 0 that
    rounds to no post or site, or a split by site over data without sites."""
    if not any(splits.get(name) for name in ("train", "validation", "test")):
        return  # no labeled post at all: nothing to split (unlabeled files are for scoring)
    asked = {"train": True, "test": bool(config.test_sites or config.test_size),
             "validation": bool(config.validation_sites or config.validation_size)}  # fmt: skip
    empty = [name for name in ("train", "validation", "test") if asked[name] and not splits.get(name)]
    if empty:
        units = "sites" if config.split_by == "site" else "posts"
        summary.warn(
            f"the {' and '.join(empty)} split{'s' * (len(empty) > 1)} hold{'s' * (len(empty) == 1)} no post: check "
            f"test_size / validation_size (fractions of the {units}, rounded), the held-out sites and vote_ties"
        )


def build_views(splits, config: PrepArguments, summary: PrepSummary, new_split=None) -> dict:
    """{view: {split: rows}} of `splits` ({split: posts}, or (split, posts) pairs in a stream): `view_parts`, then
    `summarize_views`."""
    views, counts = view_parts(splits.items() if isinstance(splits, dict) else splits, config, new_split)
    summarize_views(views, counts, config, summary)
    return views


def view_parts(pairs, config: PrepArguments, new_split=None) -> tuple[dict, dict]:
    """({view: {split: rows}}, pair counts of every strategy) of (split, posts) pairs, the training posts under
    `vote_ties` (`training_ranks`); the pairs of every strategy are counted (without being built) so that the summary
    can compare them. `new_split(view, split)` gives the list-like that holds a split's rows (default: a list)."""
    views: dict[str, dict] = {view: {} for view in config.views}
    counts = {s: {} for s in PAIR_STRATEGIES}
    for split, posts in pairs:
        for post in posts:
            if split == "train":
                training_ranks(post, config.vote_ties)
            for view, rows in post_view_rows(post, config, counts).items():
                if rows:
                    if split not in views[view]:
                        views[view][split] = new_split(view, split) if new_split else []
                    views[view][split].extend(rows)
    return views, counts


def merge_view_parts(parts, config: PrepArguments, new_split) -> tuple[dict, dict]:
    """`view_parts` of consecutive runs of posts joined in their order: each split's rows appended part after part
    (`new_split(view, split).append_part`), the counts added with their keys in the order they first came."""
    views: dict[str, dict] = {view: {} for view in config.views}
    counts = {s: {} for s in PAIR_STRATEGIES}
    for part_views, part_counts in parts:
        for strategy, keys in part_counts.items():
            for key, n in keys.items():
                counts[strategy][key] = counts[strategy].get(key, 0) + n
        for view in config.views:
            for split, rows in part_views[view].items():
                if split not in views[view]:
                    views[view][split] = new_split(view, split)
                views[view][split].append_part(rows)
    return views, counts


def summarize_views(views: dict, counts: dict, config: PrepArguments, summary: PrepSummary) -> None:
    """The pair counts and rows per view and split in `summary`, and a warning when no training pair is left."""
    summary.pairs = {f"{s}{' (selected)' if s == config.pair_strategy else ''}": c for s, c in counts.items()}
    summary.splits = {view: {split: len(rows) for split, rows in d.items()} for view, d in views.items()}
    selected = counts[config.pair_strategy]
    if config.visibility_filter and "pairwise" in views and not views["pairwise"].get("train"):
        removed = selected.get("dropped_older_preferred", 0) + selected.get("dropped_no_timestamp", 0)
        summary.warn(
            f"the pairwise view has no training pairs: --visibility_filter removed {removed} of the "
            f"{selected.get('candidates', 0)} pairs of all splits ({selected.get('dropped_older_preferred', 0)} with "
            "the preferred "
            f"comment written first, {selected.get('dropped_no_timestamp', 0)} without a timestamp)"
        )


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


def to_dataset_dicts(views: dict) -> dict:
    import datasets

    return {
        view: datasets.DatasetDict({split: datasets.Dataset.from_list(rows) for split, rows in splits.items()})
        for view, splits in views.items()
        if splits
    }


class InMemoryPosts:
    """The posts and the views' rows of `prepare_views` held in memory (the bounded path's is
    `ondisk.SpooledPosts`)."""

    def __init__(self):
        self.posts: list[RankedPost] = []

    def add(self, post: RankedPost) -> None:
        self.posts.append(post)

    def close(self) -> None:
        pass

    def view_parts(self, splits: dict[str, list[PostRef]], config: PrepArguments) -> tuple[dict, dict]:
        """`view_parts` of the posts of `splits`, in lists."""
        return view_parts(((name, [self.posts[r.index] for r in refs]) for name, refs in splits.items()), config)

    new_split = None  # rows in lists
    dataset_dicts = staticmethod(to_dataset_dicts)


def prepare_views(config: PrepArguments, workdir: str | Path | None = None) -> tuple[dict, PrepSummary]:
    """Read, validate, split and build the views: ({view: DatasetDict}, summary). In memory, or with a `workdir` in
    bounded memory (`ondisk.SpooledPosts`: the posts spooled to Parquet there, the views staged in Arrow files that
    `DatasetDict.save_to_disk` writes). Both run these same steps, on `PostRef`s until the views are built."""
    if workdir is None:
        store = InMemoryPosts()
    else:
        from commentrank.data.ondisk import SpooledPosts

        store = SpooledPosts(workdir, config)
    summary = PrepSummary()
    refs: list[PostRef] = []
    try:
        for post in iter_posts(config, summary, workdir=workdir):
            refs.append(PostRef.of(len(refs), post))
            store.add(post)
    finally:
        store.close()
    if not refs:
        raise ValueError(f"no valid posts in {', '.join(config.inputs)}: {summary.to_json()}")
    refs = sample_max_posts(refs, config, summary)
    templated = [r for r in refs if not r.has_prompt]
    for warning in prompt_warnings_of(config.prompt_template, len(templated), sum(r.bodiless for r in templated)):
        summary.warn(warning)
    splits = select_splits(refs, config, summary)
    views, counts = store.view_parts(splits, config)
    summarize_views(views, counts, config, summary)
    return store.dataset_dicts(views), summary


PREP_CONFIG_FILE = "prep_config.json"
SUMMARY_FILE = "summary.json"


def record_files(config: PrepArguments, summary: PrepSummary) -> dict[str, str]:
    """The texts of `summary.json` and `prep_config.json` that go next to the views."""
    return {SUMMARY_FILE: summary.to_json() + "\n", PREP_CONFIG_FILE: json.dumps(config.recorded(), indent=2) + "\n"}


def public_files(config: PrepArguments, files: dict[str, str]) -> dict[str, str]:
    """`files` as pushed to the Hub: each input and output path shown as a model card shows it (relative to the
    working folder, else its last part), so that no absolute path of this machine is published."""
    from commentrank.model_card import display_name

    paths = sorted({*config.inputs, *([config.output_dir] if config.output_dir else [])}, key=len, reverse=True)
    out = {}
    for name, text in files.items():
        for path in paths:
            text = text.replace(json.dumps(path)[1:-1], json.dumps(display_name(path))[1:-1])
        out[name] = text
    return out


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
    if config.push_to_hub:  # its token before the work (a push that cannot be would come after all of it)
        from commentrank.hub import hub_token

        hub_token(config.push_to_hub)
    if config.output_dir:  # before the work: never replace an input or what commentrank did not write
        ours = dict(inputs=config.inputs, overwrite=config.overwrite_output, entries=output_entries(config))
        check_output_dir(config.output_dir, "data_prep", **ours)
    parent = Path(config.output_dir).resolve().parent if config.output_dir else None
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    # next to the output (room), named as OutputDir's temporary folders: a killed run's is removed by the next run
    prefix = f".{Path(config.output_dir).resolve().name}.tmp-{os.getpid()}-work-" if config.output_dir else None
    with tempfile.TemporaryDirectory(prefix=prefix or ".data_prep-work-", dir=parent) as workdir:
        staged, summary = prepare_views(config, workdir)  # bounded memory: the views are staged on disk
        files = record_files(config, summary)
        if config.output_dir:
            write_views(config.output_dir, staged, files, **ours)
            logger.info("wrote %s to %s", ", ".join(staged), config.output_dir)
        if config.push_to_hub:
            import datasets

            from commentrank.hub import push_dataset_views

            saved = Path(config.output_dir) if config.output_dir else Path(workdir) / "saved"
            if not config.output_dir:
                for view, staged_dict in staged.items():
                    staged_dict.save_to_disk(str(saved / view))
            dataset_dicts = {view: datasets.load_from_disk(str(saved / view)) for view in staged}  # memory-mapped
            push_dataset_views(dataset_dicts, public_files(config, files), config.push_to_hub, config.hub_private)
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


def cli(argv: list[str] | None = None) -> None:
    """The `commentrank-prepare` command: `main` without its return value, which the console-script wrapper would
    hand to `sys.exit` (a summary object: exit status 1, printed, after a good run)."""
    main(argv)
