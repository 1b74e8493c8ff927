"""Every recipe parses with its script's own parser: no unknown keys, no wrong types."""

import dataclasses
import enum
import types
import typing
from pathlib import Path

import pytest
import yaml
from trl import TrlParser

from commentrank.configs import PrepArguments

from conftest import ROOT, load_script

RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))


def parser_for(recipe: Path) -> TrlParser:
    kind = recipe.stem.split("_")[0]
    if kind == "data":
        return TrlParser([PrepArguments])
    if kind in ("reward", "sft", "grpo"):
        return load_script(kind).make_parser()
    raise AssertionError(f"{recipe}: recipe names start with data, reward, sft or grpo")


def accepts(annotation, value) -> bool:
    """Whether a YAML value has the type a dataclass field declares (TrlParser sets YAML values unconverted)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(accepts(a, value) for a in args)
    if annotation is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args
    if origin in (list, tuple):
        return isinstance(value, list) and all(accepts(args[0], v) for v in value) if args else isinstance(value, list)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return value in {e.value for e in annotation}
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation is typing.Any:
        return True
    raise AssertionError(f"the recipe test does not know the type {annotation!r}: teach accepts() to check it")


@pytest.mark.parametrize("recipe", RECIPES, ids=[str(r.relative_to(ROOT / "recipes")) for r in RECIPES])
def test_recipe_parses(recipe):
    parser = parser_for(recipe)
    parser.parse_args_and_config(["--config", str(recipe)])  # unknown keys are an error
    hints = {}
    for dataclass_type in parser.dataclass_types:
        names = {f.name for f in dataclasses.fields(dataclass_type)}
        hints.update({k: v for k, v in typing.get_type_hints(dataclass_type).items() if k in names})
    values = yaml.safe_load(recipe.read_text())
    wrong = {key: value for key, value in values.items() if key in hints and not accepts(hints[key], value)}
    assert not wrong, f"{recipe}: values of the wrong type: {wrong}"


def test_every_quality_benchmark_variant_parses_with_the_quickstart_recipe():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "benchmarks" / "bench_quality.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    parser = parser_for(bench.RECIPE)
    for name, flags in bench.VARIANTS.items():
        script_args, training_args, _ = parser.parse_args_and_config(["--config", str(bench.RECIPE), *flags])
        if "learned-length" in name or name.endswith("-length") or name == "listmle-odin":  # measured before the fit
            assert training_args.length_learning_rate == 1e-2, name
            assert training_args.length_init == ("fit" if name.startswith("fitted") else "zero"), name
        if name.startswith("quickstart"):  # the recipe as it is, other seeds at most
            assert training_args.length_init == "fit" and training_args.length_learning_rate == 0.0, name


def test_quality_benchmark_adds_only_untied_two_answer_questions_of_training_sites(tmp_path):
    from commentrank.data.validation import PrepSummary

    bench = load_script("bench_quality", "benchmarks")

    def dump(site, rows):
        (tmp_path / site).mkdir()
        body = "\n".join(
            f'<row Id="{i}" PostTypeId="{kind}" {"ParentId=" + chr(34) + str(parent) + chr(34) if parent else ""} '
            f'Title="Q{i}" Body="&lt;p&gt;text {i}&lt;/p&gt;" Score="{score}" CreationDate="2015-01-0{i}T00:00:00" />'
            for i, kind, parent, score in rows
        )
        (tmp_path / site / "Posts.xml").write_text(
            f'<?xml version="1.0" encoding="utf-8"?>\n<posts>\n{body}\n</posts>\n'
        )

    two_answers = [(1, 1, None, 0), (2, 2, 1, 5), (3, 2, 1, 1)]  # question 1: answers with 5 and 1 votes
    dump("train.stackexchange.com", [*two_answers, (4, 1, None, 0), (5, 2, 4, 2), (6, 2, 4, 2),  # 4: tied votes
                                     (7, 1, None, 0), (8, 2, 7, 3), (9, 2, 7, 1)])  # fmt: skip
    dump(bench.TEST_SITES[0], two_answers)
    dump(bench.VALIDATION_SITES[0], two_answers)
    summary = PrepSummary()
    posts = bench.two_answer_posts(tmp_path, {"train.stackexchange.com:7"}, summary)  # 7: in the sample already
    assert [p.post_id for p in posts] == ["train.stackexchange.com:1"]
    assert [c.rank for c in posts[0].comments] == [0, 1]
    assert summary.posts_dropped["two_answer_vote_tie"] == 1
    assert (summary.posts_read, summary.posts_kept) == (2, 1)  # the counts add up: read = kept + dropped


def test_zero_shot_benchmark_cosines_line_up_with_each_posts_comments():
    """Mean-pooled, normalized embeddings: a comment that repeats its own post's question scores cosine 1, the
    others less, post by post (the flat batch is split back at the right places, whatever the length sort did)."""
    bench = load_script("bench_zero_shot", "benchmarks")
    posts = [
        {"prompt": "How do I brew coffee?", "comments": ["Use a kettle and a scale.", "How do I brew coffee?"]},
        {"prompt": "Which beer goes with fish?", "comments": ["Which beer goes with fish?", "A lager.", "Any."]},
    ]
    cos = bench.Encoder("bundled:minilm").cosines(posts, max_length=32, batch_size=2)
    assert [c.shape for c in cos] == [(2,), (3,)]
    assert [int(c.argmax()) for c in cos] == [1, 0]
    assert abs(cos[0][1] - 1) < 0.02 and abs(cos[1][0] - 1) < 0.02
    assert max(cos[0][0], *cos[1][1:]) < 0.9


def test_zero_shot_benchmark_fine_tuning_moves_the_cosine_toward_the_labels(capsys):
    """Fine-tuning the bi-encoder on posts whose better comment is the shorter one raises that comment's cosine
    against the longer one's (the length term alone would rank them the other way); a one-comment post among them
    (no pair) is left out: the printed running loss stays a number (a mean over no pairs once made it NaN)."""
    bench = load_script("bench_zero_shot", "benchmarks")
    posts = [
        {"prompt": "How do I brew coffee?", "comments": ["Pour-over.", "I like tea more than coffee, honestly."],
         "ranks": [0, 1]},
        {"prompt": "Which beer goes with fish?", "comments": ["A pilsner.", "My uncle once went fishing in Norway."],
         "ranks": [0, 1]},
        {"prompt": "Is decaf coffee?", "comments": ["Yes."], "ranks": [0]},  # no pair: left out
    ]  # fmt: skip
    encoder = bench.Encoder("bundled:minilm")

    def margins():
        return [c[0] - c[1] for c in encoder.cosines(posts[:2], max_length=32)]

    before = margins()
    bench.fine_tune(encoder, posts, weight=2.0, epochs=4, max_length=32, learning_rate=1e-4, log_every=1)
    printed = capsys.readouterr().out
    assert "2/2 posts" in printed and "nan" not in printed.lower(), printed
    after = margins()
    assert all(a > b + 0.01 for a, b in zip(after, before)), (before, after)
    assert not encoder.model.training
