"""Reader errors and counts: text that no UTF-8 output can hold, `--min_comments` on Posts.xml, the comments of dropped
posts, and the messages for files that are not what their name says."""

import gzip
import json
import re

import pytest
from test_data_prep import post, write_jsonl
from test_stackexchange import answer, question, write_dump

from commentrank.configs import PrepArguments
from commentrank.data.prepare import main as prepare_main
from commentrank.data.prepare import run_prepare
from commentrank.data.readers import read_cupit_jsonl
from commentrank.data.stackexchange import read_posts_xml
from commentrank.data.validation import InvalidInputError, PrepSummary, collect_posts

ONE_SPLIT = dict(test_size=0, validation_size=0)


def with_field(field: str, value) -> dict:
    """post(2) with `field` ('text', 'comments[1].text', ...) set to `value`."""
    record = post(2)
    if field.startswith("comments["):
        i, key = int(field[len("comments[")]), field.split(".")[1]
        record["comments"][i][key] = value
    else:
        record[field] = value
    return record


def jsonl_bytes(*records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


# --------------------------------------------------------------------------------------------------------------------
# A lone surrogate escape ("\ud800") parses as JSON but cannot be written as UTF-8
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["text", "post_body", "comments[1].text", "comments[0].created", "site", "id"])
def test_a_lone_surrogate_escape_names_the_file_line_and_field(tmp_path, field):
    path = write_jsonl(tmp_path / "in.jsonl", [post(1), with_field(field, "a \ud800 b"), post(3)])
    assert "\\ud800" in path.read_text()  # the escape, as JSON writes it
    with pytest.raises(InvalidInputError, match=rf"in\.jsonl:2: field '{re.escape(field)}': .*surrogate"):
        list(collect_posts(read_cupit_jsonl(path), PrepSummary()))


def test_a_lone_surrogate_escape_is_skipped_and_counted_by_data_prep(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [post(i) for i in range(5)] + [with_field("comments[0].text", "\udfff")])
    summary = run_prepare(PrepArguments(inputs=[str(path)], output_dir=str(tmp_path / "out"), skip_invalid=True,
                                        **ONE_SPLIT))  # fmt: skip
    assert summary.posts_kept == 5 and dict(summary.posts_dropped) == {"not_utf8": 1}
    assert dict(summary.comments_dropped) == {"not_utf8": 3} and summary.comments_read == 18


def test_a_surrogate_pair_escape_is_one_character_and_kept(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [with_field("text", "smile \U0001f600")])
    assert "\\ud83d\\ude00" in path.read_text()
    (post_,) = collect_posts(read_cupit_jsonl(path), PrepSummary())
    assert post_.title == "smile \U0001f600"


# --------------------------------------------------------------------------------------------------------------------
# --min_comments on Posts.xml
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("min_comments, kept, dropped", [(1, 2, 1), (2, 1, 2)])
def test_min_comments_decides_which_questions_of_a_posts_xml_are_kept(tmp_path, min_comments, kept, dropped):
    rows = [question(1), answer(10, 1, 3, "2015-01-02T00:00:00"), question(2), question(3)]  # 1: one answer, 2: none
    rows += [answer(11, 3, 1, "2015-01-04T00:00:00"), answer(12, 3, 2, "2015-01-04T00:00:01")]
    summary = run_prepare(PrepArguments(inputs=[str(write_dump(tmp_path, rows))], output_dir=str(tmp_path / "out"),
                                        skip_invalid=True, min_comments=min_comments, **ONE_SPLIT))  # fmt: skip
    assert summary.posts_kept == kept and dict(summary.posts_dropped) == {"too_few_comments": dropped}


# --------------------------------------------------------------------------------------------------------------------
# The comments of dropped posts are counted as read and dropped
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("title", ["missing", None, 5])
def test_the_comments_of_a_post_with_a_bad_title_are_counted(tmp_path, title):
    bad = post(2)
    if title == "missing":
        del bad["text"]
    else:
        bad["text"] = title
    summary = PrepSummary()
    list(collect_posts(read_cupit_jsonl(write_jsonl(tmp_path / "in.jsonl", [post(1), bad])), summary, True))
    assert summary.comments_read == 6 and sum(summary.comments_dropped.values()) == 3
    assert summary.comments_read == summary.comments_kept + sum(summary.comments_dropped.values())


def test_the_answers_of_a_dropped_question_are_counted(tmp_path):
    rows = [question(1, title=None), answer(10, 1, 1, "2015-01-02"), answer(11, 1, 2, "2015-01-03")]
    rows += [question(2), answer(12, 2, "many", "2015-01-02"), answer(13, 2, 2, "2015-01-03")]
    rows += [question(3), answer(14, 3, 1, "2015-01-02")]  # one answer: too few
    rows += [question(4), answer(15, 4, 1, "2015-01-02"), answer(16, 4, 2, "2015-01-03")]
    summary = PrepSummary()
    list(collect_posts(read_posts_xml(write_dump(tmp_path, rows)), summary, skip_invalid=True))
    assert summary.comments_read == 7 and summary.comments_kept == 2
    assert dict(summary.comments_dropped) == {"missing_field": 2, "wrong_type": 2, "too_few_comments": 1}


# --------------------------------------------------------------------------------------------------------------------
# Files that are not what their name says
# --------------------------------------------------------------------------------------------------------------------


def test_a_plain_file_named_gz_is_not_called_truncated(tmp_path):
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(jsonl_bytes(post(1), post(2)))
    with pytest.raises(ValueError, match=r"in\.jsonl\.gz: not gzip data") as err:
        list(read_cupit_jsonl(path))
    assert "truncated" not in str(err.value)


def test_corrupt_gzip_data_is_not_called_truncated(tmp_path):
    data = bytearray(gzip.compress(jsonl_bytes(post(1), post(2))))
    data[-8] ^= 0xFF  # the CRC of the data: every byte is there, one is wrong
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"in\.jsonl\.gz: the gzip data is corrupt") as err:
        list(read_cupit_jsonl(path))
    assert "truncated" not in str(err.value)


def test_gzip_data_without_a_gz_name_gets_a_hint(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(gzip.compress(jsonl_bytes(post(1), post(2))))
    with pytest.raises(InvalidInputError, match=r"in\.jsonl:1: field '<line>': not valid UTF-8 .*gzip"):
        list(collect_posts(read_cupit_jsonl(path), PrepSummary()))


def test_a_utf16_file_gets_a_hint(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl_bytes(post(1), post(2)).decode().encode("utf-16"))  # with its byte order mark
    with pytest.raises(InvalidInputError, match=r"in\.jsonl:1: field '<line>': not valid UTF-8 .*UTF-16"):
        list(collect_posts(read_cupit_jsonl(path), PrepSummary()))


def test_a_folder_named_posts_xml_gets_a_named_error(tmp_path):
    (tmp_path / "site" / "Posts.xml").mkdir(parents=True)
    argv = ["--inputs", str(tmp_path / "site" / "Posts.xml"), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit, match=r"^data_prep: error: .*Posts\.xml is a folder"):
        prepare_main(argv)


def test_a_missing_posts_xml_is_not_found(tmp_path):
    argv = ["--inputs", str(tmp_path / "nonexist" / "Posts.xml"), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit, match=r"^data_prep: error: input file not found: .*nonexist/Posts\.xml$"):
        prepare_main(argv)


def test_a_compressed_posts_xml_is_to_be_decompressed(tmp_path):
    dump = write_dump(tmp_path, [question(1), answer(10, 1, 1, "2015-01-02"), answer(11, 1, 2, "2015-01-03")])
    packed = dump.with_name("Posts.xml.gz")
    packed.write_bytes(gzip.compress(dump.read_bytes()))
    with pytest.raises(SystemExit, match=r"^data_prep: error: .*Posts\.xml\.gz: .*decompress"):
        prepare_main(["--inputs", str(packed), "--output_dir", str(tmp_path / "out")])


def test_an_unknown_compressed_table_names_jsonl_gz(tmp_path):
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress(b"id,text,comment,score\n1,Q,a,0\n1,Q,b,1\n"))
    with pytest.raises(SystemExit, match=r"^data_prep: error: .*unknown table type '\.gz' \(use .*\.jsonl\.gz\)"):
        prepare_main(["--inputs", str(path), "--output_dir", str(tmp_path / "out")])


@pytest.mark.parametrize("field", ["text", "comments", "comments[1].text"])
def test_a_null_field_says_null(tmp_path, field):
    path = write_jsonl(tmp_path / "in.jsonl", [post(1), with_field(field, None)])
    with pytest.raises(InvalidInputError, match=rf"in\.jsonl:2: field '{re.escape(field)}': null"):
        list(collect_posts(read_cupit_jsonl(path), PrepSummary()))


@pytest.mark.parametrize("field", ["site", "url", "license"])
def test_a_site_url_or_license_that_is_not_text_is_named(tmp_path, field):
    path = write_jsonl(tmp_path / "in.jsonl", [post(1), with_field(field, 123)])
    with pytest.raises(InvalidInputError, match=rf"in\.jsonl:2: field '{field}': expected str, got int"):
        list(collect_posts(read_cupit_jsonl(path), PrepSummary()))


def test_a_template_with_a_backslash_n_is_warned_about(caplog):
    from commentrank.configs import check_prompt_template

    with caplog.at_level("WARNING", logger="commentrank.configs"):
        check_prompt_template("{title}\\n\\n{body}")  # as bash passes '{title}\n\n{body}'
        check_prompt_template("{title}\n\n{body}")  # line breaks: fine
    assert caplog.text.count("holds a backslash followed by n, not a line break") == 1
