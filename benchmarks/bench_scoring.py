"""Scoring throughput: commentrank's path against pad-to-max_length batching and against the bare model forward.

Usage:

    OMP_NUM_THREADS=2 python benchmarks/bench_scoring.py --n_comments 400 --batch_size 32 --threads 2

The bundled MiniLM (a fresh one-label head: speed does not depend on the head's weights) scores the first
`n_comments` comments of the shipped Stack Exchange sample at `max_length` tokens, three ways, in one run:

(a) `score_posts`: tokenization, length-sorted batches, dynamic padding, no gradients (what scripts/score.py does);
(b) the original solution's batching: the same tokenization, batches in input order padded to `max_length`;
(c) the bare forward: only `model(**batch)` over the batches of (a), pre-built, under `no_grad` as (a)
    (the limit for (a)).

All three run under the same threads (tokenizers too), after a warm-up; the fastest of `--repeats` runs counts.

Prints a markdown table of comments/s and the ratio to (c); (a) and (b) must agree on every reward.
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenization in (a) and (b) on the stated threads only

import torch  # noqa: E402

from commentrank.bundled_models import minilm_path  # noqa: E402
from commentrank.data.loading import load_scoring_rows  # noqa: E402
from commentrank.encoding import PairEncoder  # noqa: E402
from commentrank.modeling import load_reward_model, load_tokenizer  # noqa: E402
from commentrank.score.inference import length_sorted_batches, pad_batch, score_ids, score_posts  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "stackexchange" / "se_ranked.jsonl.gz"


def take_comments(rows: list[dict], n: int) -> list[dict]:
    """The first posts of the sample, the last one cut so that there are exactly `n` comments."""
    out, total = [], 0
    for row in rows:
        if total >= n:
            break
        comments = row["comments"][: n - total]
        out.append({**row, "comments": comments})
        total += len(comments)
    if total < n:
        raise SystemExit(f"the sample has only {total} comments")
    return out


def timed(fn, repeats: int):
    best, result = float("inf"), None
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n_comments", type=int, default=400)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)))
    parser.add_argument("--repeats", type=int, default=3, help="Runs per path; the fastest counts.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default=None, help="Model folder (default: the bundled MiniLM).")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    name = args.model or minilm_path()
    tokenizer = load_tokenizer(name)
    model = load_reward_model(name, tokenizer).to(args.device).eval()
    encoder = PairEncoder(tokenizer, max_length=args.max_length)
    rows = take_comments(load_scoring_rows(str(SAMPLE), skip_invalid=True).rows, args.n_comments)
    prompts = [r["prompt"] for r in rows for _ in r["comments"]]
    comments = [c for r in rows for c in r["comments"]]
    pad = tokenizer.pad_token_id

    def dynamic():
        rewards, _ = score_posts(model, encoder, rows, args.batch_size)
        return [r for post in rewards for r in post]

    def padded():
        ids = encoder.encode(prompts, comments).input_ids
        return score_ids(model, ids, pad, args.batch_size, sort_by_length=False, pad_to=args.max_length)

    ids = encoder.encode(prompts, comments).input_ids
    batches = [
        {k: v.to(args.device) for k, v in pad_batch([ids[i] for i in b], pad).items()}
        for b in length_sorted_batches([len(x) for x in ids], args.batch_size)
    ]

    def bare():  # under no_grad, as score_ids runs (a) and (b)
        with torch.no_grad():
            for batch in batches:
                model(**batch)

    bare()  # warm-up over every batch shape

    t_a, rewards_a = timed(dynamic, args.repeats)
    t_b, rewards_b = timed(padded, args.repeats)
    t_c, _ = timed(bare, args.repeats)
    diff = max(abs(a - b) for a, b in zip(rewards_a, rewards_b))
    n = len(comments)
    tokens = sum(len(x) for x in ids)
    padded_dynamic = sum(b["input_ids"].numel() for b in batches)
    results = [
        {"path": "(a) score_posts: length-sorted, dynamic padding", "seconds": t_a, "tokens": padded_dynamic},
        {"path": f"(b) input order, padded to max_length {args.max_length}", "seconds": t_b,
         "tokens": n * args.max_length},
        {"path": "(c) bare forward over the batches of (a)", "seconds": t_c, "tokens": padded_dynamic},
    ]  # fmt: skip
    print(
        f"{n} comments of {len(rows)} posts, {tokens} real tokens, max_length {args.max_length}, batch "
        f"{args.batch_size}, {args.threads} thread(s), device {args.device}, torch {torch.__version__}, "
        f"python {sys.version.split()[0]}\n"
    )
    print("| path | seconds | comments/s | padded tokens | vs bare forward |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        r["comments_per_s"] = n / r["seconds"]
        r["ratio_to_bare"] = r["comments_per_s"] / (n / t_c)
        print(
            f"| {r['path']} | {r['seconds']:.2f} | {r['comments_per_s']:.1f} | {r['tokens']} | {r['ratio_to_bare']:.2f} |"
        )
    print(f"\nmax |reward (a) - reward (b)| = {diff:.2e}")
    if diff > 1e-3:
        raise SystemExit("the two scoring paths disagree")
    return results


if __name__ == "__main__":
    main()
