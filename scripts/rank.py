"""Rank the comments of one post with a reward model: best first, with their rewards.

Usage:

    echo '{"text": "Best hop for citrus notes?", "comments": ["Citra.", "Water."]}' | \
        python scripts/rank.py --model outputs/quickstart/reward

    python scripts/rank.py --model outputs/quickstart/reward post.json --json

The post is JSON `{"text": ..., "comments": [...]}` (comments as strings or CUP IT objects with `text`; an optional
`post_body` is used when the model's prompt template has `{body}`), from a file or stdin (no file, or `-`).
"""

import dataclasses
import json
import logging
import sys

from commentrank.cli import ArgumentParser
from commentrank.configs import Columns, ScoreArguments, check_scoring_options
from commentrank.data.readers import ProblemSignal, post_from_mapping
from commentrank.data.records import RankedPost
from commentrank.data.validation import SCORING, InvalidInputError, validate_post
from commentrank.data.views import build_prompt, prompt_warnings
from commentrank.io_utils import exits_on_bad_input

logger = logging.getLogger("commentrank.rank")
SCORE_OPTIONS = {"max_length": int, "batch_size": int, "device": str, "dtype": str, "onnx_file": str}  # score.py's


def read_post(source: str) -> RankedPost:
    """The post to rank, from a JSON file or stdin, checked like every scored post (one comment is enough)."""
    name = "stdin" if source == "-" else source
    try:
        stdin = getattr(sys.stdin, "buffer", None)
        if source == "-" and sys.stdin.isatty():  # a person at a terminal, not a pipe: say what is awaited
            print("reading the post's JSON from stdin (end with Ctrl-D)...", file=sys.stderr)
        raw = (stdin.read() if stdin is not None else sys.stdin.read().encode()) if source == "-" else None
        text = raw.decode("utf-8-sig") if raw is not None else open(source, encoding="utf-8-sig").read()
    except OSError as err:
        raise ValueError(f"cannot read {name}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{name}: not valid UTF-8 (byte 0x{err.object[err.start]:02x} at position {err.start})"
        ) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{name}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    except RecursionError:
        raise ValueError(f"{name}: not valid JSON (nested too deeply)") from None
    try:
        post = post_from_mapping(obj, Columns(), "post", labels_required=False)
    except ProblemSignal as signal:
        raise InvalidInputError(name, signal.problem, hint=False) from None
    problem = validate_post(post, SCORING)
    if problem is not None:
        raise InvalidInputError(name, problem, hint=False)
    return post


def main(argv: list[str] | None = None) -> list[dict]:
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)  # on stderr, as score.py
    parser = ArgumentParser("rank", __doc__)
    parser.add_argument("post", nargs="?", default="-", help="JSON file with the post ('-' or none: stdin).")
    parser.add_argument("--model", required=True, help="Reward model folder or Hub id.")
    fields = {option.name: option for option in dataclasses.fields(ScoreArguments)}
    for name, kind in SCORE_OPTIONS.items():  # defined once, in ScoreArguments: the same defaults and help
        parser.add_argument(f"--{name}", type=kind, default=fields[name].default, help=fields[name].metadata["help"])
    parser.add_argument("--json", action="store_true", help="Print a JSON list instead of a table.")
    parser.add_model_loading_options()
    args = parser.parse_args(argv)
    with exits_on_bad_input("rank"):
        check_scoring_options(args)  # score.py's checks, with its messages
        post = read_post(args.post)
        from commentrank.score.scorer import load_scorer

        scorer = load_scorer(args.model, args.max_length, args.device, args.dtype, args.allow_pickle_weights,
                             args.onnx_file)  # fmt: skip
        logger.info("scoring in %s (%s)", scorer.dtype, scorer.dtype_reason)
        texts = [c.text for c in post.comments]
        for warning in prompt_warnings([post], scorer.settings.prompt_template):  # e.g. a with-context model, no body
            logger.warning(warning)
        ranked = scorer.rank(build_prompt(post, scorer.settings.prompt_template), texts, args.batch_size)
    rows = [{"rank": rank, "reward": reward, "index": i, "text": texts[i]} for rank, (i, reward) in enumerate(ranked)]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
    else:
        for row in rows:
            print(f"{row['rank']:>3}  {row['reward']:+.4f}  {' '.join(row['text'].split())}")
    return rows


if __name__ == "__main__":
    main()
