"""Listwise against pairwise reward training: training cost and ranking quality, same backbone, data and epochs.

Usage (about 15 minutes on 2 CPU cores with the defaults):

    OMP_NUM_THREADS=2 python benchmarks/bench_listwise.py --threads 2

One run trains the bundled MiniLM from the same initial weights (seeded score head) four ways on the same posts:

- `stock TRL, all pairs`: TRL's RewardTrainer on every (better, worse) pair of each post (InstructGPT's pairs);
- `stock TRL, adjacent pairs`: TRL's RewardTrainer on pairs of neighbouring ranks (the CUP IT solution's);
- `listwise pairwise_all` / `listwise listmle`: ListwiseRewardTrainer, each post one batch element.

Data: the shipped Stack Exchange sample prepared by `commentrank.data.prepare` (skip_invalid, split seed 42); training
uses a seeded subset of `--train_posts` posts of its train split (the same posts for every method: the pairs are
data_prep's pairs of those posts), evaluation scores every comment of every post of `--eval_split` (test by
default; choose settings on `validation`, never on test). Tokenization (prompt + comment, truncated, never
dropped), max_length, epochs, learning rate and schedule are shared; a step holds `--pair_batch_size` pairs
(2x as many sequences; 8 as in the quickstart recipe) for the stock trainer and `--post_batch_size` posts for the
listwise one. The post batch size was chosen on the validation split (NDCG@5, listmle / pairwise_all, stock all
pairs 0.8054): 4 posts (about as many sequences per step as 8 pairs, 50 steps) 0.7872 / 0.7994, 2 posts 0.8035 /
0.8016, 1 post (200 steps) 0.8163 / 0.8075; 2 posts at twice the learning rate 0.8093 / 0.8036. With one epoch
the listwise trainer makes as many optimizer steps as there are posts, and it needs them.

Reported per method: training wall time (`trainer.train()` only), sequences and tokens forwarded in training
(counted by a forward hook: real tokens and padded batch cells), NDCG@1/@5 with relevance from rank and from votes,
pair accuracy, and the time ratio to stock all-pairs. The table is printed and saved as markdown (`--output`).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_file import write_generated  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "stackexchange" / "se_ranked.jsonl.gz"
METHODS = {
    "stock-all": ("stock TRL RewardTrainer", "all pairs"),
    "stock-adjacent": ("stock TRL RewardTrainer", "adjacent pairs"),
    "listwise-pairwise_all": ("ListwiseRewardTrainer", "pairwise_all"),
    "listwise-listmle": ("ListwiseRewardTrainer", "listmle"),
}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_posts", type=int, default=200, help="Seeded subset of the train split's posts.")
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    parser.add_argument("--pair_batch_size", type=int, default=8, help="Pairs per step (stock trainer).")
    parser.add_argument("--post_batch_size", type=int, default=1, help="Posts per step (listwise trainer).")
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--warmup_ratio", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--eval_split", default="test", choices=["test", "validation"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--model", default="bundled:minilm")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "listwise.md"))
    return parser.parse_args(argv)


def load_data(args):
    """Listwise posts and the all / adjacent pairs of the same training posts, and the evaluation posts."""
    from commentrank.configs import PrepArguments
    from commentrank.data.prepare import prepare_views

    views = {}
    for strategy in ("all", "adjacent"):
        config = PrepArguments(inputs=[str(SAMPLE)], skip_invalid=True, pair_strategy=strategy, seed=42,
                            views=["pairwise", "listwise"] if strategy == "all" else ["pairwise"])  # fmt: skip
        views[strategy], _ = prepare_views(config)
    listwise = views["all"]["listwise"]
    train = listwise["train"].shuffle(seed=args.seed)
    train = train.select(range(min(args.train_posts, len(train))))
    ids = set(train["post_id"])
    pairs = {s: views[s]["pairwise"]["train"].filter(lambda r: r["post_id"] in ids) for s in ("all", "adjacent")}
    eval_posts = [p for p in listwise[args.eval_split] if p["ranks"] is not None]
    return train, pairs, eval_posts


class ForwardCounter:
    """Counts the sequences, real tokens and padded cells the model is given (a forward pre-hook)."""

    def __init__(self, model):
        self.sequences = self.tokens = self.cells = 0
        self.handle = model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        self.sequences += ids.shape[0]
        self.cells += ids.numel()
        self.tokens += int(mask.sum()) if mask is not None else ids.numel()


def run_method(key, args, data, tokenizer_path):
    import torch
    from transformers import set_seed
    from trl import RewardConfig, RewardTrainer

    from commentrank.configs import ListwiseRewardConfig
    from commentrank.encoding import PairEncoder
    from commentrank.metrics import ranking_metrics
    from commentrank.modeling import load_reward_model, load_tokenizer
    from commentrank.score.inference import score_posts
    from commentrank.train.listwise import ListwiseRewardTrainer, prepare_listwise
    from commentrank.train.pairwise import tokenize_pairs

    train, pairs, eval_posts = data
    tokenizer = load_tokenizer(tokenizer_path)
    encoder = PairEncoder(tokenizer, max_length=args.max_length)
    set_seed(args.seed)  # the same score head for every method
    model = load_reward_model(tokenizer_path, tokenizer)
    listwise = key.startswith("listwise")
    if listwise:
        dataset, counts = prepare_listwise(train, encoder, seed=args.seed)
        units = f"{counts['posts']} posts / {counts['comments']} comments"
    else:
        dataset, counts = tokenize_pairs(pairs[key.split("-")[1]], encoder)
        units = f"{counts['pairs']} pairs"
    config = (ListwiseRewardConfig if listwise else RewardConfig)(
        output_dir=str(Path(args.run_dir) / key), use_cpu=True, bf16=False, fp16=False,
        report_to="none", save_strategy="no", eval_strategy="no", logging_steps=10, seed=args.seed,
        activation_checkpointing=False,
        num_train_epochs=args.epochs, learning_rate=args.learning_rate, lr_scheduler_type="linear",
        warmup_steps=args.warmup_ratio, max_length=args.max_length, dataloader_num_workers=0,
        per_device_train_batch_size=args.post_batch_size if listwise else args.pair_batch_size,
        **({"loss_type": key.split("-")[1]} if listwise else {}),
    )  # fmt: skip
    if listwise:
        trainer = ListwiseRewardTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    else:
        trainer = RewardTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    counter = ForwardCounter(trainer.model)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    counter.handle.remove()
    rewards, _ = score_posts(trainer.model, encoder, eval_posts, batch_size=32)
    metrics = ranking_metrics([{**p, "scores": r} for p, r in zip(eval_posts, rewards)])
    torch.set_num_threads(args.threads)
    return {"key": key, "units": units, "seconds": seconds, "sequences": counter.sequences,
            "tokens": counter.tokens, "cells": counter.cells, "steps": trainer.state.global_step,
            **metrics}  # fmt: skip


def warm_up(tokenizer_path, threads):
    """One forward and backward before timing, so that no method pays the first call's set-up."""
    import torch

    from commentrank.modeling import load_reward_model, load_tokenizer

    tokenizer = load_tokenizer(tokenizer_path)
    model = load_reward_model(tokenizer_path, tokenizer)
    batch = tokenizer(["warm up"] * 8, ["a comment"] * 8, return_tensors="pt", padding="max_length", max_length=64)
    for _ in range(2):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.sum().backward()
    torch.set_num_threads(threads)


def format_table(rows, header, baselines) -> str:
    ref = next((r for r in rows if r["key"] == "stock-all"), None)
    lines = [
        "| method | trained on | steps | train time (s) | time / stock all | sequences | tokens | padded cells "
        "| NDCG@1 | NDCG@5 | NDCG@1 votes | NDCG@5 votes | pair acc. |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        trainer, what = METHODS[r["key"]]
        ratio = f"{r['seconds'] / ref['seconds']:.2f}" if ref else "-"
        lines.append(
            f"| {trainer}, {what} | {r['units']} | {r['steps']} | {r['seconds']:.0f} | {ratio} | {r['sequences']:,} | "
            f"{r['tokens']:,} | {r['cells']:,} | {r['ndcg@1']:.4f} | {r['ndcg@5']:.4f} | "
            f"{r.get('ndcg_votes@1', float('nan')):.4f} | {r.get('ndcg_votes@5', float('nan')):.4f} | "
            f"{r['pair_accuracy']:.4f} |"
        )
    for name, m in baselines.items():
        lines.append(
            f"| baseline: {name} | - | - | - | - | - | - | - | {m['ndcg@1']:.4f} | {m['ndcg@5']:.4f} | "
            f"{m.get('ndcg_votes@1', float('nan')):.4f} | {m.get('ndcg_votes@5', float('nan')):.4f} | "
            f"{m['pair_accuracy']:.4f} |"
        )
    return "\n".join(header + [""] + lines) + "\n"


def verdict(rows) -> list[str]:
    ref = next((r for r in rows if r["key"] == "stock-all"), None)
    if ref is None:
        return []
    out = []
    for r in rows:
        if not r["key"].startswith("listwise"):
            continue
        ratio = r["seconds"] / ref["seconds"]
        ok_ndcg, ok_time = r["ndcg@5"] >= ref["ndcg@5"], ratio <= 0.25
        out.append(
            f"- {r['key']}: NDCG@5 {r['ndcg@5']:.4f} vs stock all-pairs {ref['ndcg@5']:.4f} "
            f"({'met' if ok_ndcg else 'NOT met'}); time ratio {ratio:.2f} (target <= 0.25: "
            f"{'met' if ok_time else 'NOT met'}); sequences {ref['sequences'] / r['sequences']:.2f}x fewer"
        )
    return out


def main(argv=None):
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers
    import trl

    from commentrank.bundled_models import resolve_model_path
    from commentrank.metrics import baseline_metrics

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    model_path = resolve_model_path(args.model)
    load = os.getloadavg()[0]
    data = load_data(args)
    train, pairs, eval_posts = data
    warm_up(model_path, args.threads)

    rows = []
    for key in args.methods:
        print(f"== {key}", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-listwise-") as args.run_dir:  # nothing is saved there
            rows.append(run_method(key, args, data, model_path))
        r = rows[-1]
        print(f"   {r['seconds']:.0f} s, {r['sequences']} sequences, NDCG@5 {r['ndcg@5']:.4f}", file=sys.stderr)

    n_eval_comments = sum(len(p["comments"]) for p in eval_posts)
    header = [
        "# Listwise vs pairwise reward training (benchmarks/bench_listwise.py)",
        "",
        f"- backbone: {args.model}"
        + (" (all-MiniLM-L6-v2)" if args.model == "bundled:minilm" else "")
        + ", the same seeded score head for every method",
        f"- train: {len(train)} posts of the shipped Stack Exchange sample's train split (seeded subset, seed "
        f"{args.seed}; {len(pairs['all'])} all pairs, {len(pairs['adjacent'])} adjacent pairs, "
        f"{sum(len(c) for c in train['comments'])} comments)",
        f"- evaluation: every comment of the {args.eval_split} split ({len(eval_posts)} posts, {n_eval_comments} "
        "comments), NDCG per post averaged over posts (linear gain; relevance from rank or from votes), pair "
        "accuracy over all pairs",
        f"- max_length {args.max_length}, {args.epochs:g} epoch(s), learning rate {args.learning_rate:g} (linear, "
        f"warmup {args.warmup_ratio:g}), AdamW, float32, step = {args.pair_batch_size} pairs (stock) or "
        f"{args.post_batch_size} posts (listwise)",
        f"- CPU, {args.threads} threads ({platform.processor() or platform.machine()}, load average at start "
        f"{load:.2f}); torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}; "
        f"{datetime.now(UTC):%Y-%m-%d}",
        "- train time: `trainer.train()` wall time; sequences / tokens / padded cells: what the model was given in "
        "training (forward hook; tokens without padding)",
    ]
    table = format_table(rows, header, baseline_metrics(eval_posts))
    checks = verdict(rows)
    if checks:
        table += "\nTargets (listwise NDCG@5 >= stock all-pairs, time <= 1/4 of it):\n\n" + "\n".join(checks) + "\n"
    print(table)
    if args.output:
        print(f"saved {write_generated(args.output, Path(__file__).name, table)}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
