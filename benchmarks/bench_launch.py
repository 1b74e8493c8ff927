"""Wall clock of one training epoch on this machine's cores, as a user launches it: today's trainer (one process using
every core's thread) against data-parallel processes of one thread each (`accelerate launch`), each with and without
the freezing lever of `bench_throughput.py`, and shorter inputs (`max_length` 96, 64, 48 tokens instead of 128, alone
and with freezing), on the same Reddit training posts, with the validation NDCG of each.

Usage (the machine otherwise idle: the runs go one after the other and the measure is the wall clock):

    python benchmarks/bench_launch.py                                  # 1,000 Reddit training posts, seed 0
    python benchmarks/bench_launch.py --size 2000 --seeds 0 1 --variants baseline 2proc 2proc-freeze-4of6
    python benchmarks/bench_launch.py --size 250 --max_steps 5 --eval_posts 20 --output /tmp/launch.md   # smoke
    python benchmarks/bench_launch.py --report_only        # the table of the finished runs, training nothing

Data: `bench_scaling.py`'s split of the Reddit data (beside the checkout, never in the project) and its training
subsets (the first `--size` posts of the seeded permutation: the same posts as the learning curve's run of that size
and seed). Each variant is `scripts/reward.py --config recipes/quickstart/reward.yaml` plus its flags (`VARIANTS`),
started by its launcher with its threads per process; the data-parallel runs keep the recipe's two posts per
optimizer step (one per process), so they take the same steps on the same posts. Measured: the trainer's
`train_runtime` (one epoch, wall clock) and the whole command's wall clock; NDCG@5 of the first `--eval_posts`
validation posts (`score.py`, bench_scaling's fixed order; the test communities are never read), its bootstrap 95%
interval and the paired interval of its difference to the baseline of the same seed. The table goes to stdout and to
`benchmarks/results/launch.md` (`--output`).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import RECIPE  # noqa: E402
from bench_scaling import (  # noqa: E402
    REDDIT,
    eval_labels,
    eval_order,
    load_splits,
    prediction_posts,
    save,
    training_subset,
)
from report_file import write_generated  # noqa: E402

from commentrank.io_utils import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CPU_2PROC = ROOT / "accelerate_configs" / "cpu_2proc.yaml"  # two processes of one thread each (gloo)
# port 0: accelerate picks a free port for each launch
TWO_PROCESSES = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC),
                 "--main_process_port", "0"]  # fmt: skip
FREEZE_EMBEDDINGS = ["--freeze_embeddings", "true"]  # the whole embeddings block
FREEZE = [*FREEZE_EMBEDDINGS, "--freeze_fraction", "0.6"]  # and 4 of MiniLM's 6 blocks, bench_throughput's


def short(max_length: int, min_comment_tokens: int) -> list[str]:
    """reward.py flags for inputs of `max_length` tokens, at least `min_comment_tokens` of them the comment's."""
    return ["--max_length", str(max_length), "--min_comment_tokens", str(min_comment_tokens)]


# Each variant: (processes, threads per process, reward.py flags over the recipe); `baseline` is today's trainer
VARIANTS = {
    "baseline": (1, 2, []),
    "2proc": (2, 1, ["--per_device_train_batch_size", "1"]),
    "freeze-4of6": (1, 2, FREEZE),
    "2proc-freeze-4of6": (2, 1, ["--per_device_train_batch_size", "1", *FREEZE]),
    # Shorter inputs (the recipe: 128 tokens, at least 64 of them the comment's): the comment's tail is cut, and the
    # title (mean 20 tokens) keeps what the comment leaves; the length term still reads the whole comment's characters
    "short-96": (1, 2, short(96, 64)),
    "short-64": (1, 2, short(64, 40)),
    "short-48": (1, 2, short(48, 28)),
    "short-64-freeze-embeddings": (1, 2, [*short(64, 40), *FREEZE_EMBEDDINGS]),
    "short-48-freeze-embeddings": (1, 2, [*short(48, 28), *FREEZE_EMBEDDINGS]),
    "short-64-freeze-2of6": (1, 2, [*short(64, 40), *FREEZE_EMBEDDINGS, "--freeze_fraction", "0.3"]),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1000", help="Reddit training posts (or all).")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--eval_posts", type=int, default=500)
    parser.add_argument("--max_steps", type=int, default=None, help="cap on training steps (a smoke run)")
    parser.add_argument("--reddit", default=str(REDDIT))
    parser.add_argument("--work_dir", default=str(ROOT / "outputs" / "bench_launch"))
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "launch.md"))
    parser.add_argument("--report_only", action="store_true", help="the table of the finished runs: train nothing")
    return parser.parse_args(argv)


def command(name: str, data: Path, out: Path, seed: int, max_steps: int | None) -> tuple[list[str], dict]:
    processes, threads, flags = VARIANTS[name]
    launcher = TWO_PROCESSES if processes == 2 else [sys.executable]
    steps = ["--max_steps", str(max_steps)] if max_steps else []
    # --overwrite_output: a run without its result.json (killed before it was written) trains again from scratch,
    # never resumed or skipped as finished, so every time measured is a whole training
    cmd = [*launcher, str(ROOT / "scripts" / "reward.py"), "--config", str(RECIPE), "--dataset_name", str(data),
           "--output_dir", str(out / "reward"), "--ndcg_eval_posts", "0", "--seed", str(seed), *steps,
           "--overwrite_output", "true", *flags]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}  # fmt: skip
    return cmd, env


def run_dir(args, name: str, seed: int) -> Path:
    return Path(args.work_dir) / f"{name}-seed{seed}{f'-steps{args.max_steps}' if args.max_steps else ''}"


def run_variant(name: str, seed: int, data: Path, evals: Path, ranks: dict, args) -> dict:
    """Train `name` at `seed` (kept when finished in an earlier call), score validation (`ranks`: the labels by
    post id); its measurements."""
    out = run_dir(args, name, seed)
    result = out / "result.json"
    if result.exists():
        return json.loads(result.read_text())
    cmd, env = command(name, data, out, seed, args.max_steps)
    load = os.getloadavg()[0]  # the 1-minute load average as it starts: near 0 on an idle machine
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} seed {seed} failed:\n{proc.stderr[-3000:]}")
    wall = time.perf_counter() - start
    scores = out / "scores-validation"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "score.py"), "--model", str(out / "reward"), "--dataset",
                    str(evals), "--split", "validation", "--output_dir", str(scores), "--no_progress", "true",
                    "--max_posts", str(args.eval_posts)], env={**env, "OMP_NUM_THREADS": "2"}, check=True,
                   capture_output=True)  # fmt: skip
    trained = json.loads((out / "reward" / "train_results.json").read_text())
    measured = {"train": trained["train_runtime"], "wall": wall, "steps": trained.get("global_step"), "load": load,
                "posts": prediction_posts(scores, ranks)}  # fmt: skip
    atomic_write_text(result, json.dumps(measured))  # trusted by the next call: whole or absent
    print(f"{name} seed {seed}: train {measured['train']:.1f} s, whole command {wall:.1f} s", flush=True)
    return measured


HEADER = ("| variant | processes x threads | flags over the recipe | seeds | train s | whole command s | comments/s | "
          "vs baseline | validation NDCG@5 [95%] | minus baseline [95%] |")  # fmt: skip


def table(runs: dict, names: list[str], seeds: list[int], comments: dict) -> str:
    """One row per variant: means over the seeds it shares with the baseline; NDCG@5 and its paired difference to
    the baseline per seed."""
    from commentrank.intervals import bootstrap_interval, paired_difference_interval
    from commentrank.metrics import post_stats

    stats = {key: post_stats(run["posts"]) for key, run in runs.items()}
    lines = [HEADER, "|---|---|---|---|" + "---:|" * 4 + "---|---|"]
    for name in names:
        seeds_of = [s for s in seeds if (name, s) in runs and ("baseline", s) in runs]
        if not seeds_of:
            continue
        mine, base = [runs[(name, s)] for s in seeds_of], [runs[("baseline", s)] for s in seeds_of]
        n = len(seeds_of)
        train, wall = sum(r["train"] for r in mine) / n, sum(r["wall"] for r in mine) / n
        rate = sum(comments[s] / r["train"] for s, r in zip(seeds_of, mine)) / n
        ratio = sum(b["train"] / r["train"] for b, r in zip(base, mine)) / n
        ivs = [bootstrap_interval(stats[(name, s)], "ndcg@5") for s in seeds_of]
        ndcg = " / ".join(iv.as_text() for iv in ivs)
        diffs = [paired_difference_interval(stats[(name, s)], stats[("baseline", s)], "ndcg@5") for s in seeds_of]
        diff = " / ".join(iv.as_text(signed=True) for iv in diffs)
        processes, threads, flags = VARIANTS[name]
        flags = " ".join(flags).replace("--", "") or "(today's trainer)"
        seeds_text, diff = ", ".join(map(str, seeds_of)), "-" if name == "baseline" else diff
        lines.append(f"| {name} | {processes} x {threads} | {flags} | {seeds_text} | {train:.0f} | {wall:.0f} | "
                     f"{rate:.1f} | {ratio:.2f}x | {ndcg} | {diff} |")  # fmt: skip
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    reddit = Path(args.reddit)
    if not reddit.is_file():
        raise SystemExit(f"the Reddit data is absent: {reddit} not found (not in the project; give --reddit FILE)")
    by_source, _, config = load_splits(reddit)
    work = Path(args.work_dir)
    evals = work / "eval-reddit"
    save(evals, {"validation": eval_order(by_source["reddit"]["validation"])}, config)
    ranks = eval_labels(evals, "validation")
    cap = yaml.safe_load(RECIPE.read_text()).get("max_comments_per_post")  # the comments trained per post
    comments, runs = {}, {}
    names = ["baseline", *[n for n in args.variants if n != "baseline"]]
    for seed in args.seeds:
        train = training_subset(by_source["reddit"]["train"], args.size, seed)
        comments[seed] = sum(min(len(p.comments), cap or len(p.comments)) for p in train)
        data = work / f"data-{args.size}-seed{seed}"
        save(data, {"train": train}, config)
        for name in names:  # baseline first in each seed's round
            if args.report_only and not (run_dir(args, name, seed) / "result.json").exists():
                print(f"{name} seed {seed}: not run, left out (--report_only)")
                continue
            runs[(name, seed)] = run_variant(name, seed, data, evals, ranks, args)
    import torch

    loads = [run["load"] for run in runs.values() if "load" in run]
    load = f"{min(loads):.2f}-{max(loads):.2f}" if loads else "not recorded"
    note = (f"Reported {datetime.now(UTC):%Y-%m-%d} on {platform.machine()} ({os.cpu_count()} cores; load average as "
            f"each run started: {load}), torch {torch.__version__}; {args.size} Reddit training posts "
            f"({', '.join(f'seed {s}: {n} comments' for s, n in comments.items())}), one epoch, variants one after "
            f"the other; NDCG@5 on the first {args.eval_posts} validation posts."
            + (f" Smoke run: {args.max_steps} steps." if args.max_steps else ""))  # fmt: skip
    text = f"{note}\n\n{table(runs, names, args.seeds, comments)}\n"
    print(text)
    title = "One epoch's wall clock by launcher (`benchmarks/bench_launch.py`)"
    write_generated(args.output, Path(__file__).name, text, title=title)


if __name__ == "__main__":
    main()
