"""Reader for Stack Exchange data dumps (`Posts.xml`): each question with its answers, ranked by votes.

Every question (PostTypeId 1) is yielded once, in file order, as a `RankedPost` or a `Problem`; a question with
fewer than `min_answers` answers (none at all included) becomes a ``too_few_comments`` Problem so that the caller
counts it. Answers (PostTypeId 2) are matched by ParentId wherever they appear; answers to questions that are not in
the file, and rows of other post types (tag wikis etc.), are ignored. Answers and questions are held in memory
until the end of the file, as answers may come after any later question.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from xml.parsers import expat

from commentrank.data.records import Comment, RankedPost, ranks_by
from commentrank.data.validation import Problem

_BLOCK_TAGS = {"p", "div", "ul", "ol", "li", "pre", "blockquote", "hr", "table", "tr", "dl", "dt", "dd"}
_BLOCK_TAGS |= {f"h{i}" for i in range(1, 7)}
_SPACE = " \t\r\f\v"  # ASCII only: non-breaking and other Unicode spaces are kept, as in the dumps
_SPACES = re.compile(f"[{_SPACE}]{{2,}}|[{_SPACE.strip(' ')}]")  # runs that are not one space already
_LINE_END_SPACE = re.compile(" \n ?|\n ")  # after runs of spaces became one: each line stripped
# The tags of plain HTML, as `HTMLParser` reads them: a start tag with well-formed attributes (values quoted, or
# unquoted and then a space or the end), or an end tag. `html_to_text` reads an HTML whose every `<` opens one of
# these without `HTMLParser` (several times faster); anything else (comments, `<!`, `<?`, a stray `<`, script or
# style, whose content is not HTML) goes to `HTMLParser`.
_SIMPLE_TAG = re.compile(
    r"""<(?:/([a-zA-Z][-.a-zA-Z0-9:_]*)\s*|([a-zA-Z][a-zA-Z0-9]*)(?:\s+[a-zA-Z_:][-a-zA-Z0-9_:.]*"""
    r"""(?:\s*=\s*(?:"[^"<>]*"|'[^'<>]*'|[^\s"'<>=`]+(?=[\s>])))?)*\s*(/?))>"""
)
_RAW_TEXT_TAG = re.compile(r"</?(?:script|style)", re.IGNORECASE)  # HTMLParser's CDATA_CONTENT_ELEMENTS, or more
_BLANK_LINES = re.compile(r"\n{3,}")
_INTEGER = re.compile(r"[+-]?\d+")
_QUESTION_FIELDS = ("Id", "Title", "Body", "CreationDate", "ContentLicense")
_ANSWER_FIELDS = ("Id", "ParentId", "Body", "Score", "CreationDate")


def _normalize_prose(text: str) -> str:
    """Runs of ASCII spaces become one, and the space around each line break goes (each regex only where its
    pattern can match: most texts have nothing to replace)."""
    if "  " in text or "\t" in text or "\r" in text or "\f" in text or "\v" in text:
        text = _SPACES.sub(" ", text)
    return _strip_lines(_LINE_END_SPACE.sub("\n", text) if " \n" in text or "\n " in text else text)


def _strip_lines(text: str) -> str:
    return text.strip(" ").strip("\n")


class _TextExtractor(HTMLParser):
    """HTML to plain text: blocks are separated by a blank line, `<br>` breaks a line, code is kept verbatim."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str | None] = []  # None: the next of `prose`
        self.prose: list[str] = []  # prose blocks as read: `text` collapses their spaces all at once
        self.buffer: list[str] = []
        self.pre_depth = 0

    def flush(self) -> None:
        if not self.buffer:  # each block tag flushes: most find nothing
            return
        text = "".join(self.buffer)
        self.buffer.clear()  # the same list: `feed_plain_html` holds it
        if self.pre_depth:  # code: verbatim but for the blank lines around it
            text = "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")
            if text:
                self.blocks.append(text)
        else:
            self.blocks.append(None)
            self.prose.append(text)

    def text(self) -> str:
        """The text of what was fed: the blocks separated by a blank line; in prose, runs of ASCII spaces become one
        and each line is stripped, its line breaks kept (one regex pass over all the prose blocks, joined by NUL,
        which neither pattern crosses)."""
        self.flush()
        joined = "\0".join(self.prose)
        if joined.count("\0") == len(self.prose) - 1:  # no NUL in the texts (XML cannot hold one)
            prose = [_strip_lines(text) for text in _normalize_prose(joined).split("\0")]
        else:
            prose = [_normalize_prose(text) for text in self.prose]
        prose = iter(prose)
        blocks = [next(prose) if block is None else block for block in self.blocks]
        text = "\n\n".join(block for block in blocks if block)
        return (_BLANK_LINES.sub("\n\n", text) if "\n\n\n" in text else text).strip()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.buffer.append("\n")
        elif tag == "img":
            self.buffer.append(" [image] ")
        elif tag in _BLOCK_TAGS:
            self.flush()
            self.pre_depth += tag == "pre"

    def handle_endtag(self, tag: str) -> None:
        if tag in _BLOCK_TAGS:
            self.flush()
            if tag == "pre" and self.pre_depth:
                self.pre_depth -= 1

    def handle_data(self, data: str) -> None:
        self.buffer.append(data)

    def feed_plain_html(self, html: str) -> bool:
        """Make the calls that `feed` + `close` make on plain HTML (`_SIMPLE_TAG`), without `HTMLParser`'s parsing;
        False, and no call, when the HTML is not plain."""
        if _RAW_TEXT_TAG.search(html):
            return False
        parts = _SIMPLE_TAG.split(html)  # text, then each tag's (end tag, start tag, "/" or "") and the text after
        if len(parts) // 4 != html.count("<"):
            return False
        buffer, start, end = self.buffer, self.handle_starttag, self.handle_endtag
        for i in range(0, len(parts) - 1, 4):
            data, end_tag, start_tag, closed = parts[i : i + 4]
            if data:
                buffer.append(unescape(data) if "&" in data else data)
            if end_tag is not None:
                end(end_tag.lower())
            else:
                start(start_tag.lower(), [])
                if closed:
                    end(start_tag.lower())
        if parts[-1]:
            buffer.append(unescape(parts[-1]) if "&" in parts[-1] else parts[-1])
        return True


def html_to_text(html: str) -> str:
    """Plain text of an HTML fragment: paragraphs, list items and `<br>` become line breaks, links keep their text."""
    parser = _TextExtractor()
    if not parser.feed_plain_html(html):
        parser.feed(html)
        parser.close()
    return parser.text()


def _default_license(created: str) -> str:
    """The license Stack Exchange applied to a post by its creation date, for dumps without ContentLicense."""
    return "CC BY-SA 2.5" if created < "2011-04-08" else "CC BY-SA 3.0" if created < "2018-05-02" else "CC BY-SA 4.0"


def _scan(
    path: Path, start: int = 0, end: int | None = None, prefix: bytes = b"", suffix: bytes = b""
) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, attributes) of every `<row>`, streamed; a malformed XML becomes a ValueError naming the file and line.

    With `start` / `end` only those bytes are read (whole lines), between `prefix` and `suffix` (the root element's
    tags, so that a piece of the file parses alone); lines are then counted from the piece's first line. Expat
    directly, as `ElementTree`'s parser sets it up but without building elements: each row's attributes as a dict,
    yielded with the line where the row ends, the rows of a line before an error in it first.
    """
    parser = expat.ParserCreate(None, "}")
    parser.specified_attributes = True
    open_rows: list[dict[str, str] | None] = []  # the attributes of each open element (None: not a row)
    done: list[dict[str, str]] = []

    def start_element(name: str, attributes: dict[str, str]) -> None:
        open_rows.append(attributes if name == "row" and open_rows else None)  # the root is never a row

    def end_element(name: str) -> None:
        row = open_rows.pop()
        if row is not None:
            done.append(row)

    def parsed(data: bytes, final: bool = False) -> Iterator[dict[str, str]]:
        """The rows that `data` ends; with an error in it, the rows before the error first."""
        try:
            parser.Parse(data, final)
        finally:
            rows = done[:]
            done.clear()
            yield from rows

    parser.StartElementHandler, parser.EndElementHandler = start_element, end_element
    line = 1
    with path.open("rb") as f:  # bytes: expat reads the encoding declaration and skips a UTF-8 BOM
        f.seek(start)
        left = (end - start) if end is not None else None
        try:
            parser.Parse(prefix, False)
            while left is None or left > 0:
                chunk = f.readline(1 << 20 if left is None else min(1 << 20, left))
                if not chunk:
                    break
                if left is not None:
                    left -= len(chunk)
                for row in parsed(chunk):
                    yield line, row
                line += chunk.count(b"\n")
            for row in parsed(suffix, final=True):
                yield line, row
        except expat.ExpatError as err:
            raise ValueError(f"{path}:{err.lineno}: malformed XML: {err}") from err  # ElementTree's words


def _build(
    question: dict[str, str], answers: list[dict[str, str]], site: str, min_answers: int, to_text=html_to_text
) -> RankedPost | Problem:
    """One question and its answers as a RankedPost, or the Problem that keeps it from being one (its answers
    counted as read and dropped); `to_text` turns the bodies into text (none to do when a parallel pass has)."""
    qid, n = question["Id"], len(answers)
    if "Title" not in question:
        return Problem("missing_field", "Title", f"question {qid} has no Title", n)
    if len(answers) < min_answers:
        return Problem("too_few_comments", "answers", f"{n} answer(s), at least {min_answers} needed", n)
    keys = []
    for answer in answers:
        for name in ("Id", "Body", "Score", "CreationDate"):
            if name not in answer:
                return Problem("missing_field", name, f"answer {answer.get('Id', '?')} has no {name}", n)
        for name in ("Id", "Score"):
            if not _INTEGER.fullmatch(answer[name].strip()):
                message = f"answer {answer['Id']}: {name} {answer[name]!r} is not an integer"
                return Problem("wrong_type", name, message, n)
        keys.append((-int(answer["Score"]), answer["CreationDate"], int(answer["Id"])))
    ranks = ranks_by(keys)  # most votes first; ties: the earlier answer, then the lower Id
    comments = [
        Comment(to_text(a["Body"]), ranks[i], votes=-keys[i][0], created=a["CreationDate"])
        for i, a in enumerate(answers)
    ]
    created = question.get("CreationDate", "")
    meta = {"site": site, "url": f"https://{site}/q/{qid}", "license": question.get("ContentLicense")}
    meta["license"] = meta["license"] or (_default_license(created) if created else "CC BY-SA")
    body = to_text(question["Body"]) if "Body" in question else None
    # the Title is text: the XML parser has unescaped it already (a second unescape made `&amp;nbsp;` a U+00A0)
    return RankedPost(f"{site}:{qid}", question["Title"].strip(), comments, body=body, meta=meta)


def read_posts_xml(
    path: str | Path, site: str | None = None, min_answers: int = 2
) -> Iterator[tuple[str, RankedPost | Problem]]:
    """Yield `(location, RankedPost | Problem)` for every question of a `Posts.xml` dump, in file order.

    `location` is ``path:line`` of the question's row; `site` defaults to the dump's folder name (as in
    ``raw/beer.stackexchange.com/Posts.xml``). Comments keep the file order of the answers; `rank` 0 is the most
    voted answer, equal votes ranked by the earlier CreationDate, then the lower Id. `meta` carries site, url and
    license (ContentLicense, else the license Stack Exchange used at the question's creation date).
    """
    path = Path(path)
    site = site or path.resolve().parent.name
    questions: list[tuple[int, dict[str, str]]] = []
    answers: dict[str, list[dict[str, str]]] = {}
    for line, row in _scan(path):
        kind = row.get("PostTypeId")
        if kind == "1":
            questions.append((line, {k: row[k] for k in _QUESTION_FIELDS if k in row}))
        elif kind == "2" and "ParentId" in row:
            answers.setdefault(row["ParentId"], []).append({k: row[k] for k in _ANSWER_FIELDS if k in row})
    for line, question in questions:
        location = f"{path}:{line}"
        if "Id" not in question:
            yield location, Problem("missing_field", "Id", "a question row has no Id")
            continue
        yield location, _build(question, answers.get(question["Id"], []), site, min_answers)


# Bounded memory and parallel: `read_posts_xml_bounded`. A first pass cuts the file into byte ranges at line ends
# (Posts.xml holds one `<row/>` per line) and parses them in `num_proc` processes, HTML to text included, each into a
# Parquet shard; DuckDB then joins the answers to their question and sorts them into file order, spilling to disk
# under its memory limit, and the posts are built from that sorted stream one question at a time.
_SHARD_COLUMNS = ("Id", "ParentId", "Title", "Body", "Score", "CreationDate", "ContentLicense")
_RANGE_BYTES = 64 << 20  # a range per 64 MB: the processes share the work evenly and each one's memory stays small
_KINDS = {"1": 1, "2": 2}  # PostTypeId: question, answer (other rows are not kept)
_SEQ_BITS = 40  # a row's order: its range index above these bits, its place in the range below


def _shard_schema():
    import pyarrow as pa

    columns = [("seq", pa.int64()), ("line", pa.int64()), ("kind", pa.int8())]
    return pa.schema(columns + [(name, pa.string()) for name in _SHARD_COLUMNS])


def _parse_range(task: tuple) -> int:
    """Parse one byte range of a Posts.xml into a Parquet shard of its questions and answers (bodies as text);
    returns the number of lines in the range."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, index, start, end, prefix, suffix, shard = task
    schema = _shard_schema()
    columns: dict[str, list] = {name: [] for name in schema.names}  # a batch, column by column
    seqs, line_numbers, kinds = columns["seq"], columns["line"], columns["kind"]
    fields = [(columns[name], name) for name in _SHARD_COLUMNS if name != "Body"]
    bodies = columns["Body"]
    size = 0
    with pq.ParquetWriter(shard, schema) as writer:
        for n, (line, row) in enumerate(_scan(Path(path), start, end, prefix, suffix)):
            kind = _KINDS.get(row.get("PostTypeId"))
            if kind is None:
                continue
            for values, name in fields:
                values.append(row.get(name))
            body = row.get("Body")
            bodies.append(None if body is None else html_to_text(body))
            seqs.append((index << _SEQ_BITS) + n)
            line_numbers.append(line)
            kinds.append(kind)
            size += len(bodies[-1] or "") + len(row.get("Title") or "")
            if len(seqs) >= 8192 or size >= 32 << 20:
                writer.write_table(pa.Table.from_pydict(columns, schema=schema))
                size = 0
                for values in columns.values():
                    values.clear()
        if seqs:
            writer.write_table(pa.Table.from_pydict(columns, schema=schema))
    with open(path, "rb") as f:  # lines of the range, for the global line numbers
        f.seek(start)
        left, lines = end - start, 0
        while left > 0:
            block = f.read(min(1 << 24, left))
            if not block:
                break
            left -= len(block)
            lines += block.count(b"\n")
    return lines


def _root_and_encoding(path: Path) -> tuple[str | None, str]:
    """The root element's tag and the declared encoding (utf-8 when none), from the head of the file."""
    with path.open("rb") as f:
        head = f.read(1 << 16)
    declared = re.match(rb'(?:\xef\xbb\xbf)?<\?xml[^>]*encoding=["\']([A-Za-z0-9._-]+)["\']', head)
    encoding = declared.group(1).decode().lower() if declared else "utf-8"
    parser = ET.XMLPullParser(events=("start",))
    try:
        parser.feed(head)
        for _, elem in parser.read_events():
            return elem.tag, encoding
    except ET.ParseError:
        pass
    return None, encoding


def _ranges(path: Path, n: int) -> list[tuple[int, int]]:
    """`n` byte ranges of the file (fewer for a small one), each ending at a line end."""
    size = path.stat().st_size
    bounds = [0]
    with path.open("rb") as f:
        for k in range(1, n):
            f.seek(max(size * k // n, bounds[-1]))
            f.readline()
            if bounds[-1] < f.tell() < size:
                bounds.append(f.tell())
    return list(zip(bounds, bounds[1:] + [size]))


def posts_xml_to_shards(
    path: str | Path, workdir: str | Path, num_proc: int = 1, range_bytes: int = _RANGE_BYTES
) -> tuple[list[Path], list[int]]:
    """Parse a Posts.xml into Parquet shards under `workdir`, `num_proc` processes at once: (shards, lines before
    each shard's range). A file that does not split at its lines (rows over several lines, an encoding other than
    UTF-8) is parsed whole, in one process; malformed XML raises the serial reader's error, with the same line."""
    path, workdir = Path(path), Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    root, encoding = _root_and_encoding(path)
    n = max(num_proc, -(-path.stat().st_size // range_bytes)) if num_proc > 1 else 1
    ranges = _ranges(path, n) if root and encoding in ("utf-8", "utf8") and n > 1 else [(0, path.stat().st_size)]
    tasks = []
    for i, (start, end) in enumerate(ranges):
        prefix = b"" if i == 0 else f"<{root}>".encode()
        suffix = b"" if i == len(ranges) - 1 else f"</{root}>".encode()
        tasks.append((str(path), i, start, end, prefix, suffix, str(workdir / f"posts-{i:05d}.parquet")))
    try:
        if len(tasks) == 1:
            lines = [_parse_range(tasks[0])]
        else:
            from commentrank.data.ondisk import process_pool

            with process_pool(min(num_proc, len(tasks))) as pool:
                lines = pool.map(_parse_range, tasks, chunksize=1)
    except ValueError:
        if len(tasks) == 1:
            raise
        for _ in _scan(path):  # the error as the serial reader words it, with its line
            pass
        return posts_xml_to_shards(path, workdir, num_proc=1)  # the pieces did not parse alone: the whole file
    offsets = [sum(lines[:i]) for i in range(len(lines))]
    return [Path(t[-1]) for t in tasks], offsets


def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def read_posts_xml_bounded(
    path: str | Path,
    workdir: str | Path,
    site: str | None = None,
    min_answers: int = 2,
    num_proc: int = 1,
    range_bytes: int = _RANGE_BYTES,
) -> Iterator[tuple[str, RankedPost | Problem]]:
    """`read_posts_xml` in bounded memory and in parallel: the same items in the same order, from Parquet shards
    under `workdir` grouped by DuckDB (`ondisk.duckdb_sort`: it spills to `workdir` beyond its memory limit)."""
    from commentrank.data.ondisk import duckdb_sort, ordered_map

    path, workdir = Path(path), Path(workdir)
    site = site or path.resolve().parent.name
    shards, offsets = posts_xml_to_shards(path, workdir, num_proc, range_bytes)
    rows = f"read_parquet({_sql_list(shards)})"
    # The question of each answer first (integers only), then the rows in the order of their question: a sort of the
    # whole rows joined in one query (UNION ALL of questions and joined answers) runs out of memory at 1 GB
    parents = f"""CREATE TEMP TABLE parent AS SELECT a.seq, q.seq AS qseq FROM {rows} a JOIN {rows} q
                  ON a.ParentId = q.Id AND q.kind = 1 AND q.Id IS NOT NULL WHERE a.kind = 2"""
    query = f"""SELECT COALESCE(parent.qseq, r.seq) AS qseq, r.* FROM {rows} r LEFT JOIN parent USING (seq)
                WHERE r.kind = 1 OR parent.qseq IS NOT NULL ORDER BY qseq, kind, seq"""
    sorted_rows = duckdb_sort([parents], query, workdir / "sorted.parquet", workdir)
    groups = _row_groups(sorted_rows)
    tasks = [(str(sorted_rows), first, first + _GROUPS_PER_TASK, str(path), offsets, site, min_answers)
             for first in range(0, groups, _GROUPS_PER_TASK)]  # fmt: skip
    for items in ordered_map(_build_sorted, tasks, num_proc):
        yield from items


_GROUPS_PER_TASK = 2  # row groups of sorted rows (8192 each) per task: ~3,000 questions


def _row_groups(parquet_path: Path) -> int:
    import pyarrow.parquet as pq

    with pq.ParquetFile(str(parquet_path), pre_buffer=False) as parquet:
        return parquet.num_row_groups


def _build_sorted(task: tuple) -> list[tuple[str, RankedPost | Problem]]:
    """The items of the questions whose row is in row groups [first, stop) of DuckDB's sorted rows (their answers
    may go on into the next row groups; the answers before the first question are the previous task's)."""
    import pyarrow.parquet as pq

    sorted_rows, first, stop, path, offsets, site, min_answers = task
    items, question, answers = [], None, []
    with pq.ParquetFile(sorted_rows, pre_buffer=False) as parquet:
        for group in range(first, parquet.num_row_groups):
            columns = parquet.read_row_group(group).to_pydict()  # columns, not a dict per row
            answer_columns = [(k, columns[k]) for k in _ANSWER_FIELDS]
            question_columns = [(k, columns[k]) for k in _QUESTION_FIELDS]
            for r, kind in enumerate(columns["kind"]):
                if kind == 2:
                    if question is not None:
                        answers.append({k: values[r] for k, values in answer_columns if values[r] is not None})
                    continue
                if question is not None:
                    items.append(_bounded_item(path, question, answers, site, min_answers))
                if group >= stop:
                    return items
                line = offsets[columns["seq"][r] >> _SEQ_BITS] + columns["line"][r]
                question = {"line": line, **{k: values[r] for k, values in question_columns if values[r] is not None}}
                answers = []
    if question is not None:
        items.append(_bounded_item(path, question, answers, site, min_answers))
    return items


def _same_text(text: str) -> str:  # the bodies of the shards are text already
    return text


def _bounded_item(path: str, question: dict, answers: list, site: str, min_answers: int):
    location = f"{path}:{question.pop('line')}"
    if "Id" not in question:
        return location, Problem("missing_field", "Id", "a question row has no Id")
    return location, _build(question, answers, site, min_answers, to_text=_same_text)
