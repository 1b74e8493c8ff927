"""Rank the comments of one post with a reward model: best first, with their rewards.

Usage:

    echo '{"text": "Best hop for citrus notes?", "comments": ["Citra.", "Water."]}' | \
        python scripts/rank.py --model outputs/quickstart/reward

    python scripts/rank.py --model outputs/quickstart/reward post.json --json

The post is JSON `{"text": ..., "comments": [...]}` (comments as strings or CUP IT objects with `text`; an optional
`post_body` is used when the model's prompt template has `{body}`), from a file or stdin (no file, or `-`).
"""

import argparse
import json
import sys

from commentrank.data.records import RankedPost
from commentrank.data.views import build_prompt


def read_post(source: str) -> dict:
    name = "stdin" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else open(source, encoding="utf-8").read()
    except OSError as err:
        raise ValueError(f"cannot read {name}: {err.strerror}") from None
    try:
        post = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{name}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    if not isinstance(post, dict):
        raise ValueError(f'{name}: expected a JSON object {{"text", "comments"}}, got {type(post).__name__}')
    for key in ("text", "comments"):
        if key not in post:
            raise ValueError(f'{name}: field \'{key}\' is missing (expected {{"text": ..., "comments": [...]}})')
    if not isinstance(post["text"], str) or not post["text"].strip():
        raise ValueError(f"{name}: field 'text' must be a non-empty string")
    if not isinstance(post["comments"], list) or not post["comments"]:
        raise ValueError(f"{name}: field 'comments' must be a non-empty list: no comments to rank")
    comments = []
    for i, comment in enumerate(post["comments"]):
        value = comment.get("text") if isinstance(comment, dict) else comment
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name}: field 'comments[{i}]' must be a non-empty string or an object with 'text'")
        comments.append(value)
    return {"text": post["text"], "post_body": post.get("post_body"), "comments": comments}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("post", nargs="?", default="-", help="JSON file with the post ('-' or none: stdin).")
    parser.add_argument("--model", required=True, help="Reward model folder or Hub id.")
    parser.add_argument("--max_length", type=int, default=None, help="Token limit per input (default: the model's).")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="Print a JSON list instead of a table.")
    args = parser.parse_args(argv)
    try:
        post = read_post(args.post)
        from commentrank.score.scorer import load_scorer

        scorer = load_scorer(args.model, args.max_length, args.device)
        prompt = build_prompt(
            RankedPost("post", post["text"], [], body=post["post_body"]), scorer.settings["prompt_template"]
        )
        ranked = scorer.rank(prompt, post["comments"], args.batch_size)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"rank: error: {err}") from None
    rows = [
        {"rank": rank, "reward": reward, "index": i, "text": post["comments"][i]}
        for rank, (i, reward) in enumerate(ranked)
    ]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
    else:
        for row in rows:
            print(f"{row['rank']:>3}  {row['reward']:+.4f}  {' '.join(row['text'].split())}")
    return rows


if __name__ == "__main__":
    main()
