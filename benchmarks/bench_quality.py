"""Leave-sites-out ranking quality: reward-model variants trained with the project's recipes, evaluated on Stack
Exchange sites that training never saw, against random and longest-first, every number with its 95% interval.

Usage:

    OMP_NUM_THREADS=2 python benchmarks/bench_quality.py                         # every MiniLM variant (~80 min)
    OMP_NUM_THREADS=2 python benchmarks/bench_quality.py --variants quickstart learned-length
    python benchmarks/bench_quality.py --variants quickstart mpnet-quickstart --threads 16  # a bigger machine
    python benchmarks/bench_quality.py --variants quickstart-two-answer --dumps ../shared/data/stackexchange/raw

The sites of the shipped data (`data/stackexchange/se_ranked.jsonl.gz`) are split once, here, by hand, before any
result was seen: `TEST_SITES` are only ever scored to report (never to choose anything), `VALIDATION_SITES` choose
the settings, the rest train. Each variant is `scripts/reward.py --config recipes/quickstart/reward.yaml` plus its
overrides (one epoch, the recipe's own settings otherwise), scored by `scripts/score.py` on the validation and test
sites (bootstrap intervals over posts, paired intervals of model minus longest-first, seeded). The `two-answer`
variants add the training sites' two-answer questions, read from their raw dumps (`--dumps`), to the train split.
The table, with the time of each run, goes to stdout and to `benchmarks/results/quality.md` (`--output`).
"""

import argparse
import copy
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_file import write_generated  # noqa: E402

from commentrank.io_utils import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "stackexchange" / "se_ranked.jsonl.gz"
RECIPE = ROOT / "recipes" / "quickstart" / "reward.yaml"
DUMPS = ROOT.parent / "shared" / "data" / "stackexchange" / "raw"  # the sample's raw Posts.xml, one folder per site
TEST_SITES = ("matheducators.stackexchange.com", "apple.meta.stackexchange.com")  # 233 + 142 posts
VALIDATION_SITES = ("cardano.stackexchange.com", "french.meta.stackexchange.com", "video.meta.stackexchange.com")
# Each variant: overrides of the quickstart recipe (a list of `--key value` flags), pinned to the settings it was
# measured with when the recipe has moved on since. The first five: the recipe before it took the length term (192
# tokens, one post per step), BASE; the "learned-length" ones: before the length term started at its fitted weight
# and stayed there (a weight trained from 0 at 1e-2), LEARNED.
BASE = ["--max_length", "192", "--per_device_train_batch_size", "1", "--length_feature", "none"]
LEARNED = ["--length_init", "zero", "--length_learning_rate", "1e-2"]
SEEDS = {"": [], "-seed-1": ["--seed", "1"], "-seed-2": ["--seed", "2"]}  # run-to-run noise: head init, data order
VARIANTS = {
    "listmle": BASE,
    "lambdaloss": [*BASE, "--loss_type", "lambdaloss"],
    "listmle-length": [*BASE, *LEARNED, "--length_feature", "additive"],
    "lambdaloss-length": [*BASE, *LEARNED, "--loss_type", "lambdaloss", "--length_feature", "additive"],
    "listmle-odin": [*BASE, *LEARNED, "--length_feature", "odin"],
    # the recipe as it is (ListMLE, 128 tokens, 2 posts per step, the length term at its fitted weight), three seeds
    **{f"quickstart{seed}": flags for seed, flags in SEEDS.items()},
    "mpnet-quickstart": ["--model_name_or_path", "bundled:mpnet"],  # the same on all-mpnet-base-v2
    "mpnet-quickstart-2-epochs": ["--model_name_or_path", "bundled:mpnet", "--num_train_epochs", "2"],
    # the length weight trained from 0 (the recipe before), and from its fitted weight, three seeds each
    **{f"learned-length{seed}": [*LEARNED, *flags] for seed, flags in SEEDS.items()},
    **{
        f"fitted-then-learned-length{seed}": [*LEARNED, "--length_init", "fit", *flags]
        for seed, flags in SEEDS.items()
    },
    "mpnet-learned-length": ["--model_name_or_path", "bundled:mpnet", *LEARNED],
    # longer views of long comments and more epochs, measured with the learned length weight
    "learned-length-head-tail": [*LEARNED, "--truncation_side", "head_tail"],
    "learned-length-256": [*LEARNED, "--max_length", "256"],
    "learned-length-256-head-tail": [*LEARNED, "--max_length", "256", "--truncation_side", "head_tail"],
    "learned-length-3-epochs": [*LEARNED, "--num_train_epochs", "3"],
    # more training data: the quickstart recipe on the train split plus the training sites' two-answer questions
    **{f"quickstart-two-answer{seed}": flags for seed, flags in SEEDS.items()},
    # the question's body in the prompt ("with context"; the recipe keeps 64 of the 128 tokens for the comment)
    **{f"quickstart-context{seed}": flags for seed, flags in SEEDS.items()},
    "mpnet-quickstart-context": ["--model_name_or_path", "bundled:mpnet"],  # collapsed (see README); another seed:
    "mpnet-quickstart-context-seed-1": ["--model_name_or_path", "bundled:mpnet", "--seed", "1"],
}
TWO_ANSWER = "two-answer"  # variants with this in their name train on `data-two-answer` (needs --dumps)
CONTEXT = "context"  # variants with this in their name train and are scored on `data-context`
CONTEXT_TEMPLATE = "{title}\n\n{body}"  # data_prep's "with context" prompt
DEFAULT_VARIANTS = tuple(name for name in VARIANTS if not name.startswith("mpnet") and TWO_ANSWER not in name)
COLUMNS = ("ndcg@1", "ndcg@5", "ndcg_votes@5", "pair_accuracy", "length_spearman", "shorter_better_pair_accuracy")


def data_folder(work: Path, variant: str, split: str) -> Path:
    """The data folder `variant` trains on (`split` train) or is scored on."""
    if CONTEXT in variant:
        return work / f"data-{CONTEXT}"
    return work / (f"data-{TWO_ANSWER}" if TWO_ANSWER in variant and split == "train" else "data")


def prepare(folder: Path, dumps: Path | None, context: bool) -> dict:
    """data_prep's views of the shipped data, split by the fixed sites (same code as data_prep, own split); with
    `dumps`, also `data-two-answer`: the same splits, the train split with the two-answer questions added; with
    `context`, `data-context`: the same posts and splits with the question's body in the prompt."""
    from commentrank.configs import PrepArguments
    from commentrank.data import prepare as prep
    from commentrank.data.validation import PrepSummary

    config = PrepArguments(inputs=[str(SAMPLE)], skip_invalid=True, output_dir=str(folder))
    summary = PrepSummary()
    posts = prep.load_posts(config, summary)
    site = {p.post_id: p.meta.get("site") for p in posts}
    splits = {
        "train": [p for p in posts if site[p.post_id] not in TEST_SITES + VALIDATION_SITES],
        "validation": [p for p in posts if site[p.post_id] in VALIDATION_SITES],
        "test": [p for p in posts if site[p.post_id] in TEST_SITES],
    }
    sizes = {name: len(split) for name, split in splits.items()}
    before_views = copy.deepcopy(summary)  # build_views adds its counts: each folder's summary counts its own views
    save(folder, splits, config, summary)
    if context:
        with_body = dataclasses.replace(config, prompt_template=CONTEXT_TEMPLATE)
        save(folder.parent / f"data-{CONTEXT}", splits, with_body, copy.deepcopy(before_views))
    if dumps is not None:
        extra = two_answer_posts(dumps, {p.post_id for p in posts}, before_views)
        sizes[TWO_ANSWER] = len(extra)
        two_answer = {**splits, "train": splits["train"] + extra}
        save(folder.parent / f"data-{TWO_ANSWER}", two_answer, config, before_views)
    return sizes


def two_answer_posts(dumps: Path, known: set[str], summary) -> list:
    """The training sites' questions that the shipped sample lacks (it holds every question with 3 or more answers),
    read from their `Posts.xml` with data_prep's Stack Exchange reader and validator, counted in `summary`: the
    two-answer ones whose answers have different votes (equal votes rank by date alone, a label the text cannot see,
    so those are dropped as `two_answer_vote_tie`)."""
    from commentrank.data.records import RankedPost
    from commentrank.data.stackexchange import read_posts_xml
    from commentrank.data.validation import Problem, collect_posts

    def candidates():
        for xml in sorted(dumps.glob("*/Posts.xml")):
            if xml.parent.name in TEST_SITES + VALIDATION_SITES:
                continue
            for location, post in read_posts_xml(xml):
                if isinstance(post, RankedPost) and post.post_id not in known and len(post.comments) == 2:
                    if post.comments[0].votes == post.comments[1].votes:
                        post = Problem("two_answer_vote_tie", "votes", "both answers have the same votes", 2)
                    yield location, post

    summary.sources.append(str(dumps))
    extra = list(collect_posts(candidates(), summary, skip_invalid=True))
    if not extra:
        raise SystemExit(f"no two-answer questions found under {dumps} (--dumps: a folder of <site>/Posts.xml)")
    ties = summary.posts_dropped["two_answer_vote_tie"]
    print(f"{len(extra)} two-answer questions from {dumps} ({ties} with tied votes left out)", flush=True)
    return extra


WHOLE = {"data_prep": "summary.json", "reward_model": "model.safetensors", "scores": "metrics.json"}


def done(folder: Path, kind: str) -> bool:
    """Whether an earlier call left `folder` whole, to be reused: a finished `kind` output of commentrank's holding
    its main file (`WHOLE`; a training run's marker also saying it finished). A folder that is merely there may be
    what a kill left half-written, and is made again."""
    from commentrank.outputs import finished_output, read_marker

    if not finished_output(folder, kind, WHOLE[kind]):
        return False
    return kind != "reward_model" or read_marker(folder).get("finished") is True


def save(folder: Path, splits: dict, config, summary) -> None:
    """data_prep's views of `splits` saved to `folder` (kept if there already, whole)."""
    from commentrank.data import prepare as prep

    if not done(folder, "data_prep"):
        views = prep.to_dataset_dicts(prep.build_views(splits, config, summary))
        prep.write_views(folder, views, prep.record_files(config, summary))


def run(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])}... failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def collapsed(metrics_json: dict) -> bool:
    """Whether the scoring run found the model's rewards collapsed: metrics.json's `collapse_warning` (one written
    before that key: the collapse warning among its `warnings`, which also hold the data's warnings)."""
    if "collapse_warning" in metrics_json:
        return bool(metrics_json["collapse_warning"])
    return any("most likely collapsed" in w for w in metrics_json.get("warnings", []))


def cell(metrics: dict, intervals: dict, key: str) -> str:
    value = metrics.get(key)
    if value is None:
        return "-"
    low, high = (intervals or {}).get(key, (None, None))
    return f"{value:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else "")


def table(rows: list[tuple[str, dict, float | None]], split: str) -> str:
    """One line per variant (and the baselines, from the first variant's scores) on `split`; a variant whose scoring
    run found its rewards collapsed (metrics.json's `collapse_warning`) is labelled so."""
    from commentrank.intervals import difference_text

    header = ["ranker", *COLUMNS, "NDCG@5 minus longest-first", "train (s)"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name, metrics_json, seconds in rows:
        results, intervals = metrics_json["results"], metrics_json.get("intervals", {})
        for ranker in ["model"] if name != "baselines" else ["random", "longest_first"]:
            metrics = {**results[ranker], **metrics_json.get("length_controlled", {}).get(ranker, {})}
            diff = metrics_json.get("differences", {}).get("longest_first", {}).get("ndcg@5")
            delta = difference_text(diff["point"], diff["low"], diff["high"]) if diff and ranker == "model" else "-"
            label = name if ranker == "model" else ranker
            label += " (collapsed: see its report)" if ranker == "model" and collapsed(metrics_json) else ""
            cells = [cell(metrics, intervals.get(ranker), key) for key in COLUMNS]
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {delta} | {seconds:.0f} |" if seconds else
                         f"| {label} | " + " | ".join(cells) + f" | {delta} | - |")  # fmt: skip
    return f"**{split}**\n\n" + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=sorted(VARIANTS))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    parser.add_argument("--work_dir", default=str(ROOT / "outputs" / "bench_quality"))
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "quality.md"))
    parser.add_argument("--dumps", default=str(DUMPS), help="<site>/Posts.xml folders (the two-answer variants)")
    args = parser.parse_args()
    work = Path(args.work_dir)
    needs_dumps = any(TWO_ANSWER in name for name in args.variants)
    if needs_dumps and not Path(args.dumps).is_dir():
        raise SystemExit(f"the {TWO_ANSWER} variants read the raw dumps, and {args.dumps} is not a folder (--dumps)")
    context = any(CONTEXT in name for name in args.variants)
    sizes = prepare(work / "data", Path(args.dumps) if needs_dumps else None, context)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1"}  # fmt: skip
    scored = {"validation": [], "test": []}
    for variant in args.variants:
        out = work / variant
        seconds = None
        if not done(out / "reward", "reward_model"):
            data = data_folder(work, variant, "train")
            seconds = run([sys.executable, str(ROOT / "scripts" / "reward.py"), "--config", str(RECIPE),
                           "--dataset_name", str(data), "--output_dir", str(out / "reward"),
                           "--ndcg_eval_posts", "0", *VARIANTS[variant]], env)  # fmt: skip
            atomic_write_text(out / "train_seconds.txt", f"{seconds:.1f}\n")
        elif (out / "train_seconds.txt").exists():
            seconds = float((out / "train_seconds.txt").read_text())
        for split in scored:
            scores = out / f"scores_{split}"
            if not done(scores, "scores"):
                run([sys.executable, str(ROOT / "scripts" / "score.py"), "--model", str(out / "reward"),
                     "--dataset", str(data_folder(work, variant, split)), "--split", split, "--output_dir",
                     str(scores), "--no_progress", "true"], env)  # fmt: skip
            scored[split].append((variant, json.loads((scores / "metrics.json").read_text()), seconds))
        print(f"{variant}: done ({seconds or 0:.0f} s of training)", flush=True)
    report = [
        "# Leave-sites-out quality benchmark (`benchmarks/bench_quality.py`)",
        "",
        f"Posts: train {sizes['train']}, validation {sizes['validation']} ({', '.join(VALIDATION_SITES)}), test "
        f"{sizes['test']} ({', '.join(TEST_SITES)}); the {TWO_ANSWER} variants add {sizes.get(TWO_ANSWER, '-')} "
        "two-answer questions of the training sites to train. MiniLM unless the variant says otherwise, the "
        f"quickstart recipe with each variant's overrides (`VARIANTS`; one epoch, bf16 autocast), {args.threads} "
        "threads. 95% bootstrap intervals over posts; the difference to longest-first is paired (same resamples).",
        "",
    ]
    for split in ("validation", "test"):
        rows = scored[split]
        report += [table([*rows, ("baselines", rows[0][1], None)], split), ""]
    text = "\n".join(report)
    print(text)
    write_generated(args.output, Path(__file__).name, text)


if __name__ == "__main__":
    main()
