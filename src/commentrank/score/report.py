"""What a scoring run reports: metrics of the model against the baselines, the CUP IT predictions file, a
markdown table and an NDCG@k plot."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from commentrank.score.inference import predicted_ranks

COLUMNS = ("ndcg@1", "ndcg@3", "ndcg@5", "ndcg_votes@5", "pair_accuracy")


def markdown_table(results: dict[str, dict], columns=COLUMNS) -> str:
    """One row per ranker, one column per metric (a metric a ranker lacks is shown as -)."""
    columns = [c for c in columns if any(c in r for r in results.values())]
    lines = ["| ranker | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, metrics in results.items():
        cells = [f"{metrics[c]:.4f}" if c in metrics else "-" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_ndcg(results: dict[str, dict], path: str | os.PathLike, ks=(1, 2, 3, 4, 5)) -> None:
    """NDCG@k curves of each ranker, saved as a PNG (into an output set's temporary folder)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, metrics in results.items():
        ax.plot(ks, [metrics.get(f"ndcg@{k}", float("nan")) for k in ks], marker="o", label=name)
    ax.set_xlabel("k")
    ax.set_ylabel("NDCG@k (relevance from rank)")
    ax.set_xticks(list(ks))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def labeled_posts(rows: Sequence[dict], rewards: Sequence[Sequence[float]] | None = None) -> list[dict]:
    """The rows that can be evaluated (labeled, two or more comments) as `ranking_metrics` posts, with their
    rewards as `scores` when given."""
    rewards = rewards if rewards is not None else [None] * len(rows)
    return [
        {"ranks": row["ranks"], "votes": row.get("votes"), "comments": row["comments"],
         **({"scores": list(r)} if r is not None else {})}
        for row, r in zip(rows, rewards)
        if row.get("ranks") is not None and all(v is not None for v in row["ranks"]) and len(row["comments"]) > 1
    ]  # fmt: skip


def evaluate_rewards(rows: Sequence[dict], rewards: Sequence[Sequence[float]], n_seeds: int = 20, seed: int = 0):
    """{"model", "random", "longest_first"} -> `ranking_metrics` on the labeled posts with 2+ comments, or None
    when no post is labeled. The baselines rank the same posts."""
    from commentrank.metrics import baseline_metrics, ranking_metrics

    posts = labeled_posts(rows, rewards)
    if not posts:
        return None
    return {"model": ranking_metrics(posts), **baseline_metrics(posts, n_seeds=n_seeds, seed=seed)}


def prediction_records(rows: Sequence[dict], rewards: Sequence[Sequence[float]]) -> list[dict]:
    """CUP IT submission records: the post with its comments in input order, each with `reward` and `score`
    (the predicted rank, 0 = best)."""
    records = []
    for row, post_rewards in zip(rows, rewards):
        ranks = predicted_ranks(post_rewards)
        record = {"post_id": row.get("post_id"), "text": row.get("text", row["prompt"])}
        record["comments"] = [
            {"text": text, "score": rank, "reward": reward}
            for text, rank, reward in zip(row["comments"], ranks, post_rewards)
        ]
        records.append(record)
    return records


PLOT_NAME = "ndcg_at_k.png"


def report_markdown(results: dict, info: dict) -> str:
    ks = ("ndcg@1", "ndcg@2", "ndcg@3", "ndcg@4", "ndcg@5")
    votes = tuple(k.replace("ndcg@", "ndcg_votes@") for k in ks)
    lines = [
        "# Comment ranking report",
        "",
        f"- model: `{info['model']}`",
        f"- dataset: `{info['dataset']}`" + (f", split `{info['split']}`" if info.get("split") else ""),
        f"- posts evaluated: {int(results['model']['n_posts'])} ({int(results['model']['n_comments'])} comments)",
        f"- inputs truncated to {info['max_length']} tokens: {info['n_truncated']} of {info['n_comments']}",
        "",
        "NDCG@k with linear gain, relevance `n - 1 - rank` (and `votes - min` where votes exist); pair accuracy "
        f"over all label-ordered pairs; random averaged over {info.get('n_seeds', 20)} seeds.",
        "",
        markdown_table(results, (*ks, "pair_accuracy")),
    ]
    if any(votes[0] in metrics for metrics in results.values()):
        lines += ["", "Relevance from votes:", "", markdown_table(results, votes)]
    lines += [
        "",
        "The original CUP IT solution's metrics: grouped NDCG@5 (NDCG@5 over each post's list, the same value as "
        "ndcg@5 above) and paired NDCG@2 (sklearn's NDCG@2 of each adjacent (chosen, rejected) pair, 0>1, 1>2, ...: "
        "an affine map of adjacent-pair accuracy).",
        "",
        markdown_table(results, ("grouped_ndcg@5", "paired_ndcg@2")),
    ]
    lines += ["", f"![NDCG@k]({PLOT_NAME})", ""]
    return "\n".join(lines)


def write_outputs(folder: str | os.PathLike, rows, rewards, results: dict | None, info: dict) -> list[str]:
    """predictions.jsonl always; metrics.json, report.md and the NDCG plot when there are labels. Writes into
    `folder` (scripts/score.py passes the temporary folder of its `OutputDir`, so the set lands at once); returns the
    names written."""
    from commentrank.io_utils import atomic_write_text

    out = Path(folder)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in prediction_records(rows, rewards))
    atomic_write_text(out / "predictions.jsonl", lines)
    written = ["predictions.jsonl"]
    if results is not None:
        atomic_write_text(out / "metrics.json", json.dumps({"results": results, **info}, indent=2) + "\n")
        atomic_write_text(out / "report.md", report_markdown(results, info))
        plot_ndcg(results, out / PLOT_NAME)
        written += ["metrics.json", "report.md", PLOT_NAME]
    return written
