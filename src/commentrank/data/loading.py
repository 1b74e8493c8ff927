"""One loader of ranked data for training, scoring and the baselines, with the same rules for every source:

- a data_prep folder (`pairwise/`, `listwise/`, `sft/`, and `prep_config.json`, which records the prompt template);
- a raw ranked file (CUP IT JSONL, Posts.xml, CSV/Parquet/JSON), converted by data_prep's own code: for training into
  the split views (`skip_invalid` as in data_prep; split with data_prep's default seed, never a training run's, so
  every run on the file has the same test posts), for scoring into all its posts in file order;
- a Hub dataset whose configs are data_prep's views (and `prep_config.json`), or a plain one (listwise rows, or
  raw CUP IT rows converted by data_prep's readers);
- a folder saved with `save_to_disk` (a Dataset or DatasetDict of listwise, pairwise, sft or raw CUP IT rows).

    data = open_ranked_data("outputs/quickstart/data")
    data.view("listwise")["train"], data.prompt_template          # training
    rows = load_scoring_rows("test.jsonl", prompt_template="{title}")  # scoring: validated listwise rows
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from commentrank.configs import DEFAULT_PROMPT_TEMPLATE, VIEWS, PrepArguments
from commentrank.data.prepare import PREP_CONFIG_FILE, SUMMARY_FILE, iter_posts
from commentrank.data.readers import is_ranked_file_name, read_listwise_rows, read_rows
from commentrank.data.records import RankedPost
from commentrank.data.validation import SCORING, PrepSummary, collect_posts
from commentrank.data.views import build_prompt, listwise_row, prompt_warnings
from commentrank.io_utils import is_hub_id, redact

logger = logging.getLogger(__name__)


@dataclass
class RankedData:
    """Ranked data as data_prep's views. `prompt_template` is the template its prompts were built with (None when the
    source does not record it); `summary` what data_prep read, kept and dropped (None when not recorded)."""

    source: str
    kind: str  # "prepared" (data_prep's views), "plain" (one saved dataset of a view's rows), "raw" (ranked posts)
    prompt_template: str | None = None
    summary: dict | None = None
    raw_rows: dict | None = None  # kind "raw" from a dataset: its splits of CUP IT rows (None: a raw file)
    _load_view: object = field(default=None, repr=False)
    _views: dict = field(default_factory=dict, repr=False)

    def view(self, name: str) -> datasets.DatasetDict | None:
        """One view as a DatasetDict (split -> rows), or None when the source has no such view."""
        if name not in self._views:
            self._views[name] = self._load_view(name) if self._load_view else None
        return self._views[name]

    def require_view(self, name: str) -> datasets.DatasetDict:
        view = self.view(name)
        if view is None:
            have = [v for v in VIEWS if self.view(v) is not None]
            raise ValueError(f"{self.source} has no '{name}' view (it has: {', '.join(have) or 'none'})")
        return view


MODEL_TEMPLATE = "the model's prompt_template"  # `asked_by` when the template is the one a model was trained with


def check_prompt_template(explicit: str | None, recorded: str | None, source: str, asked_by: str = "") -> str:
    """The template to use: the data's own, or the explicit one; an explicit one that disagrees with the data's is an
    error (the prompts were already built with the data's). `asked_by`: where the explicit one comes from (default:
    the `--prompt_template` flag; `MODEL_TEMPLATE`: the model's saved settings)."""
    if explicit is not None and recorded is not None and explicit != recorded:
        fix = "drop the flag, or rebuild the data with data_prep --prompt_template"
        if asked_by == MODEL_TEMPLATE:
            fix = "rebuild the data with data_prep --prompt_template set to it, or give a raw ranked file"
        raise ValueError(
            f"{asked_by or 'prompt_template'} {explicit!r} disagrees with {recorded!r}, the template {source} was "
            f"built with: {fix}"
        )
    return recorded or explicit or DEFAULT_PROMPT_TEMPLATE


def open_ranked_data(
    source: str,
    *,
    prompt_template: str | None = None,
    pair_strategy: str = "adjacent",
    skip_invalid: bool = False,
    hub_config: str | None = None,
    asked_by: str = "",
) -> RankedData:
    """Ranked data for training (`hub_config`: the config of a Hub dataset that is not a data_prep output).

    Raw posts (a file, or a dataset of CUP IT rows) are converted once, by data_prep's code, with `prompt_template`
    (default `{title}`), `pair_strategy` and `skip_invalid`, and split as data_prep splits them by default: with
    `PrepArguments`' default seed, whatever a training run's `--seed` (no seed is taken here), so that runs with other
    seeds, and the report posts of grpo.py / best_of_n.py (`policy.held_out_posts`), share one train/test split. For
    a data_prep folder or Hub dataset an explicit `prompt_template` must agree with the one it records."""
    data = _open(source, hub_config)
    if data.kind == "raw":
        return _convert(source, prompt_template or DEFAULT_PROMPT_TEMPLATE, pair_strategy, skip_invalid)
    data.prompt_template = check_prompt_template(prompt_template, data.prompt_template, source, asked_by)
    return data


@functools.lru_cache(maxsize=4)
def _convert(source: str, prompt_template: str, pair_strategy: str, skip_invalid: bool) -> RankedData:
    """All views of raw ranked posts, converted once per run by data_prep's code, split with data_prep's default seed
    (`PrepArguments().seed`: the split of `data_prep/prepare.py --inputs FILE`)."""
    from commentrank.data.prepare import prepare_views

    config = PrepArguments(inputs=[source], prompt_template=prompt_template, pair_strategy=pair_strategy,
                           skip_invalid=skip_invalid)  # fmt: skip
    views, summary = prepare_views(config)
    logger.info("converted %s with data_prep:\n%s", source, summary.format())
    return RankedData(source, "converted", prompt_template, summary.to_dict(), _views=dict(views))


def _open(source: str, hub_config: str | None = None) -> RankedData:
    """What a source holds, nothing converted yet."""
    path = Path(source)
    if hub_config is not None and hub_config not in VIEWS and (path.exists() or not is_hub_id(source)):
        raise ValueError(f"{source} has no '{hub_config}' view (a local source has {', '.join(VIEWS)})")
    if path.is_dir():
        return _open_folder(path)
    if path.is_file() or is_ranked_file_name(source):
        if not path.is_file():
            raise FileNotFoundError(f"dataset file not found: {source}")
        return RankedData(source, "raw")
    if is_hub_id(source):
        return _open_hub(source, hub_config if hub_config not in VIEWS else None)
    raise FileNotFoundError(f"dataset not found: {source} (no such file or folder, and not a Hub dataset id)")


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def _open_folder(path: Path) -> RankedData:
    from commentrank.outputs import check_finished

    check_finished(path)
    if any((path / view).is_dir() for view in VIEWS):
        recorded = _read_json(path / PREP_CONFIG_FILE) or {}

        def load(view):
            return datasets.load_from_disk(str(path / view)) if (path / view).is_dir() else None

        return RankedData(str(path), "prepared", recorded.get("prompt_template"), _read_json(path / SUMMARY_FILE),
                          _load_view=load)  # fmt: skip
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        loaded = datasets.load_from_disk(str(path))
        return _plain(str(path), loaded if isinstance(loaded, datasets.DatasetDict) else {None: loaded})
    if not any(path.iterdir()):
        raise FileNotFoundError(f"{path} is empty: expected a folder written by data_prep/prepare.py")
    raise FileNotFoundError(
        f"{path} holds no views: expected a folder written by data_prep/prepare.py (pairwise/, listwise/, sft/) or a "
        "dataset saved with save_to_disk"
    )


def _open_hub(dataset_id: str, config: str | None = None) -> RankedData:
    try:
        if config is not None:  # a plain dataset's config
            return _plain(dataset_id, datasets.load_dataset(dataset_id, config))
        configs = datasets.get_dataset_config_names(dataset_id)
        if set(configs) & set(VIEWS):
            recorded = _hub_json(dataset_id, PREP_CONFIG_FILE) or {}

            def load(view):
                return datasets.load_dataset(dataset_id, view) if view in configs else None

            return RankedData(dataset_id, "prepared", recorded.get("prompt_template"),
                              _hub_json(dataset_id, SUMMARY_FILE), _load_view=load)  # fmt: skip
        return _plain(dataset_id, datasets.load_dataset(dataset_id))
    except (FileNotFoundError, ConnectionError, OSError) as err:
        raise FileNotFoundError(
            f"dataset not found: {dataset_id} is neither a local file or folder nor a Hub dataset available "
            f"({type(err).__name__}: {redact(str(err).splitlines()[0]) if str(err) else ''})"
        ) from None


def _hub_json(dataset_id: str, name: str) -> dict | None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return _read_json(Path(hf_hub_download(dataset_id, name, repo_type="dataset")))
    except (EntryNotFoundError, LocalEntryNotFoundError):
        return None


def _row_view(columns: set) -> str | None:
    """Which data_prep view rows with these columns are (None: raw CUP IT rows or unknown)."""
    if {"prompt", "chosen", "rejected"} <= columns:
        return "pairwise"
    if {"prompt", "comments"} <= columns:
        return "listwise"
    if "text" in columns and "comments" not in columns:
        return "sft"
    return None


def _plain(source: str, splits) -> RankedData:
    """One saved dataset (`splits`: a DatasetDict, or {None: Dataset}): one view's rows, or raw CUP IT rows."""
    view = _row_view(set(next(iter(splits.values())).column_names))
    if view is None:
        return RankedData(source, "raw", raw_rows=splits)
    return RankedData(source, "plain", _load_view=lambda name: splits if name == view else None)


# --------------------------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ScoringRows:
    """Posts to score as listwise rows (`prompt`, `comments`, `ranks` or None, `votes`, `post_id`, `text`, ...), the
    split they came from, the template their prompts were built with (None: unknown), what was read and skipped, and
    the warnings about their prompts (`views.prompt_warnings`, logged here)."""

    rows: list[dict]
    split: str | None
    prompt_template: str | None
    summary: PrepSummary
    warnings: list[str] = field(default_factory=list)


def load_scoring_rows(
    source: str,
    split: str = "test",
    prompt_template: str | None = None,
    skip_invalid: bool = False,
    max_posts: int | None = None,
    asked_by: str = "",
) -> ScoringRows:
    """Every post of a raw file (in file order), or of one split of a data_prep folder, Hub dataset or saved dataset
    (`split`, else its `unlabeled` split), checked by the one validator under the scoring rules (one comment is
    enough, repeated texts are scored and counted). Raw posts get prompts from `prompt_template` (default
    `{title}`).

    `max_posts`: the first `max_posts` valid posts, and reading stops there, so the summary counts only what was read
    up to the cut: read = scored + skipped (by reason), and `duplicate_texts` counts the scored posts' repeats."""
    summary = PrepSummary()
    data = _open(source)
    if data.kind == "raw" and data.raw_rows is None:  # a raw file: data_prep's readers, every post in file order
        posts = _first(iter_posts(PrepArguments(inputs=[source], skip_invalid=skip_invalid), summary, SCORING, False),
                       max_posts)  # fmt: skip
        template, used_split = prompt_template or DEFAULT_PROMPT_TEMPLATE, None
    else:
        if data.kind == "raw":  # a dataset of raw CUP IT rows: data_prep's reader, prompts from the template
            rows, used_split = _pick_split(data.raw_rows, split, source)
            items = read_rows(rows, source, PrepArguments().columns)
            template = prompt_template or DEFAULT_PROMPT_TEMPLATE
        else:
            listwise = data.view("listwise")
            if listwise is None:
                raise ValueError(f"{source} holds no listwise view or rows (prompt, comments): nothing to score")
            rows, used_split = _pick_split(listwise, split, source)
            items = read_listwise_rows(rows, source)
            template = check_prompt_template(prompt_template, data.prompt_template, source, asked_by)
        posts = _first(collect_posts(items, summary, skip_invalid, SCORING), max_posts)
    rows = [{**listwise_row(p, build_prompt(p, template)), "text": p.title} for p in posts]
    if not rows:
        dropped = dict(summary.posts_dropped)
        raise ValueError(f"{source}: no posts to score" + (f" (skipped: {dropped})" if dropped else ""))
    warnings = prompt_warnings(posts, template)
    for warning in warnings:
        logger.warning(warning)
    return ScoringRows(rows, used_split, template, summary, warnings)


def _first(posts: Generator[RankedPost, None, None], max_posts: int | None) -> list[RankedPost]:
    """The first `max_posts` posts (all of them: None); the rest are never read, validated or counted."""
    try:
        return list(itertools.islice(posts, max_posts))
    finally:
        posts.close()


def _pick_split(splits, split: str, source: str):
    if None in splits:  # a single saved Dataset
        return splits[None], None
    if split in splits:
        return splits[split], split
    if "unlabeled" in splits:
        logger.warning("%s has no split '%s': scoring its 'unlabeled' split", source, split)
        return splits["unlabeled"], "unlabeled"
    raise ValueError(f"{source} has no split '{split}' (splits: {', '.join(splits)}); choose one with --split")
