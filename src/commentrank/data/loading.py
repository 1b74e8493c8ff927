"""Posts to score: a ranked file (converted with data_prep's readers), a data_prep folder or a Hub dataset, as
listwise rows checked before scoring."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from commentrank.data.readers import is_ranked_file_name
from commentrank.io_utils import is_hub_id

logger = logging.getLogger(__name__)


@dataclass
class ScoringData:
    """Posts as listwise rows (`prompt`, `comments`, `ranks` or None, optional `votes`, `post_id`, `text`)."""

    rows: list[dict]
    source: str
    split: str | None = None
    skipped: dict = field(default_factory=dict)


def _from_posts(posts, summary, source: str, split: str | None, prompt_template: str) -> ScoringData:
    """`RankedPost`s from data_prep's readers as listwise rows, with what the readers skipped."""
    from commentrank.data.views import build_prompt, listwise_row

    rows = [{**listwise_row(p, build_prompt(p, prompt_template)), "text": p.title} for p in posts]
    return ScoringData(rows, source, split, dict(summary.posts_dropped))


def _read_ranked_file(path: str, prompt_template: str, skip_invalid: bool) -> ScoringData:
    from commentrank.data.prepare import PrepConfig, load_posts
    from commentrank.data.validation import PrepSummary

    summary = PrepSummary()
    posts = load_posts(PrepConfig(inputs=[path], skip_invalid=skip_invalid, min_comments=1), summary)
    return _from_posts(posts, summary, path, None, prompt_template)


def _from_rows(rows: list[dict], source: str, split: str | None, prompt_template: str, skip_invalid: bool):
    """Rows of a dataset: listwise rows as they are (checked), CUP IT rows converted with data_prep's readers."""
    if rows and _is_raw_cupit(rows):
        from commentrank.data.prepare import PrepConfig
        from commentrank.data.readers import read_rows
        from commentrank.data.validation import PrepSummary, collect_posts

        summary = PrepSummary()
        items = read_rows(rows, source, PrepConfig().columns)
        posts = list(collect_posts(items, summary, skip_invalid, min_comments=1))
        return _from_posts(posts, summary, source, split, prompt_template)
    kept, skipped = validate_rows(rows, source, skip_invalid)
    return ScoringData(kept, source, split, skipped)


def _pick_split(dataset_dict, split: str, source: str) -> tuple:
    if split in dataset_dict:
        return dataset_dict[split], split
    if "unlabeled" in dataset_dict:
        logger.warning("%s has no split '%s': scoring its 'unlabeled' split", source, split)
        return dataset_dict["unlabeled"], "unlabeled"
    raise ValueError(f"{source} has no split '{split}' (splits: {', '.join(dataset_dict)}); choose one with --split")


def _read_folder(path: Path, split: str) -> tuple[list[dict], str]:
    import datasets

    for candidate in (path / "listwise", path):
        if (candidate / "dataset_dict.json").is_file():
            rows, split = _pick_split(datasets.load_from_disk(str(candidate)), split, str(path))
            return list(rows), split
        if (candidate / "state.json").is_file():
            return list(datasets.load_from_disk(str(candidate))), None
    raise FileNotFoundError(
        f"dataset folder {path} holds no listwise view: expected a folder written by data_prep/prepare.py "
        "(with listwise/) or a DatasetDict saved with save_to_disk"
    )


def _read_hub(dataset_id: str, split: str) -> tuple[list[dict], str]:
    import datasets

    try:
        try:
            loaded = datasets.load_dataset(dataset_id, "listwise")
        except ValueError:  # no such config: a plain dataset (listwise rows or raw CUP IT rows)
            loaded = datasets.load_dataset(dataset_id)
    except (FileNotFoundError, ConnectionError, OSError) as err:
        raise FileNotFoundError(
            f"dataset not found: {dataset_id} is neither a local file or folder nor a Hub dataset available "
            f"offline ({type(err).__name__})"
        ) from None
    rows, split = _pick_split(loaded, split, dataset_id)
    return list(rows), split


def _is_raw_cupit(rows: list[dict]) -> bool:
    first = rows[0]
    return "prompt" not in first and "text" in first and isinstance(first.get("comments"), list)


def validate_rows(rows: list[dict], source: str, skip_invalid: bool = False) -> tuple[list[dict], dict]:
    """Check listwise rows before scoring; errors name the row and field. Returns the kept rows and skip counts."""
    from collections import Counter

    from commentrank.data.validation import InvalidInputError

    if rows:
        missing = [key for key in ("prompt", "comments") if key not in rows[0]]
        if missing:
            raise ValueError(
                f"{source}: rows lack the field(s) {missing}: expected listwise rows (prompt, comments, ranks, votes) "
                f"or CUP IT rows (text, comments of {{text, score}}); found {sorted(rows[0])}"
            )
    kept, skipped = [], Counter()
    for i, row in enumerate(rows):
        problem = _row_problem(row)
        if problem is None:
            kept.append(row)
            continue
        if not skip_invalid:
            raise InvalidInputError(f"{source}:row {i}", problem)
        skipped[problem.reason] += 1
    return kept, dict(skipped)


def _row_problem(row: dict):
    from commentrank.data.validation import Problem

    if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
        return Problem("empty_post_text", "prompt", "the prompt is missing or empty")
    comments = row.get("comments")
    if not isinstance(comments, list):
        return Problem("wrong_type", "comments", f"expected a list of comment texts, got {type(comments).__name__}")
    if not comments:
        return Problem("empty_post", "comments", "the post has no comments to score")
    for j, comment in enumerate(comments):
        if not isinstance(comment, str):
            return Problem("wrong_type", f"comments[{j}]", f"expected a string, got {type(comment).__name__}")
        if not comment.strip():
            return Problem("empty_comment_text", f"comments[{j}]", "the comment text is empty")
    for key in ("ranks", "votes"):
        values = row.get(key)
        if values is None:
            continue
        if not isinstance(values, list) or len(values) != len(comments):
            return Problem("wrong_length", key, f"{key} must list one value per comment ({len(comments)})")
        if key == "ranks" and any(v is None for v in values) and not all(v is None for v in values):
            return Problem("mixed_labels", key, "some comments are ranked and some are not")
    return None


def load_scoring_data(
    dataset: str,
    split: str = "test",
    prompt_template: str = "{title}",
    skip_invalid: bool = False,
    max_posts: int | None = None,
) -> ScoringData:
    """Posts to score from a ranked file (CUP IT JSONL, Posts.xml, CSV...: converted with data_prep's readers), a
    data_prep folder (its listwise view, `split`, else `unlabeled`) or a Hub dataset (listwise or CUP IT rows)."""
    path = Path(dataset)
    if path.is_file() or is_ranked_file_name(path):
        if not path.is_file():
            raise FileNotFoundError(f"dataset file not found: {dataset}")
        data = _read_ranked_file(dataset, prompt_template, skip_invalid)
    elif path.is_dir() or is_hub_id(dataset):
        rows, used_split = _read_folder(path, split) if path.is_dir() else _read_hub(dataset, split)
        data = _from_rows(rows, dataset, used_split, prompt_template, skip_invalid)
    else:
        raise FileNotFoundError(f"dataset not found: {dataset} (no such file or folder)")
    if max_posts is not None:
        data.rows = data.rows[:max_posts]
    if not data.rows:
        raise ValueError(f"{dataset}: no posts to score" + (f" (skipped: {data.skipped})" if data.skipped else ""))
    return data
