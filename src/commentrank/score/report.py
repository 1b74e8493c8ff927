"""What a scoring run reports: metrics of the model against the baselines, the CUP IT predictions file, a
markdown table and an NDCG@k plot."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from commentrank.inference import COLLAPSE_RATIO, collapse_warning, predicted_ranks  # noqa: F401 (re-exported)

COLUMNS = ("ndcg@1", "ndcg@3", "ndcg@5", "ndcg_votes@5", "pair_accuracy")
SITE_RANKERS = ("model", "longest_first")
SITE_METRICS = ("ndcg@5", "pair_accuracy")
DIFFERENCE_ROWS = ("ndcg@1", "ndcg@3", "ndcg@5", "ndcg_votes@5", "top1_ndcg@5", "pair_accuracy", "paired_ndcg@2",
                   "length_spearman", "shorter_better_pair_accuracy")  # fmt: skip
VERDICT_METRICS = ("ndcg@5", "pair_accuracy")
METRIC_NAMES = {"ndcg_votes@5": "NDCG@5 (votes)", "top1_ndcg@5": "top-1 NDCG@5", "pair_accuracy": "pair accuracy",
                "paired_ndcg@2": "paired NDCG@2", "length_spearman": "length Spearman",
                "shorter_better_pair_accuracy": "shorter-better pair accuracy"}  # fmt: skip


def _cell(metrics: dict, column: str, interval: list | None) -> str:
    """A metric as `0.8040`, or with its interval as `0.804 [0.781, 0.826]`; `-` when missing."""
    if column not in metrics or metrics[column] is None:
        return "-"
    if interval is None:
        return f"{metrics[column]:.4f}"
    low, high = interval
    bounds = "n/a" if low is None or high is None else f"{low:.3f}, {high:.3f}"
    return f"{metrics[column]:.3f} [{bounds}]"


def markdown_table(results: dict[str, dict], columns=COLUMNS, intervals: dict[str, dict] | None = None) -> str:
    """One row per ranker, one column per metric (a metric a ranker lacks is shown as -); with `intervals`
    (ranker -> metric -> [low, high]) each value is followed by its interval."""
    columns = [c for c in columns if any(c in r for r in results.values())]
    lines = ["| ranker | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, metrics in results.items():
        ranker_intervals = (intervals or {}).get(name) or {}
        cells = [_cell(metrics, c, ranker_intervals.get(c) if intervals else None) for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_ndcg(
    results: dict[str, dict], path: str | os.PathLike, ks=(1, 2, 3, 4, 5), intervals: dict[str, dict] | None = None
) -> None:
    """NDCG@k curves of each ranker, with their bootstrap intervals as bars when given, saved as a PNG (into an
    output set's temporary folder)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for i, (name, metrics) in enumerate(results.items()):
        values = np.array([metrics.get(f"ndcg@{k}", float("nan")) for k in ks], dtype=float)
        x = np.array(ks, dtype=float) + (0.06 * (i - (len(results) - 1) / 2) if intervals else 0.0)  # bars apart
        bounds = [((intervals or {}).get(name) or {}).get(f"ndcg@{k}") or [None, None] for k in ks]
        low = np.array([np.nan if b[0] is None else b[0] for b in bounds], dtype=float)
        high = np.array([np.nan if b[1] is None else b[1] for b in bounds], dtype=float)
        if intervals and np.isfinite(low).any():
            yerr = np.nan_to_num(np.stack([values - low, high - values]), nan=0.0).clip(min=0)
            ax.errorbar(x, values, yerr=yerr, marker="o", capsize=3, label=name)
        else:
            ax.plot(x, values, marker="o", label=name)
    ax.set_xlabel("k")
    ax.set_ylabel("NDCG@k (relevance from rank)")
    if intervals:
        ax.set_title("bars: 95% bootstrap intervals over posts", fontsize=9)
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
        {"ranks": row["ranks"], "votes": row.get("votes"), "comments": row["comments"], "site": row.get("site"),
         **({"scores": list(r)} if r is not None else {})}
        for row, r in zip(rows, rewards)
        if row.get("ranks") is not None and all(v is not None for v in row["ranks"]) and len(row["comments"]) > 1
    ]  # fmt: skip


def evaluate(
    rows: Sequence[dict], rewards: Sequence[Sequence[float]], n_seeds: int = 20, seed: int = 0, n_bootstrap: int = 1000
) -> tuple[dict | None, dict | None]:
    """(results, details) of the model and the baselines on the labeled posts with 2+ comments, from one pass over
    per-post statistics (the random baseline drawn once); (None, None) when no post is labeled.

    `results`: {"model", "random", "longest_first"} -> `ranking_metrics`' keys. `details`: `length_controlled`
    (ranker -> length Spearman, shorter-better pair accuracy and their counts), `per_site` (NDCG@5 and pair accuracy
    of the model and longest-first per site), and with `n_bootstrap` > 0 the 95% bootstrap `intervals`, the paired
    `differences` model minus baseline and how they were made (`bootstrap`). Bootstrap and random baseline are both
    seeded by `seed`."""
    from commentrank.intervals import bootstrap_report, per_site_metrics
    from commentrank.metrics import (
        LENGTH_COUNTS,
        LENGTH_KEYS,
        baseline_post_stats,
        equal_vote_pairs,
        post_stats,
        report_values,
    )

    posts = labeled_posts(rows, rewards)
    if not posts:
        return None, None
    rankers = {"model": post_stats(posts), **baseline_post_stats(posts, n_seeds=n_seeds, seed=seed)}
    length_keys = [k for key in LENGTH_KEYS for k in (key, LENGTH_COUNTS[key])]
    results = {name: report_values(stats, posts) for name, stats in rankers.items()}
    details = {
        "length_controlled": {
            name: {k: v if math.isfinite(v) else None for k, v in stats.values().items() if k in length_keys}
            for name, stats in rankers.items()
        },
        "per_site": per_site_metrics(
            {name: rankers[name] for name in SITE_RANKERS}, [p["site"] for p in posts], SITE_METRICS
        ),
        "equal_vote_pairs": dict(zip(("equal", "pairs"), equal_vote_pairs(posts))),
    }
    if n_bootstrap > 0:
        details.update(bootstrap_report(rankers, reference="model", n_resamples=n_bootstrap, seed=seed))
    else:
        details["bootstrap"] = {"n_resamples": 0}
    return results, details


def evaluate_rewards(rows: Sequence[dict], rewards: Sequence[Sequence[float]], n_seeds: int = 20, seed: int = 0):
    """The point values of `evaluate` (None when no post is labeled)."""
    return evaluate(rows, rewards, n_seeds, seed, n_bootstrap=0)[0]


def evaluation_details(
    rows: Sequence[dict], rewards: Sequence[Sequence[float]], n_seeds: int = 20, seed: int = 0, n_bootstrap: int = 1000
) -> dict | None:
    """The details of `evaluate` (None when no post is labeled)."""
    return evaluate(rows, rewards, n_seeds, seed, n_bootstrap)[1]


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


def _name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric.replace("ndcg@", "NDCG@"))


def _percent(bootstrap: dict) -> str:
    return f"{100 * bootstrap.get('confidence', 0.95):g}%"


def interval_note(bootstrap: dict) -> str:
    """How the intervals were made, in one sentence."""
    fallback = bootstrap.get("percentile_fallback") or []
    degenerate = f" (percentile where BCa is degenerate: {len(fallback)} of them)" if fallback else ""
    return (
        f"In brackets: {_percent(bootstrap)} bootstrap intervals over posts, {bootstrap['method']}{degenerate}, "
        f"{bootstrap['n_resamples']} resamples, seed {bootstrap['seed']}; per-post values are computed once and "
        "resampled (pair accuracies as sum of credit / sum of pairs of the resampled posts). The bounds carry "
        f"resampling noise, up to about 0.01 at {bootstrap['n_resamples']} resamples (`--n_bootstrap` steadies them)."
    )


def verdict(difference: dict | None, bootstrap: dict) -> str:
    """ "above" / "below" when the paired interval excludes 0, else "not distinguishable at 95%"."""
    if not difference or difference.get("low") is None or difference.get("high") is None:
        return "no interval"
    if difference["low"] > 0:
        return "above"
    if difference["high"] < 0:
        return "below"
    return f"not distinguishable at {_percent(bootstrap)}"


def _difference_cell(difference: dict | None) -> str:
    """`+0.004 [+0.0004, +0.008]`: `intervals.difference_text` (a bound that decides the verdict shows its sign)."""
    from commentrank.intervals import difference_text

    if not difference or difference.get("point") is None:
        return "-"
    return difference_text(difference["point"], difference.get("low"), difference.get("high"))


def difference_table(differences: dict[str, dict], bootstrap: dict, rows=DIFFERENCE_ROWS) -> str:
    """One row per metric; per baseline the paired difference model minus baseline and its verdict."""
    rows = [r for r in rows if any(r in d for d in differences.values())]
    header = "| metric | " + " | ".join(f"model - {b} | vs {b}" for b in differences) + " |"
    lines = [header, "|---|" + "---:|---|" * len(differences)]
    for metric in rows:
        cells = [
            f"{_difference_cell(d.get(metric))} | {verdict(d.get(metric), bootstrap)}" for d in differences.values()
        ]
        lines.append(f"| {_name(metric)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict_lines(differences: dict[str, dict], bootstrap: dict, metrics=VERDICT_METRICS) -> list[str]:
    """One plain-words line per baseline: is the model above it, below it, or not distinguishable from it?"""
    lines = []
    for baseline, diffs in differences.items():
        parts = [
            f"{verdict(diffs[m], bootstrap).removesuffix(f' at {_percent(bootstrap)}')} on {_name(m)} "
            f"({_difference_cell(diffs[m])})"
            for m in metrics
            if m in diffs
        ]
        if parts:
            lines.append(f"- Model vs **{baseline}** at {_percent(bootstrap)}: " + "; ".join(parts) + ".")
    return lines


def length_table(length_controlled: dict[str, dict], intervals: dict[str, dict] | None = None) -> str:
    """Length Spearman and shorter-better pair accuracy per ranker, with their counts (and intervals)."""
    lines = [
        "| ranker | length Spearman | posts | shorter-better pair accuracy | pairs |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, values in length_controlled.items():
        ranker_intervals = (intervals or {}).get(name) or {}
        spearman = _cell(values, "length_spearman", ranker_intervals.get("length_spearman") if intervals else None)
        shorter = _cell(values, "shorter_better_pair_accuracy",
                        ranker_intervals.get("shorter_better_pair_accuracy") if intervals else None)  # fmt: skip
        n_posts, n_pairs = values.get("length_spearman_n_posts"), values.get("shorter_better_n_pairs")
        posts = "-" if n_posts is None else f"{n_posts:.0f}"
        pairs = "-" if n_pairs is None else f"{n_pairs:.0f}"
        lines.append(f"| {name} | {spearman} | {posts} | {shorter} | {pairs} |")
    return "\n".join(lines)


LENGTH_NOTE = (
    "Does the ranker just measure length? Length Spearman: mean over posts of the Spearman correlation between the "
    "reward and the comment's character length (1 = longest first; posts where either is constant are left out). "
    "Shorter-better pair accuracy: pair accuracy on the label-ordered pairs whose better comment is the shorter one "
    "(ties in length excluded): longest first scores 0, a ranker that only measures length scores below 0.5."
)


def site_table(per_site: dict[str, dict], rankers=SITE_RANKERS, metrics=SITE_METRICS) -> str:
    """One row per site: its posts and each ranker's metrics."""
    columns = [(m, r) for m in metrics for r in rankers]
    lines = ["| site | posts | " + " | ".join(f"{r} {_name(m)}" for m, r in columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]  # fmt: skip
    for site, values in per_site.items():
        cells = [_cell(values.get(r) or {}, m, None) for m, r in columns]
        lines.append(f"| {site} | {values['n_posts']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _detail_sections(details: dict) -> list[str]:
    """The model-minus-baseline, length-controlled and per-site sections of the report."""
    lines = []
    bootstrap, intervals = details.get("bootstrap") or {}, details.get("intervals")
    if details.get("differences"):
        spearman = any("length_spearman" in d for d in details["differences"].values())
        lines += ["", "## Model minus baseline", "",
                  "Paired bootstrap: the model and the baseline are recomputed on the same resampled posts. Above / "
                  f"below: the {_percent(bootstrap)} interval of the difference excludes 0."
                  + (" The length Spearman difference is over the posts both rankers count (a post whose scores one "
                     "of them ties throughout is left out of both), so it can differ from the difference of their "
                     "values in the length-controlled table." if spearman else ""), "",
                  *verdict_lines(details["differences"], bootstrap), "",
                  difference_table(details["differences"], bootstrap)]  # fmt: skip
    if details.get("length_controlled"):
        lines += ["", "## Length-controlled metrics", "", LENGTH_NOTE, "",
                  length_table(details["length_controlled"], intervals)]  # fmt: skip
    per_site = details.get("per_site") or {}
    if per_site and set(per_site) != {"unknown"}:
        sites = f"{len(per_site)} site" + "s" * (len(per_site) > 1)
        lines += ["", "## Per site", "", f"NDCG@5 and pair accuracy on the posts of each site ({sites}).", "",
                  site_table(per_site)]  # fmt: skip
    return lines


def _equal_votes_note(counts: dict | None) -> str:
    """A sentence on the label-ordered pairs whose comments have equal votes (their order is the data's tie-break)."""
    if not counts or not counts.get("equal"):
        return ""
    return (
        f" {counts['equal']} of the {counts['pairs']} pairs of posts with votes join comments with equal votes: the "
        "labels order them by the data's tie-break (e.g. the earlier answer first), which the vote NDCG leaves tied."
    )


def report_markdown(results: dict, info: dict, details: dict | None = None) -> str:
    """The report: the main table (with intervals when `details` has them), votes and CUP IT tables, then the
    sections of `details` (`evaluation_details`): model minus baseline, length-controlled metrics, per site."""
    details = details or {}
    intervals = details.get("intervals")
    ks = ("ndcg@1", "ndcg@2", "ndcg@3", "ndcg@4", "ndcg@5")
    votes = tuple(k.replace("ndcg@", "ndcg_votes@") for k in ks)
    # info's n_posts / n_comments: every post scored (unlabeled and one-comment ones too); results': those evaluated
    scored = f"{info['n_posts']} scored ({info['n_comments']} comments), " if "n_posts" in info else ""
    lines = [
        "# Comment ranking report",
        "",
        f"- model: `{info['model']}`",
        f"- dataset: `{info['dataset']}`" + (f", split `{info['split']}`" if info.get("split") else ""),
        f"- posts: {scored}{int(results['model']['n_posts'])} evaluated ({int(results['model']['n_comments'])} "
        "comments), the labeled ones with 2+ comments",
        f"- inputs truncated to {info['max_length']} tokens: {info['n_truncated']} of {info['n_comments']}",
        *([f"- scored in {info['dtype']}"] if info.get("dtype") else []),
        "",
        "NDCG@k with linear gain, relevance `n - 1 - rank` (and `votes - min` where votes exist); pair accuracy "
        f"over all label-ordered pairs; random averaged over {info.get('n_seeds', 20)} seeds; top-1 NDCG@5 counts "
        "only the best comment as relevant." + _equal_votes_note(details.get("equal_vote_pairs")),
    ]
    lines += [line for warning in info.get("warnings", []) for line in ("", f"**Warning:** {warning}")]
    if intervals:
        lines += ["", interval_note(details["bootstrap"])]
    lines += ["", markdown_table(results, (*ks, "pair_accuracy"), intervals)]
    if any(votes[0] in metrics for metrics in results.values()):
        lines += ["", "Relevance from votes:", "", markdown_table(results, votes, intervals)]
    lines += [
        "",
        "The original CUP IT solution's metrics: grouped NDCG@5 (NDCG@5 over each post's list, the same value as "
        "ndcg@5 above) and paired NDCG@2 (sklearn's NDCG@2 of each adjacent (chosen, rejected) pair, 0>1, 1>2, ...: "
        "an affine map of adjacent-pair accuracy).",
        "",
        markdown_table(results, ("grouped_ndcg@5", "paired_ndcg@2"), intervals),
    ]
    lines += _detail_sections(details)
    lines += ["", f"![NDCG@k]({PLOT_NAME})", ""]
    return "\n".join(lines)


def write_outputs(
    folder: str | os.PathLike, rows, rewards, results: dict | None, info: dict, details: dict | None = None
) -> list[str]:
    """predictions.jsonl and metrics.json always; report.md and the NDCG plot when there are labels. metrics.json
    holds `results` (the point values; None when no post is labeled), the sections of `details`
    (`evaluation_details`: intervals, differences, length_controlled, per_site, bootstrap) and `info` (the counts:
    posts and comments scored, skipped, duplicate texts, ...). Writes into `folder` (scripts/score.py passes the
    temporary folder of its `OutputDir`, so the set lands at once); returns the names written."""
    from commentrank.io_utils import atomic_write_text

    out = Path(folder)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in prediction_records(rows, rewards))
    atomic_write_text(out / "predictions.jsonl", lines)
    metrics = {"results": results, **(details or {}), **info}
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    written = ["predictions.jsonl", "metrics.json"]
    if results is not None:
        atomic_write_text(out / "report.md", report_markdown(results, info, details))
        plot_ndcg(results, out / PLOT_NAME, intervals=(details or {}).get("intervals"))
        written += ["report.md", PLOT_NAME]
    return written
