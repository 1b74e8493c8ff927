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

from commentrank.data.records import Comment, RankedPost, ranks_by
from commentrank.data.validation import Problem

_BLOCK_TAGS = {"p", "div", "ul", "ol", "li", "pre", "blockquote", "hr", "table", "tr", "dl", "dt", "dd"}
_BLOCK_TAGS |= {f"h{i}" for i in range(1, 7)}
_SPACE = " \t\r\f\v"  # ASCII only: non-breaking and other Unicode spaces are kept, as in the dumps
_QUESTION_FIELDS = ("Id", "Title", "Body", "CreationDate", "ContentLicense")
_ANSWER_FIELDS = ("Id", "ParentId", "Body", "Score", "CreationDate")


class _TextExtractor(HTMLParser):
    """HTML to plain text: blocks are separated by a blank line, `<br>` breaks a line, code is kept verbatim."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.buffer: list[str] = []
        self.pre_depth = 0

    def flush(self) -> None:
        text = "".join(self.buffer)
        if self.pre_depth:  # code: verbatim but for the blank lines around it
            text = "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")
        else:  # prose: runs of spaces collapse, each line stripped; its line breaks are kept
            text = "\n".join(re.sub(f"[{_SPACE}]+", " ", line).strip(_SPACE) for line in text.split("\n"))
            text = text.strip("\n")
        if text:
            self.blocks.append(text)
        self.buffer = []

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


def html_to_text(html: str) -> str:
    """Plain text of an HTML fragment: paragraphs, list items and `<br>` become line breaks, links keep their text."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    parser.flush()
    return re.sub(r"\n{3,}", "\n\n", "\n\n".join(parser.blocks)).strip()


def _default_license(created: str) -> str:
    """The license Stack Exchange applied to a post by its creation date, for dumps without ContentLicense."""
    return "CC BY-SA 2.5" if created < "2011-04-08" else "CC BY-SA 3.0" if created < "2018-05-02" else "CC BY-SA 4.0"


def _scan(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, attributes) of every `<row>`, streamed; a ParseError becomes a ValueError naming the file and line."""
    parser = ET.XMLPullParser(events=("start", "end"))
    root: ET.Element | None = None
    line = 1
    with path.open("rb") as f:  # bytes: expat reads the encoding declaration and skips a UTF-8 BOM
        try:
            for chunk in iter(lambda: f.readline(1 << 20), b""):
                parser.feed(chunk)
                for event, elem in parser.read_events():
                    if root is None:
                        root = elem
                    elif event == "end" and elem.tag == "row":
                        yield line, dict(elem.attrib)
                        root.clear()  # drop the finished rows: memory stays flat while streaming
                line += chunk.count(b"\n")
            parser.close()
        except ET.ParseError as err:
            raise ValueError(f"{path}:{err.position[0]}: malformed XML: {err}") from err


def _build(
    question: dict[str, str], answers: list[dict[str, str]], site: str, min_answers: int
) -> RankedPost | Problem:
    """One question and its answers as a RankedPost, or the Problem that keeps it from being one."""
    qid = question["Id"]
    if "Title" not in question:
        return Problem("missing_field", "Title", f"question {qid} has no Title")
    if len(answers) < min_answers:
        return Problem("too_few_comments", "answers", f"{len(answers)} answer(s), at least {min_answers} needed")
    keys = []
    for answer in answers:
        for name in ("Id", "Body", "Score", "CreationDate"):
            if name not in answer:
                return Problem("missing_field", name, f"answer {answer.get('Id', '?')} has no {name}")
        for name in ("Id", "Score"):
            if not re.fullmatch(r"[+-]?\d+", answer[name].strip()):
                return Problem("wrong_type", name, f"answer {answer['Id']}: {name} {answer[name]!r} is not an integer")
        keys.append((-int(answer["Score"]), answer["CreationDate"], int(answer["Id"])))
    ranks = ranks_by(keys)  # most votes first; ties: the earlier answer, then the lower Id
    comments = [
        Comment(html_to_text(a["Body"]), ranks[i], votes=-keys[i][0], created=a["CreationDate"])
        for i, a in enumerate(answers)
    ]
    created = question.get("CreationDate", "")
    meta = {"site": site, "url": f"https://{site}/q/{qid}", "license": question.get("ContentLicense")}
    meta["license"] = meta["license"] or (_default_license(created) if created else "CC BY-SA")
    body = html_to_text(question["Body"]) if "Body" in question else None
    return RankedPost(f"{site}:{qid}", unescape(question["Title"]).strip(), comments, body=body, meta=meta)


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
