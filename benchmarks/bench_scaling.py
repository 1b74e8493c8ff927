"""The learning curve on Reddit: the quickstart reward recipe trained on 250, 500, 1k, 2k, 4k and all training posts of
the Reddit data, scored on subreddits that training never saw; also across sources (the Reddit-trained model on the
Stack Exchange test sites, the Stack Exchange-trained one on the Reddit test subreddits) and both sources together.

Usage:

    OMP_NUM_THREADS=1 python benchmarks/bench_scaling.py --sizes 250 500 1000 --seeds 0          # the small sizes
    OMP_NUM_THREADS=1 python benchmarks/bench_scaling.py --sizes 250 --seeds 0 --max_steps 5 --eval_posts 20  # smoke
    python benchmarks/bench_scaling.py --sizes all --experiments curve se both --threads 16        # a bigger machine
    python benchmarks/bench_scaling.py --sizes 1000 --seeds 0 --length_feature none  # a variant: reward.py flags
    python benchmarks/bench_scaling.py --experiments both --max_train_posts_per_source 1000  # balanced sources
    python benchmarks/bench_scaling.py --sizes 250 500 1000 2000 all --seeds 0 1 2 --small all --experiments curve \
        se both --eval_posts 500 --report_only   # the report of the runs finished so far, training nothing

Data: `../shared/data/reddit/reddit_ranked.jsonl.gz` (beside the checkout; not openly licensed, so never in the
project: the script stops with a clear message when it is absent) and the shipped Stack Exchange sample, read with
one data_prep run (`split_by: site`, the held-out sites named below, `vote_ties: equal`: comments with equal votes
share a rank in training, never ordered). The split is fixed here, before any result was seen; the test communities
are only ever scored to report, never to choose anything (settings are chosen on `VALIDATION`):

- test: AskCulinary (982 posts) + AskSocialScience (561): one hands-on hobby community and one academic one, the two
  kinds that training also holds (learnprogramming, AskElectronics; AskStatistics), 1,543 posts, 22% of the data;
- validation: techsupport (984) + AskHistorians (109): again one practical and one academic community, 1,093 posts;
- train: relationship_advice, learnprogramming, AskMen, AskElectronics, AskStatistics, AskMusic: 4,223 posts.

The Stack Exchange sites keep `benchmarks/bench_quality.py`'s split (`TEST_SITES`, `VALIDATION_SITES`).

Each training size `N` is the first `N` posts of a seeded permutation of the Reddit training posts (per seed: the
sizes are nested, and a seed changes both the sample and the training), trained with `scripts/reward.py --config
recipes/quickstart/reward.yaml --seed S` (one epoch) and scored by `scripts/score.py` on each evaluation split
(bootstrap 95% intervals over posts, paired intervals of the model minus longest-first). `--eval_posts` scores the
first N posts of each evaluation split in a fixed seeded order (the same posts for every model). Results: the table
in `benchmarks/results/scaling.md` (`--output`) and the plot next to it (`scaling.png`). A variant's or a smoke run's
report goes to `scaling<its flags>.md` in `--work_dir` instead, with its runs paired against the recipe's.
"""

import argparse
import functools
import json
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import COLUMNS, RECIPE, SAMPLE, cell, done, run  # noqa: E402
from bench_quality import TEST_SITES as SE_TEST  # noqa: E402
from bench_quality import VALIDATION_SITES as SE_VALIDATION  # noqa: E402
from report_file import save_figure, write_generated  # noqa: E402

from commentrank.io_utils import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REDDIT = ROOT.parent / "shared" / "data" / "reddit" / "reddit_ranked.jsonl.gz"
R = "reddit.com/r/"
TEST = (f"{R}AskCulinary", f"{R}AskSocialScience")
VALIDATION = (f"{R}techsupport", f"{R}AskHistorians")
SIZES = (250, 500, 1000, 2000, 4000, "all")
SEEDS = (0, 1, 2)
SMALL = 1000  # sizes up to this one run every seed; larger ones the first seed only
EXPERIMENTS = ("curve", "se", "both")  # Reddit sizes; Stack Exchange only; all training posts of both sources
EVAL_SETS = {"reddit": ("validation", "test"), "se": ("validation", "test")}
SCORE_COLUMNS = ("ndcg@1", "ndcg@5", "pair_accuracy", "length_spearman", "shorter_better_pair_accuracy")
assert set(SCORE_COLUMNS) <= set(COLUMNS)


def prep_config(reddit: Path, vote_ties: str = "equal", **overrides):
    from commentrank.configs import PrepArguments

    return PrepArguments(
        inputs=[str(reddit), str(SAMPLE)], split_by="site", validation_sites=[*VALIDATION, *SE_VALIDATION],
        test_sites=[*TEST, *SE_TEST], vote_ties=vote_ties, skip_invalid=True, views=["listwise"], **overrides,
    )  # fmt: skip


def load_splits(reddit: Path, vote_ties: str = "equal", cap: int | None = None):
    """data_prep's posts of both sources split by the fixed sites: ({source: {split: posts}}, summary, config);
    `cap`: data_prep's `max_train_posts_per_source` (its seeded sample of each source's training posts)."""
    from commentrank.data import prepare as prep
    from commentrank.data.validation import PrepSummary

    config, summary = prep_config(reddit, vote_ties, max_train_posts_per_source=cap), PrepSummary()
    splits = prep.select_splits(prep.load_posts(config, summary), config, summary)
    by_source = {
        source: {name: [p for p in posts if p.meta.get(prep.INPUT_KEY) == path] for name, posts in splits.items()}
        for source, path in (("reddit", str(reddit)), ("se", str(SAMPLE)))
    }
    return by_source, summary, config


def training_subset(posts: list, size, seed: int) -> list:
    """The first `size` posts ("all": every one) of a permutation seeded by `seed`: nested across sizes."""
    order = sorted(posts, key=lambda p: p.post_id)
    random.Random(seed).shuffle(order)
    return order if size == "all" else order[: int(size)]


def eval_order(posts: list, seed: int = 0) -> list:
    """The evaluation posts in a fixed seeded order, so that `--eval_posts N` (score.py's first N) is a sample."""
    order = sorted(posts, key=lambda p: p.post_id)
    random.Random(seed).shuffle(order)
    return order


def runs(sizes, seeds, experiments, small: int | str = SMALL) -> list[tuple[str, object, int]]:
    """(experiment, size, seed) of every training run: every seed up to `small` posts ("all": at every size), the
    first seed above."""
    out = []
    if "curve" in experiments:
        for size in sizes:
            big = small != "all" and (size == "all" or int(size) > int(small))
            out += [("reddit", size, seed) for seed in (seeds[:1] if big else seeds)]
    out += [(name, "all", seeds[0]) for name in ("se", "both") if name in experiments]
    return out


def save(folder: Path, splits: dict, config) -> None:
    from commentrank.data import prepare as prep
    from commentrank.data.validation import PrepSummary

    if not done(folder, "data_prep"):  # kept if there already, whole
        summary = PrepSummary()
        prep.write_views(folder, prep.to_dataset_dicts(prep.build_views(splits, config, summary)),
                         prep.record_files(config, summary))  # fmt: skip


def ranker_metrics(metrics_json: dict, ranker: str) -> dict:
    """A ranker's metrics, the length-controlled ones included."""
    return {**metrics_json["results"][ranker], **metrics_json.get("length_controlled", {}).get(ranker, {})}


def row_cells(metrics_json: dict, ranker: str) -> list[str]:
    intervals = metrics_json.get("intervals", {})
    return [cell(ranker_metrics(metrics_json, ranker), intervals.get(ranker), key) for key in SCORE_COLUMNS]


def difference(metrics_json: dict) -> str:
    diff = metrics_json.get("differences", {}).get("longest_first", {}).get("ndcg@5")
    return f"{diff['point']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]" if diff else "-"


def report_table(scored: list[dict], source: str, split: str) -> str:
    rows = [s for s in scored if s["eval"] == (source, split)]
    if not rows:
        return ""
    header = ["trained on", "posts", "seed", *SCORE_COLUMNS, "NDCG@5 minus longest-first", "train (s)"]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|---:|" + "---:|" * (len(header) - 3)]
    for s in rows:
        cells = row_cells(s["metrics"], "model")
        lines.append(f"| {s['experiment']} | {s['n_train']} | {s['seed']} | " + " | ".join(cells)
                     + f" | {difference(s['metrics'])} | {s['seconds'] or 0:.0f} |")  # fmt: skip
    for ranker in ("random", "longest_first"):
        lines.append(f"| {ranker} | - | - | " + " | ".join(row_cells(rows[0]["metrics"], ranker)) + " | - | - |")
    n_posts = rows[0]["metrics"].get("n_posts") or rows[0]["metrics"].get("results", {}).get("model", {}).get("posts")
    return f"**{source} {split}** ({n_posts or '?'} posts)\n\n" + "\n".join(lines)


@functools.cache
def eval_labels(folder: Path, split: str) -> dict:
    """The labelled ranks of an evaluation split saved by `save` (`folder`), by post id; read once per run."""
    import datasets

    return {row["post_id"]: row["ranks"] for row in datasets.load_from_disk(str(folder / "listwise"))[split]}


def prediction_posts(scores: Path, ranks: dict) -> list[dict]:
    """A `score.py` output folder's posts as `post_stats` takes them: the labels (`ranks`, by post id; its
    predictions.jsonl holds the predicted ranks), the rewards and the comment texts."""
    posts = [json.loads(line) for line in (scores / "predictions.jsonl").read_text().splitlines()]
    return [{"post_id": p["post_id"], "ranks": ranks[p["post_id"]], "scores": [c["reward"] for c in p["comments"]],
             "comments": [c["text"] for c in p["comments"]]} for p in posts]  # fmt: skip


def against_recipe_table(scored: list[dict], work: Path) -> str:
    """A variant's runs (reward.py flags over the recipe) against the recipe's run of the same size and seed, where
    that one is trained and scored: NDCG@5 of each and the paired 95% interval of the difference, on the same posts
    (labels from the evaluation data in `work`)."""
    from commentrank.intervals import paired_difference_interval
    from commentrank.metrics import post_stats

    lines = ["| trained on | posts | seed | evaluation | NDCG@5 | the recipe's | minus the recipe's (paired 95%) | "
             "train s, variant / recipe |", "|---|---:|---:|---|---:|---:|---|---|"]  # fmt: skip
    for s in scored:
        recipe = s.get("recipe")
        if recipe is None or not (recipe / "predictions.jsonl").exists():
            continue
        source, split = s["eval"]
        ranks = eval_labels(work / f"eval-{source}", split)
        mine, theirs = prediction_posts(s["scores"], ranks), prediction_posts(recipe, ranks)
        if [p["post_id"] for p in mine] != [p["post_id"] for p in theirs]:
            raise SystemExit(f"{s['scores']} and {recipe} scored different posts: not comparable")
        a, b = post_stats(mine), post_stats(theirs)
        diff = paired_difference_interval(a, b, "ndcg@5")
        seconds = recipe.parent / "train_seconds.txt"
        recipe_seconds = f"{float(seconds.read_text()):.0f}" if seconds.exists() else "?"
        lines.append(f"| {s['experiment']} | {s['n_train']} | {s['seed']} | {source} {split} | "
                     f"{a.value('ndcg@5'):.3f} | {b.value('ndcg@5'):.3f} | {diff.as_text(signed=True)} | "
                     f"{s['seconds'] or 0:.0f} / {recipe_seconds} |")  # fmt: skip
    return "\n".join(lines) if len(lines) > 2 else ""


def beyond_length_table(scored: list[dict], work: Path) -> str:
    """What each model learnt beyond length: its reward without its length term (the scored `length_weight` of
    `commentrank_config.json` times `log1p(characters)` taken off; `length_feature: odin` with `odin_weight: 0` trains
    the same and scores this way) against longest-first and against the reward with the term, on the same posts
    (paired 95% intervals), with the pair accuracy and shorter-better pair accuracy it reaches. Models without a
    length term are left out."""
    from commentrank.configs import EncoderSettings
    from commentrank.intervals import bootstrap_interval, paired_difference_interval
    from commentrank.length import add_length_term
    from commentrank.metrics import baseline_post_stats, post_stats

    lines = ["| trained on | posts | seed | evaluation | length weight | NDCG@5 with / without the term | "
             "without minus longest-first (paired 95%) | without minus with (paired 95%) | pair accuracy without | "
             "shorter-better without |", "|---|---:|---:|---|---:|---|---|---|---|---|"]  # fmt: skip
    for s in scored:
        settings = EncoderSettings.saved_with(s["scores"].parent / "reward")
        weight = settings.length_weight if settings is not None else 0.0
        if not weight or not (s["scores"] / "predictions.jsonl").exists():
            continue
        posts = prediction_posts(s["scores"], eval_labels(work / f"eval-{s['eval'][0]}", s["eval"][1]))
        alone = [dict(p, scores=add_length_term(p["scores"], p["comments"], -weight)) for p in posts]
        with_term, without = post_stats(posts, (5,)), post_stats(alone, (5,))
        longest = baseline_post_stats(posts, ks=(5,))["longest_first"]
        lines.append(f"| {s['experiment']} | {s['n_train']} | {s['seed']} | {' '.join(s['eval'])} | {weight:.3f} | "
                     f"{with_term.value('ndcg@5'):.3f} / {without.value('ndcg@5'):.3f} | "
                     f"{paired_difference_interval(without, longest, 'ndcg@5').as_text(signed=True)} | "
                     f"{paired_difference_interval(without, with_term, 'ndcg@5').as_text(signed=True)} | "
                     f"{bootstrap_interval(without, 'pair_accuracy').as_text()} | "
                     f"{bootstrap_interval(without, 'shorter_better_pair_accuracy').as_text()} |")  # fmt: skip
    return "\n".join(lines) if len(lines) > 2 else ""


def slope_table(scored: list[dict]) -> str:
    """The Reddit curve's mean over seeds at each size, the least-squares slope per doubling of the training posts (a
    fit against log2(posts) of the means) and the largest spread between seeds at one size (max - min)."""
    import numpy as np

    keys = ("ndcg@5", "pair_accuracy", "shorter_better_pair_accuracy")
    sizes = sorted({s["n_train"] for s in scored if s["experiment"] == "reddit"})
    if len(sizes) < 2:
        return ""
    lines = ["| evaluation | metric | " + " | ".join(f"{n} posts" for n in sizes)
             + " | per doubling | seeds' spread |",
             "|---|---|" + "---:|" * (len(sizes) + 2)]  # fmt: skip
    for source, split in (("reddit", "validation"), ("reddit", "test"), ("se", "test")):
        rows = [s for s in scored if s["experiment"] == "reddit" and s["eval"] == (source, split)]
        for key in keys:
            by_size = {
                n: [ranker_metrics(s["metrics"], "model")[key] for s in rows if s["n_train"] == n] for n in sizes
            }
            if not all(by_size.values()):
                continue
            means = [float(np.mean(by_size[n])) for n in sizes]
            slope = np.polyfit(np.log2(sizes), means, 1)[0]
            spread = max(max(v) - min(v) for v in by_size.values())
            lines.append(f"| {source} {split} | {key} | " + " | ".join(f"{m:.3f}" for m in means)
                         + f" | {slope:+.4f} | {spread:.3f} |")  # fmt: skip
    return "\n".join(lines)


def plot(scored: list[dict], report: Path) -> None:
    """NDCG@5 and pair accuracy of the Reddit curve against training posts (log x), 95% interval bars, per split: the
    plot of `report` (`save_figure`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, ("ndcg@5", "pair_accuracy")):
        for split, style in (("validation", "o-"), ("test", "s--")):
            rows = sorted((s for s in scored if s["experiment"] == "reddit" and s["eval"] == ("reddit", split)),
                          key=lambda s: (s["n_train"], s["seed"]))  # fmt: skip
            if not rows:
                continue
            x = [s["n_train"] * (1 + 0.04 * s["seed"]) for s in rows]  # seeds side by side
            y = [s["metrics"]["results"]["model"][key] for s in rows]
            ci = [s["metrics"].get("intervals", {}).get("model", {}).get(key) or (v, v) for s, v in zip(rows, y)]
            bars = ax.errorbar(x, y, yerr=[[v - lo for v, (lo, _) in zip(y, ci)], [hi - v for v, (_, hi) in
                               zip(y, ci)]], fmt=style[0], capsize=3, label=f"model, {split} (each seed)")  # fmt: skip
            sizes = sorted({s["n_train"] for s in rows})
            means = [sum(v for s, v in zip(rows, y) if s["n_train"] == n) / sum(s["n_train"] == n for s in rows)
                     for n in sizes]  # fmt: skip
            ax.plot(sizes, means, style[1:], color=bars[0].get_color(), label=f"mean over seeds, {split}")
            base = rows[0]["metrics"]["results"]["longest_first"][key]
            ax.axhline(base, linestyle=":", color="grey" if split == "test" else "black",
                       label=f"longest-first, {split}")  # fmt: skip
        ax.set_xscale("log")
        sizes = sorted({s["n_train"] for s in scored if s["experiment"] == "reddit"})
        ax.set_xticks(sizes, [f"{n:,}" for n in sizes], minor=False)  # the sizes, not 3x10^2 ...
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("Reddit training posts")
        ax.set_ylabel(key)
        ax.legend(fontsize=7)
    fig.suptitle("Quickstart recipe (MiniLM, ListMLE + length term) on held-out subreddits")
    fig.tight_layout()
    save_figure(fig, report, dpi=120)


def report_path(output: str | None, work: Path, tag: str) -> Path:
    """`--output`, else the curve's report `benchmarks/results/scaling.md` for the recipe's runs, and for a variant or
    a smoke run (`tag`) `scaling<tag>.md` in the work folder: such a run never replaces the curve's report."""
    if output:
        return Path(output)
    return work / f"scaling{tag}.md" if tag else ROOT / "benchmarks" / "results" / "scaling.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=[str(s) for s in SIZES], help="training posts, or all")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--experiments", nargs="+", default=["curve"], choices=EXPERIMENTS)
    parser.add_argument("--eval", nargs="+", default=["reddit", "se"], choices=sorted(EVAL_SETS),
                        help="evaluation sources (their validation and test splits)")  # fmt: skip
    parser.add_argument("--eval_posts", type=int, default=None, help="score the first N posts of each split")
    parser.add_argument("--max_steps", type=int, default=None, help="cap on training steps (a smoke run)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)))
    parser.add_argument("--reddit", default=str(REDDIT))
    parser.add_argument("--work_dir", default=str(ROOT / "outputs" / "bench_scaling"))
    parser.add_argument("--output", default=None, help="the report (default: see report_path)")
    parser.add_argument("--vote_ties", default="equal", help="data_prep's vote_ties for the training posts")
    parser.add_argument("--small", default=SMALL, help="sizes up to this one run every seed (all: every size)")
    parser.add_argument("--report_only", action="store_true", help="the report of the finished runs: train nothing")
    parser.add_argument(
        "--max_train_posts_per_source", type=int, default=None,
        help="data_prep's cap on each source's training posts (a variant of --experiments both)",
    )  # fmt: skip
    args, extra = parser.parse_known_args()  # any other flag goes to every reward.py run (a variant: its name says)
    cap = args.max_train_posts_per_source
    if cap is not None and (cap < 1 or args.experiments != ["both"]):
        parser.error("--max_train_posts_per_source: a positive number of posts, with --experiments both only")
    reddit = Path(args.reddit)
    if not reddit.is_file():
        raise SystemExit(
            f"the Reddit data is absent: {reddit} not found. It is not part of the project (not openly licensed); "
            "this benchmark reads it from ../shared/data/reddit/ beside the checkout (or give --reddit FILE)."
        )
    work = Path(args.work_dir)
    by_source, summary, config = load_splits(reddit, args.vote_ties, cap)
    smoke = f"-steps{args.max_steps}" if args.max_steps else ""
    tag = smoke + ("" if args.vote_ties == "equal" else f"-ties-{args.vote_ties}")
    tag += "" if cap is None else f"-cap{cap}"
    tag += "".join(f"-{flag.lstrip('-')}" for flag in extra)
    for source in args.eval:
        save(work / f"eval-{source}", {k: eval_order(by_source[source][k]) for k in EVAL_SETS[source]}, config)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1"}  # fmt: skip
    scored = []
    for experiment, size, seed in runs(args.sizes, args.seeds, args.experiments, args.small):
        if experiment == "reddit":
            train = training_subset(by_source["reddit"]["train"], size, seed)
        else:
            sources = ["se"] if experiment == "se" else ["reddit", "se"]
            train = [p for s in sources for p in by_source[s]["train"]]
        name = f"{experiment}-{size}-seed{seed}{tag}"
        out = work / name
        if args.report_only and not done(out / "reward", "reward_model"):
            print(f"{name}: not trained, left out (--report_only)", flush=True)
            continue
        save(out / "data", {"train": train}, config)
        seconds = None
        if not done(out / "reward", "reward_model"):
            flags = ["--max_steps", str(args.max_steps)] if args.max_steps else []
            seconds = run([sys.executable, str(ROOT / "scripts" / "reward.py"), "--config", str(RECIPE),
                           "--dataset_name", str(out / "data"), "--output_dir", str(out / "reward"),
                           "--ndcg_eval_posts", "0", "--seed", str(seed), *flags, *extra], env)  # fmt: skip
            atomic_write_text(out / "train_seconds.txt", f"{seconds:.1f}\n")
        elif (out / "train_seconds.txt").exists():
            seconds = float((out / "train_seconds.txt").read_text())
        for source in args.eval:
            for split in EVAL_SETS[source]:
                scores = out / f"scores-{source}-{split}{'' if args.eval_posts is None else f'-{args.eval_posts}'}"
                if not done(scores, "scores"):
                    limit = [] if args.eval_posts is None else ["--max_posts", str(args.eval_posts)]
                    run([sys.executable, str(ROOT / "scripts" / "score.py"), "--model", str(out / "reward"),
                         "--dataset", str(work / f"eval-{source}"), "--split", split, "--output_dir", str(scores),
                         "--no_progress", "true", *limit], env)  # fmt: skip
                metrics = json.loads((scores / "metrics.json").read_text())
                variant = tag != smoke  # its recipe run: the same name without the flags
                recipe = work / f"{experiment}-{size}-seed{seed}{smoke}" / scores.name if variant else None
                scored.append({"experiment": experiment + tag, "n_train": len(train), "seed": seed, "seconds": seconds,
                               "eval": (source, split), "metrics": metrics, "scores": scores,
                               "recipe": recipe})  # fmt: skip
        print(f"{name}: {len(train)} posts, {seconds or 0:.0f} s of training", flush=True)
    output = report_path(args.output, work, tag)
    sites = summary.sites
    report = [
        "# Learning curve on Reddit (`benchmarks/bench_scaling.py`)",
        "",
        f"Training subreddits: {', '.join(s for s in sites.get('train', {}) if s.startswith(R))}; validation: "
        f"{', '.join(VALIDATION)}; test: {', '.join(TEST)} (fixed before any result). Stack Exchange: the sites of "
        "`bench_quality.py`. The quickstart recipe (MiniLM, ListMLE with the fitted length term, 128 tokens, one "
        f"epoch), `vote_ties: {args.vote_ties}` in training, {args.threads} thread(s). 95% bootstrap intervals over "
        "posts; the difference to longest-first is paired. "
        + (
            f"Each evaluation split: its first {args.eval_posts} posts in a fixed seeded order. "
            if args.eval_posts
            else ""
        )  # fmt: skip
        + (f"Smoke run: {args.max_steps} training steps. " if args.max_steps else ""),
        "",
        f"Posts per split and site (after `vote_ties: equal`): `{json.dumps(sites)}`",
        "",
    ]
    for source in args.eval:
        for split in EVAL_SETS[source]:
            report += [report_table(scored, source, split), ""]
    table = against_recipe_table(scored, work)
    if table:
        report += ["**Against the recipe as it is** (the same size, seed and evaluation posts; NDCG@5, paired)", "",
                   table, ""]  # fmt: skip
    table = beyond_length_table(scored, work)
    if table:
        report += ["**Beyond length**: each model's reward without its length term, as `length_feature: odin` with "
                   "`odin_weight: 0` scores it (the same training; paired against longest-first and against the "
                   "reward with the term, on the same posts)", "", table, ""]  # fmt: skip
    table = slope_table(scored)
    if table:
        report += ["**The slope** (the Reddit curve: mean over the seeds at each size; per doubling: least-squares "
                   "slope of the means against log2(training posts); seeds' spread: the largest max - min at one "
                   "size)", "", table, ""]  # fmt: skip
    text = "\n".join(report)
    print(text)
    output.parent.mkdir(parents=True, exist_ok=True)
    written = write_generated(output, Path(__file__).name, text)
    if scored:
        plot(scored, written)


if __name__ == "__main__":
    main()
