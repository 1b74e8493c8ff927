"""The Stack Exchange Posts.xml reader: ranking, HTML to text, problems, and the shipped beer.meta dump."""

from html import escape
from pathlib import Path

import pytest

from commentrank.data.records import RankedPost
from commentrank.data.stackexchange import html_to_text, read_posts_xml
from commentrank.data.validation import InvalidInputError, PrepSummary, collect_posts

POSTS_XML = Path(__file__).resolve().parents[1] / "data/stackexchange/raw/beer.meta.stackexchange.com/Posts.xml"


def row(**attrs) -> str:
    return "  <row " + " ".join(f'{k}="{escape(str(v))}"' for k, v in attrs.items()) + " />"


def question(i, title="Title", body="<p>Question?</p>", **extra) -> str:
    extra = {"Title": title, **extra} if title is not None else extra
    return row(Id=i, PostTypeId=1, CreationDate=f"2015-01-0{i}T00:00:00.000", Body=body, **extra)


def answer(i, parent, score, created, body=None) -> str:
    body = body if body is not None else f"<p>Answer {i}</p>"
    return row(Id=i, PostTypeId=2, ParentId=parent, CreationDate=created, Score=score, Body=body)


def write_dump(tmp_path, rows, site="test.stackexchange.com", bom=True):
    path = tmp_path / site / "Posts.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = '<?xml version="1.0" encoding="utf-8"?>\n<posts>\n' + "\n".join(rows) + "\n</posts>\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.replace("\n", "\r\n").encode("utf-8"))
    return path


def test_ranks_by_votes_with_ties_to_the_earlier_answer(tmp_path):
    path = write_dump(
        tmp_path,
        [
            question(1, title="Best & worst", ContentLicense="CC BY-SA 4.0"),  # `Best &amp; worst` in the XML
            answer(10, 1, 5, "2015-01-05T00:00:00.000"),  # 5 votes like Id 12, but later: rank 2
            row(Id=2, PostTypeId=5, Body="<p>a tag wiki</p>"),  # other post types are ignored
            answer(11, 1, 9, "2015-01-06T00:00:00.000"),
            answer(12, 1, 5, "2015-01-02T00:00:00.000"),  # the earlier of the two: rank 1
            answer(13, 1, -2, "2015-01-01T00:00:00.000"),
            question(3, ContentLicense="CC BY-SA 3.0"),
            answer(14, 3, 0, "2015-01-07T00:00:00.000"),
            answer(15, 3, 0, "2015-01-07T00:00:00.000"),  # same votes and date: the lower Id first
        ],
    )
    items = list(read_posts_xml(path))
    assert [loc for loc, _ in items] == [f"{path}:3", f"{path}:9"]  # the question rows' lines (after a BOM)
    post = items[0][1]
    assert isinstance(post, RankedPost)
    assert post.post_id == "test.stackexchange.com:1" and post.title == "Best & worst"
    assert [(c.text, c.votes, c.rank) for c in post.comments] == [
        ("Answer 10", 5, 2),
        ("Answer 11", 9, 0),
        ("Answer 12", 5, 1),
        ("Answer 13", -2, 3),
    ]
    assert post.comments[0].created == "2015-01-05T00:00:00.000"
    assert post.meta == {
        "site": "test.stackexchange.com",
        "url": "https://test.stackexchange.com/q/1",
        "license": "CC BY-SA 4.0",
    }
    assert [c.rank for c in items[1][1].comments] == [0, 1]
    assert next(read_posts_xml(path, site="other.site"))[1].post_id == "other.site:1"


def test_a_title_is_unescaped_once(tmp_path):
    """The XML parser reads `&amp;nbsp;` as the text `&nbsp;`; a second unescape made it a non-breaking space."""
    title = "Use &nbsp; or &amp; in <b>HTML</b>?"
    answers = [answer(10, 1, 1, "2015-01-02T00:00:00.000"), answer(11, 1, 0, "2015-01-03T00:00:00.000")]
    path = write_dump(tmp_path, [question(1, title=title), *answers])  # written escaped once, as in the dumps
    ((_, post),) = read_posts_xml(path)
    assert post.title == title


def test_html_to_text():
    html = (
        "<h1>Head</h1><p>First   paragraph with a <a href='http://x.org'>link</a> and &amp; &lt;b&gt; &eacute;.</p>\n"
        "<p>Line one<br>\nline two</p><ul>\n<li>item <em>one</em></li>\n<li>item two</li>\n</ul>"
        "<pre><code>def f(x):\n    return x  # kept verbatim\n</code></pre><p>Inline <code>a*b</code> and"
        ' <img src="i.png" alt="x"></p><blockquote>\n  <p>quoted</p>\n</blockquote>\n\n\n\n<hr><p></p>'
    )
    assert html_to_text(html) == (
        "Head\n\nFirst paragraph with a link and & <b> é.\n\nLine one\n\nline two\n\nitem one\n\nitem two\n\n"
        "def f(x):\n    return x  # kept verbatim\n\nInline a*b and [image]\n\nquoted"
    )
    assert html_to_text("") == "" and html_to_text("plain\u00a0text") == "plain\u00a0text"


def test_one_answer_is_too_few_and_counted(tmp_path):
    path = write_dump(
        tmp_path,
        [question(1), answer(10, 1, 1, "2015-01-02T00:00:00"), question(2), question(3)]
        + [answer(11, 3, 1, "2015-01-04T00:00:00"), answer(12, 3, 2, "2015-01-04T00:00:01")],
        bom=False,
    )
    items = list(read_posts_xml(path))
    assert [type(r).__name__ for _, r in items] == ["Problem", "Problem", "RankedPost"]
    assert {(r.reason, r.field) for _, r in items[:2]} == {("too_few_comments", "answers")}
    summary = PrepSummary()
    kept = list(collect_posts(read_posts_xml(path), summary, skip_invalid=True))
    assert [p.post_id for p in kept] == ["test.stackexchange.com:3"]
    assert summary.posts_read == 3 and summary.posts_dropped == {"too_few_comments": 2}
    with pytest.raises(InvalidInputError, match=r"Posts\.xml:3: field 'answers'"):
        list(collect_posts(read_posts_xml(path), PrepSummary()))


def test_structural_problems_name_the_field(tmp_path):
    rows = [question(1, title=None), answer(10, 1, 1, "2015-01-02T00:00:00"), answer(11, 1, 2, "2015-01-03")]
    rows += [question(2), answer(12, 2, "many", "2015-01-02T00:00:00"), answer(13, 2, 2, "2015-01-03")]
    items = list(read_posts_xml(write_dump(tmp_path, rows)))
    (loc1, missing), (loc2, wrong) = items
    assert loc1.endswith("Posts.xml:3") and (missing.reason, missing.field) == ("missing_field", "Title")
    assert loc2.endswith("Posts.xml:6") and (wrong.reason, wrong.field) == ("wrong_type", "Score")
    assert "12" in wrong.message and "many" in wrong.message


def test_malformed_xml_names_the_file_and_line(tmp_path):
    path = write_dump(tmp_path, [question(1), '  <row Id="2" PostTypeId="2" ParentId="1"', "  <row Id=3 />"])
    with pytest.raises(ValueError, match=r"Posts\.xml:5: malformed XML"):
        list(read_posts_xml(path))
    truncated = tmp_path / "truncated.xml"
    truncated.write_text("<posts>\n" + question(1) + "\n")
    with pytest.raises(ValueError, match=r"truncated\.xml:\d+: malformed XML"):
        list(read_posts_xml(truncated))


def test_shipped_beer_meta_dump():
    """The copy shipped in data/; against se_ranked_all.jsonl it gives the same 9 posts and top answers."""
    items = list(read_posts_xml(POSTS_XML, min_answers=3))
    posts = [r for _, r in items if isinstance(r, RankedPost)]
    assert posts and len(posts) < len(items)
    for post in posts:
        assert post.post_id.startswith("beer.meta.stackexchange.com:") and post.meta["license"].startswith("CC BY-SA")
        assert post.title.strip() and post.body.strip() and all(c.text.strip() for c in post.comments)
        assert sorted(c.rank for c in post.comments) == list(range(len(post.comments)))
        best_first = sorted(post.comments, key=lambda c: c.rank)
        assert best_first == sorted(post.comments, key=lambda c: (-c.votes, c.created))
    problems = [r for _, r in items if not isinstance(r, RankedPost)]
    assert {p.reason for p in problems} == {"too_few_comments"}


EDGE_CASES = [
    "<p>Fish &amp; chips, 3 &lt; 4, caf&eacute;, &#233;&#x263a;, AT&T, &amp</p>",
    "<P CLASS='x'>Upper</P><BR><br/><br />line<hr/><hr />after",
    "<pre class=x/>code</pre><p>then</p>",  # an unquoted value that ends with a slash
    '<a href=foo/>link</a> <img src="a.png" alt="a > b"> <img src=x>',
    "<p>a <!-- a comment --> b</p><!DOCTYPE html><?php echo 1 ?>",
    "<p>a < b and c <d</p>",  # stray '<'
    "<script>if (a < b) { x = '<p>' }</script><style>p > a {}</style><p>after</p>",
    "<pre><code>  keep   spaces\n\n\n  here\t\n</code></pre>\n\n\n<p>  prose \t spaces \n  collapse  </p>",
    '</p >text<p\n class="y"\n>wrapped tag</p><p data-x = "1" hidden>attrs</p><li>a<li>b</ul>',
    "<blockquote><p>quoted</p></blockquote><ol><li>one</li><li>two</li></ol><h2>Head</h2><dl><dt>t</dt></dl>",
    "plain text with\u00a0nbsp &nbsp; and no tags\r\nat all &",
    "<table><tr><td>1</td><td>2</td></tr></table><div><pre>a<pre>b</pre>c</pre></div>",
    "<p>unclosed <b>bold <i>it</p><p>&#0; &#xD800; &#99999999; &bogus;</p>",
    "<a title=\"x'y\" href='u\"v'>q</a><a href=>empty</a><p/>",
]


def _parsed_by_htmlparser(html: str) -> str:
    """html_to_text through HTMLParser alone (the reference of the plain-HTML path)."""
    from commentrank.data import stackexchange

    parser = stackexchange._TextExtractor()
    parser.feed(html)
    parser.close()
    return parser.text()


def _plain_path(html: str):
    from commentrank.data import stackexchange

    parser = stackexchange._TextExtractor()
    if not parser.feed_plain_html(html):
        return None
    return parser.text()


def _bodies() -> list[str]:
    import random
    import sys

    bodies = list(EDGE_CASES)
    for line in POSTS_XML.read_text(encoding="utf-8-sig").splitlines():
        if 'Body="' in line:
            import xml.etree.ElementTree as ET

            bodies.append(ET.fromstring(line.strip()).attrib["Body"])
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_data_prep import _html

    rng = random.Random(0)
    return bodies + [_html(rng) for _ in range(300)]


def test_plain_html_is_read_as_htmlparser_reads_it():
    """html_to_text reads plain HTML without HTMLParser: for every body of the shipped dump, the benchmark's generated
    ones and the edge cases, it gives HTMLParser's text, and it leaves to HTMLParser what is not plain."""
    bodies = _bodies()
    plain = 0
    for html in bodies:
        text = _plain_path(html)
        if text is not None:
            plain += 1
            assert text == _parsed_by_htmlparser(html), html
    assert plain >= 0.9 * len(bodies)
    assert _plain_path("<p>a <!-- c --> b</p>") is None and _plain_path("<p>a < b</p>") is None
    assert _plain_path("<script>x</script>") is None


def test_prose_spaces_collapse_per_line():
    """Runs of ASCII spaces become one, each line is stripped, line breaks stay (the rule, on random texts), in each
    prose block alone, and code keeps its spaces."""
    import random
    import re

    from commentrank.data import stackexchange

    def expected(text: str) -> str:
        lines = (re.sub("[ \t\r\f\v]+", " ", line).strip(" \t\r\f\v") for line in text.split("\n"))
        return "\n".join(lines).strip("\n")

    rng = random.Random(0)
    for _ in range(2000):
        texts = ["".join(rng.choice("ab \t\r\f\v\n\u00a0") for _ in range(rng.randint(0, 20))) for _ in range(3)]
        parser = stackexchange._TextExtractor()
        for i, text in enumerate(texts):
            parser.buffer = [text]
            parser.pre_depth = i == 1  # the middle block is code
            parser.flush()
        blocks = [expected(texts[0]), "\n".join(line.rstrip() for line in texts[1].split("\n")).strip("\n"),
                  expected(texts[2])]  # fmt: skip
        joined = re.sub(r"\n{3,}", "\n\n", "\n\n".join(b for b in blocks if b)).strip()
        assert parser.text() == joined, repr(texts)


def test_scan_reports_rows_and_errors_as_elementtree_does(tmp_path):
    """The streaming scanner (expat directly): a row over several lines comes with the line where it ends, the rows
    of a line before an error in that line come first, and the error has ElementTree's words and line."""
    import xml.etree.ElementTree as ET

    from commentrank.data.stackexchange import _scan

    path = tmp_path / "Posts.xml"
    path.write_text('<posts>\n<row Id="1"\n  Body="a" />\n<row Id="2" /><row Id="3" /><row Id=4 />\n</posts>\n')
    seen = []
    with pytest.raises(ValueError) as err:
        for line, row in _scan(path):
            seen.append((line, row["Id"]))
    assert seen == [(3, "1"), (4, "2"), (4, "3")]
    with pytest.raises(ET.ParseError) as reference:
        ET.parse(path)
    assert str(err.value) == f"{path}:4: malformed XML: {reference.value}"
