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
            question(1, title="Best &amp; worst", ContentLicense="CC BY-SA 4.0"),
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
