"""Readers that turn ranked comment lists (CUP IT JSONL, tables, Hub datasets) into `RankedPost` records.

Every reader yields `(location, RankedPost | Problem)`; `validation.collect_posts` decides whether a problem
stops the run or is skipped and counted. Stack Exchange dumps have their own reader in `stackexchange.py`.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from commentrank.configs import Columns
from commentrank.data.records import Comment, RankedPost, ranks_by
from commentrank.data.validation import Problem, ReaderItem

META_KEYS = ("site", "url", "license")
GZIP_MAGIC = b"\x1f\x8b"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _typed(obj: Mapping, key: str, types: tuple, field_name: str, required: bool = True, null: str = "null"):
    """Return obj[key] when it has one of `types`; raise a `Problem` naming the field otherwise (`null`: the words
    for a required field whose value is null; a table's empty cell is 'missing')."""
    if key not in obj or (obj[key] is None and required):
        if required:
            raise ProblemSignal(Problem("missing_field", field_name, "missing" if key not in obj else null))
        return None
    value = obj[key]
    if value is None:
        return None
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        expected = "/".join(t.__name__ for t in types)
        raise ProblemSignal(Problem("wrong_type", field_name, f"expected {expected}, got {type(value).__name__}"))
    return _text(value, field_name) if isinstance(value, str) else value


def _text(value: str, field_name: str) -> str:
    """`value`, unless it holds a lone surrogate (JSON's escape `"\\ud800"` reads as one), which no UTF-8 file can
    hold: a `Problem` naming the field, not a crash when the views are written."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            message = f"a lone surrogate {value[err.start]!r} (character {err.start}) is not valid UTF-8 text"
            raise ProblemSignal(Problem("not_utf8", field_name, message)) from None
    return value


def _meta(obj: Mapping) -> dict:
    """The post's `site`, `url` and `license` (null or absent: none); another type is a `Problem` naming the field
    (a site dropped silently would put the post in the split of the posts without one)."""
    meta = {}
    for key in META_KEYS:
        if obj.get(key) is not None:
            meta[key] = _typed(obj, key, (str,), key)
    return meta


class ProblemSignal(Exception):
    """Raised by the row readers' helpers with the structural `Problem` of a record."""

    def __init__(self, problem: Problem):
        self.problem = problem


def _optional_int(obj: Mapping, key: str, field_name: str) -> int | None:
    return _int_or_none(_typed(obj, key, (int, float), field_name, required=False), field_name)


def _int_or_none(value, field_name: str) -> int | None:
    if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
        raise ProblemSignal(Problem("wrong_type", field_name, f"expected an integer, got {type(value).__name__}"))
    if isinstance(value, float):
        if not value.is_integer():
            raise ProblemSignal(Problem("wrong_type", field_name, f"expected an integer, got {value}"))
        value = int(value)
    return value


def post_from_mapping(obj, columns: Columns, default_id: str, labels_required: bool = True) -> RankedPost:
    """Build a post from one nested row (a CUP IT JSON object); raises `ProblemSignal` on structural errors.

    With `labels_required=False` (one post to rank) a comment may also be a plain string or lack its score.
    """
    if not isinstance(obj, Mapping):
        raise ProblemSignal(Problem("wrong_type", "<record>", f"expected a JSON object, got {type(obj).__name__}"))
    raw_comments = obj.get(columns.comments)
    try:
        title = _typed(obj, columns.title, (str,), columns.title)
        body = _typed(obj, columns.body, (str,), columns.body, required=False)
        raw_comments = _typed(obj, columns.comments, (list,), columns.comments)
        return _post_with_comments(obj, columns, default_id, labels_required, title, body, raw_comments)
    except ProblemSignal as signal:
        signal.problem.n_comments = len(raw_comments) if isinstance(raw_comments, list) else 0  # read and dropped
        raise


def _post_with_comments(obj, columns, default_id, labels_required, title, body, raw_comments) -> RankedPost:
    comments = []
    for i, item in enumerate(raw_comments):
        where = f"{columns.comments}[{i}]"
        if isinstance(item, str) and not labels_required:
            comments.append(Comment(text=_text(item, where), rank=None))
            continue
        if not isinstance(item, Mapping):
            raise ProblemSignal(Problem("wrong_type", where, f"expected an object, got {type(item).__name__}"))
        text = _typed(item, columns.comment_text, (str,), f"{where}.{columns.comment_text}")
        if columns.comment_score not in item and labels_required:
            raise ProblemSignal(Problem("missing_field", f"{where}.{columns.comment_score}", "missing"))
        rank = _optional_int(item, columns.comment_score, f"{where}.{columns.comment_score}")
        votes = _optional_int(item, columns.comment_votes, f"{where}.{columns.comment_votes}")
        created = _typed(item, columns.comment_created, (str,), f"{where}.{columns.comment_created}", required=False)
        comments.append(Comment(text=text, rank=rank, votes=votes, created=created))
    post_id = obj.get(columns.post_id)
    if isinstance(post_id, str):
        _text(post_id, columns.post_id)
    return RankedPost(str(post_id) if post_id is not None else default_id, title, comments, body or None, _meta(obj))


def _open_binary(path: Path):
    if path.suffix.lower() != ".gz":
        return open(path, "rb")
    with open(path, "rb") as handle:
        head = handle.read(2)
    if head and head != GZIP_MAGIC:
        raise ValueError(f"{path}: not gzip data, though its name ends in .gz (plain text? name it .jsonl)")
    return gzip.open(path, "rb")


def _not_utf8(raw: bytes, line_no: int, err: UnicodeDecodeError) -> str:
    """The words for a line that is not UTF-8, with what the file is when its first line shows it."""
    hint = ""
    if line_no == 1 and raw.startswith(GZIP_MAGIC):
        hint = ": the file is gzip data (name it .jsonl.gz)"
    elif line_no == 1 and raw.startswith(UTF16_BOMS):
        hint = ": the file is UTF-16 (it starts with a UTF-16 byte order mark); save it as UTF-8"
    return f"not valid UTF-8 (byte {err.start}){hint}"


def read_cupit_jsonl(path: str | os.PathLike, columns: Columns | None = None) -> Iterator[ReaderItem]:
    """CUP IT JSONL (`.jsonl` or `.jsonl.gz`, a UTF-8 BOM allowed): one post per line; `score: null` everywhere marks
    an unlabeled post. A gzip file that ends early, or whose data is corrupt, stops the run with its name and the last
    line read."""
    columns = columns or Columns()
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a CUP IT JSONL file")
    line_no = 0
    with _open_binary(path) as handle:
        lines = enumerate(handle, start=1)
        while True:
            try:
                line_no, raw = next(lines)
            except StopIteration:
                return
            except (EOFError, OSError, zlib.error) as err:  # a truncated (EOFError) or corrupt .gz
                what = "file ends early (truncated)" if isinstance(err, EOFError) else "data is corrupt"
                raise ValueError(
                    f"{path}: the gzip {what} after line {line_no} ({type(err).__name__}: {err})"
                ) from None
            location = f"{path}:{line_no}"
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError as err:
                yield location, Problem("not_utf8", "<line>", _not_utf8(raw, line_no, err))
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                reason = err.msg.removesuffix(" at")  # e.g. "Invalid control character at"
                yield location, Problem("malformed_json", "<line>", f"malformed JSON: {reason} (column {err.colno})")
                continue
            except RecursionError:  # a line nested deeper than Python's recursion limit
                yield location, Problem("malformed_json", "<line>", "malformed JSON: nested too deeply")
                continue
            try:
                yield location, post_from_mapping(obj, columns, default_id=f"{path.name}:{line_no}")
            except ProblemSignal as signal:
                yield location, signal.problem


def ranks_from_votes(votes: list[int], created: list[str | None]) -> list[int]:
    """Rank 0 = most votes; equal votes: the earlier answer ranks first (then the earlier position)."""
    return ranks_by([(-v, c or "") for v, c in zip(votes, created)])


def read_rows(
    rows: Iterable[Mapping], source: str, columns: Columns | None = None, first_line: int | None = None
) -> Iterator[ReaderItem]:
    """Rows of a table or dataset: nested (a comments column) or long (one row per comment, grouped by post id).

    Locations are `source:row N` (1-based), or `source:LINE` when the rows are the lines of a text table whose first
    row is on line `first_line` (a CSV: 2, after its header).
    """
    columns = columns or Columns()

    def where(i: int) -> str:
        return f"{source}:{i + first_line}" if first_line is not None else f"{source}:row {i + 1}"

    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        return
    if columns.comments in first:
        for i, row in enumerate([first, *rows]):
            try:
                yield where(i), post_from_mapping(row, columns, default_id=f"{source}:{i + 1}")
            except ProblemSignal as signal:
                yield where(i), signal.problem
        return
    missing = [c for c in (columns.post_id, columns.title, columns.comment) if c not in first]
    if missing or not (columns.comment_score in first or columns.comment_votes in first):
        raise ValueError(
            f"{source}: no '{columns.comments}' column for nested rows, and long-format rows need columns "
            f"'{columns.post_id}', '{columns.title}', '{columns.comment}' and '{columns.comment_score}' or "
            f"'{columns.comment_votes}'; found {sorted(first)} (set the column names with --*_column options)"
        )
    yield from _group_long_rows([first, *rows], columns, where)


def read_listwise_rows(rows: Iterable[Mapping], source: str) -> Iterator[ReaderItem]:
    """Rows of a listwise view (`prompt`, `comments` as texts, `ranks` and `votes` lists or null) as posts whose
    prompt is already built; `text` (the title), `post_id`, `site`, `url` and `license` are kept when present."""
    for i, row in enumerate(rows):
        location = f"{source}:row {i + 1}"
        try:
            prompt = _typed(row, "prompt", (str,), "prompt")
            texts = _typed(row, "comments", (list,), "comments")
            labels = {}
            for key in ("ranks", "votes"):
                values = _typed(row, key, (list,), key, required=False)
                if values is not None and len(values) != len(texts):
                    raise ProblemSignal(Problem("wrong_length", key, f"{len(values)} {key} for {len(texts)} comments"))
                labels[key] = values or [None] * len(texts)
            comments = []
            for j, text in enumerate(texts):
                if not isinstance(text, str):
                    raise ProblemSignal(
                        Problem("wrong_type", f"comments[{j}]", f"expected a string, got {type(text).__name__}")
                    )
                rank = _int_or_none(labels["ranks"][j], f"ranks[{j}]")
                votes = _int_or_none(labels["votes"][j], f"votes[{j}]")
                comments.append(Comment(text, rank, votes))
            title = row.get("text") if isinstance(row.get("text"), str) else prompt
            meta = _meta(row)
            post_id = str(row["post_id"]) if row.get("post_id") is not None else f"{source}:{i + 1}"
            yield location, RankedPost(post_id, title, comments, None, meta, prompt=prompt)
        except ProblemSignal as signal:
            yield location, signal.problem


def _group_long_rows(rows: list[Mapping], columns: Columns, where) -> Iterator[ReaderItem]:
    """Posts of a long table; a problem's location is that of the offending row."""
    groups: dict[str, list[tuple[int, Mapping]]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(str(row[columns.post_id]), []).append((i, row))
    for post_id, members in groups.items():
        location = where(members[0][0])
        try:
            first = members[0][1]
            comments = []
            for i, row in members:
                location = where(i)
                text = _typed(row, columns.comment, (str,), columns.comment, null="missing")  # an empty cell
                rank = _optional_int(row, columns.comment_score, columns.comment_score)
                votes = _optional_int(row, columns.comment_votes, columns.comment_votes)
                created = _typed(row, columns.comment_created, (str,), columns.comment_created, required=False)
                comments.append(Comment(text, rank, votes, created))
            location = where(members[0][0])
            if all(c.rank is None for c in comments) and all(c.votes is not None for c in comments):
                ranks = ranks_from_votes([c.votes for c in comments], [c.created for c in comments])
                for comment, rank in zip(comments, ranks):
                    comment.rank = rank
            title = _typed(first, columns.title, (str,), columns.title, null="missing")
            body = _typed(first, columns.body, (str,), columns.body, required=False)
            meta = _meta(first)
            yield location, RankedPost(post_id, title, comments, body or None, meta)
        except ProblemSignal as signal:
            signal.problem.n_comments = len(members)
            yield location, signal.problem


TABLE_BUILDERS = {".csv": "csv", ".parquet": "parquet", ".json": "json"}


# The ranked files `read_source` reads by name; anything else is a folder or a Hub dataset id.
RAW_SUFFIXES = (".jsonl", ".jsonl.gz", ".xml", ".csv", ".parquet", ".json")


def is_ranked_file_name(name: str | os.PathLike) -> bool:
    """Whether a path names a ranked file that data_prep reads (CUP IT JSONL, Posts.xml, a table), by its ending."""
    return str(name).lower().endswith(RAW_SUFFIXES)


def read_source(
    source: str,
    input_format: str = "auto",
    columns: Columns | None = None,
    split: str = "train",
    num_proc: int = 1,
    workdir: str | os.PathLike | None = None,
):
    """Dispatch on the source: a local file by suffix, a `Posts.xml` dump, a folder saved with `save_to_disk`, or else
    a Hub dataset id (`split` of a Hub or saved DatasetDict). With a `workdir`, a `Posts.xml` is read in bounded
    memory, `num_proc` processes at once (`read_posts_xml_bounded`: the same posts, grouped on disk). A Posts.xml's
    questions come with however many answers they have: the caller's validation (`min_comments`) drops those with
    too few, as for every other format."""
    from commentrank.data.stackexchange import read_posts_xml, read_posts_xml_bounded

    path = Path(source)
    suffixes = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    if input_format == "auto":
        if suffixes in (".xml", ".xml.gz"):
            input_format = "stackexchange"
        elif suffixes in (".jsonl", ".jsonl.gz"):
            input_format = "cupit"
        elif path.is_dir():
            input_format = "saved"
        elif path.exists():
            input_format = "table"
        else:
            input_format = "hub"
    if not path.exists() and input_format != "hub":
        raise FileNotFoundError(f"input file not found: {source}")
    if input_format == "stackexchange":
        if path.is_dir():
            raise ValueError(f"{source} is a folder, not a Stack Exchange Posts.xml dump")
        if path.suffix.lower() == ".gz":
            raise ValueError(f"{source}: a compressed dump: decompress it first (gunzip), data_prep reads Posts.xml")
        if workdir:
            return read_posts_xml_bounded(path, workdir, min_answers=0, num_proc=num_proc)
        return read_posts_xml(path, min_answers=0)
    if input_format == "cupit":
        return read_cupit_jsonl(path, columns)
    import datasets

    if input_format == "table":
        builder = TABLE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(
                f"{source}: unknown table type '{path.suffix}' (use .csv, .parquet, .json, .jsonl or .jsonl.gz)"
            )
        options = {"encoding": "utf-8-sig"} if builder == "csv" else {}  # a spreadsheet's BOM is not a column name
        rows = datasets.load_dataset(builder, data_files=str(path), split="train", **options)
        return read_rows(rows, source, columns, first_line=2 if builder == "csv" else None)
    elif input_format == "saved":
        rows = datasets.load_from_disk(str(path))
        if isinstance(rows, datasets.DatasetDict):
            rows = rows[split]
    elif input_format == "hub":
        try:
            rows = datasets.load_dataset(source, split=split)
        except (FileNotFoundError, ConnectionError, OSError, ValueError) as err:
            first = str(err).splitlines()[0] if str(err) else ""
            raise FileNotFoundError(
                f"{source}: not a local file or folder, and the Hub dataset is not available ({type(err).__name__}: "
                f"{first})"
            ) from None
    else:
        raise ValueError(f"unknown input_format '{input_format}' (auto, cupit, stackexchange, table, saved, hub)")
    return read_rows(rows, source, columns)
