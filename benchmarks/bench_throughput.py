"""Training throughput of the listwise reward trainer: today's quickstart recipe against each throughput lever and
their combination, measured in the same run on the same data, with the validation NDCG of each.

Usage (one thread per run; the variants of a round run one after the other, baseline first, so that a busy machine
slows them alike):

    OMP_NUM_THREADS=1 python benchmarks/bench_throughput.py                        # shipped sample, every variant
    python benchmarks/bench_throughput.py --train_posts 400 --variants baseline sorted combined --seeds 42 1
    python benchmarks/bench_throughput.py --data ../shared/data/reddit/reddit_ranked.jsonl.gz --train_posts 1000

Each variant is `scripts/reward.py --config recipes/quickstart/reward.yaml` plus its flags (`VARIANTS`), in a fresh
process, on data_prep's views of `--data` (the recipe's random split: training posts from `train`, a seeded subset
of `--train_posts` of them when given; NDCG on every `validation` post; the test split is never read). Measured
inside the process (timers around the library's own functions, a forward pre-hook counting real and padded tokens
of the training forwards): tokenization (`prepare_listwise`), the length fit, `trainer.train()`, the NDCG
evaluation, and the whole run. Comments/s and tokens/s are training comments and real tokens over the training
time (wall clock, and the process's CPU time: with one thread per run the CPU time is the better measure on a
shared machine, where waiting for a core inflates the wall clock); the padded share is the padded cells the model was
given that hold no token. NDCG@5 on the validation posts has its bootstrap 95% interval over posts and the paired
interval of its difference to the baseline of the same seed. The table goes to stdout and to
`benchmarks/results/throughput.md` (`--output`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_file import write_generated  # noqa: E402

from commentrank.io_utils import atomic_write_text  # noqa: E402
from commentrank.outputs import remove_entries  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "stackexchange" / "se_ranked.jsonl.gz"
RECIPE = ROOT / "recipes" / "quickstart" / "reward.yaml"
BUDGET = 1280  # padded tokens per step: 1.9 posts per step on the shipped sample (the recipe: 2)
# Each variant: flags over the quickstart recipe (today's trainer: `baseline`)
SORTED_BUDGET = ["--length_sorted_forward", "true", "--batch_token_budget", str(BUDGET)]
VARIANTS = {
    "baseline": [],
    "sorted": SORTED_BUDGET[:2],
    "budget": SORTED_BUDGET[2:],
    "freeze-embeddings": ["--freeze_embeddings", "true"],
    "freeze-half": ["--freeze_embeddings", "true", "--freeze_fraction", "0.5"],
    "compile": ["--torch_compile", "true"],
    "combined": [*SORTED_BUDGET, "--freeze_embeddings", "true", "--freeze_fraction", "0.5"],  # 3 of 6 blocks frozen
    "combined-4of6": [*SORTED_BUDGET, "--freeze_embeddings", "true", "--freeze_fraction", "0.6"],
    "freeze-4of6": ["--freeze_embeddings", "true", "--freeze_fraction", "0.6"],  # freezing alone, as combined-4of6
    "sorted-budget": SORTED_BUDGET,
}
DEFAULT_VARIANTS = ("baseline", "sorted", "budget", "freeze-embeddings", "freeze-half", "combined")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SAMPLE), help="A CUP IT ranked file (prepared with the quickstart's "
                        "data recipe into --work).")  # fmt: skip
    parser.add_argument("--train_posts", type=int, default=None, help="Seeded subset of the train split's posts.")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)))
    parser.add_argument("--parallel", type=int, default=1, help="Runs at once (each of --threads threads), in the "
                        "order of the rounds: with 2, baseline runs beside the first lever.")  # fmt: skip
    parser.add_argument("--work", default=None, help="Folder for the prepared data (default: a temporary one).")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "throughput.md"))
    parser.add_argument("--from_results", action="store_true", help="Only write the table of the runs in --work.")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: run one variant, write JSON
    return parser.parse_args(argv)


def prepare(data: str, folder: Path) -> Path:
    """data_prep's views of `data` with the quickstart's data recipe (kept if there already)."""
    if not (folder / "summary.json").exists():
        subprocess.run([sys.executable, str(ROOT / "data_prep" / "prepare.py"), "--config",
                        str(ROOT / "recipes" / "quickstart" / "data.yaml"), "--inputs", data, "--output_dir",
                        str(folder)], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    return folder


class Timer:
    """Wraps `owner.name` so that every call adds its wall time to `self.seconds`."""

    def __init__(self, owner, name: str):
        self.seconds, original = 0.0, getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        setattr(owner, name, timed)


def run_child(spec: dict) -> dict:
    """One training run of `scripts/reward.py`, in this process, timed; returns its measurements."""
    sys.path.insert(0, str(ROOT / "scripts"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import reward  # scripts/reward.py
    from bench_listwise import ForwardCounter

    from commentrank.train import callbacks
    from commentrank.train.listwise import ListwiseRewardTrainer

    timers = {"tokenize": Timer(reward, "prepare_listwise"),
              "length_fit": Timer(ListwiseRewardTrainer, "fit_length_weight"),
              "eval": Timer(callbacks.RankingEvalCallback, "evaluate_posts")}  # fmt: skip
    scored = []
    ranking_metrics = callbacks.ranking_metrics
    callbacks.ranking_metrics = lambda posts, *a, **k: scored.append(posts) or ranking_metrics(posts, *a, **k)
    counter, train = {}, ListwiseRewardTrainer.train

    def counted_train(self, *args, **kwargs):
        counter["hook"] = ForwardCounter(self.model)
        start, cpu = time.perf_counter(), time.process_time()
        result = train(self, *args, **kwargs)
        counter["seconds"], counter["cpu"] = time.perf_counter() - start, time.process_time() - cpu
        counter["hook"].handle.remove()
        return result

    ListwiseRewardTrainer.train = counted_train
    start = time.perf_counter()
    trainer = reward.main(spec["argv"])
    total = time.perf_counter() - start
    hook = counter["hook"]
    posts = scored[-1]
    return {"total": total, "train": counter["seconds"], "train_cpu": counter["cpu"],
            **{k: t.seconds for k, t in timers.items()},
            "steps": trainer.state.global_step, "comments": hook.sequences, "tokens": hook.tokens,
            "cells": hook.cells, "posts": [{"ranks": p["ranks"], "scores": [float(s) for s in p["scores"]],
                                            "comments": p["comments"]} for p in posts]}  # fmt: skip


def run_variant(name: str, seed: int, data: Path, args, work: Path) -> dict:
    """`name` at `seed` in a fresh process (`--child`); its measurements."""
    out = work / f"{name}-{seed}"
    if (out / "result.json").exists():  # finished in an earlier call with this --work
        return json.loads((out / "result.json").read_text())
    # --overwrite_output: a run killed before its result.json trains again from scratch (never resumed or skipped)
    argv = ["--config", str(RECIPE), "--dataset_name", str(data), "--output_dir", str(out / "model"),
            "--seed", str(seed), "--overwrite_output", "true", *VARIANTS[name]]  # fmt: skip
    if args.train_posts:
        argv += ["--max_train_samples", str(args.train_posts)]
    spec = out / "spec.json"
    out.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps({"argv": argv, "result": str(out / "result.json")}))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}  # fmt: skip
    subprocess.run([sys.executable, __file__, "--child", str(spec)], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    result = json.loads((out / "result.json").read_text())
    remove_entries(out / "model")  # the weights are not needed (what reward.py wrote, nothing else)
    print(f"{name} seed {seed}: train {result['train']:.1f} s, total {result['total']:.1f} s", flush=True)
    return result


def cpu(run: dict) -> float:
    """The training run's CPU time (NaN in results written before it was measured)."""
    return run.get("train_cpu", float("nan"))


def summarize(runs: dict, names: list[str], seeds: list[int]) -> list[dict]:
    """Per variant: means over seeds of the rates and times, ratios to the baseline of the same seed, NDCG@5 of each
    seed with its interval, and the paired difference to the baseline."""
    from commentrank.intervals import bootstrap_interval, paired_difference_interval
    from commentrank.metrics import post_stats

    stats = {key: post_stats(run["posts"]) for key, run in runs.items()}
    rows = []
    for name in names:
        seeds_of = [s for s in seeds if (name, s) in runs and ("baseline", s) in runs]  # paired with the baseline
        if not seeds_of:
            continue
        mine = [runs[(name, s)] for s in seeds_of]

        def mean(f, mine=mine):
            return sum(f(r) for r in mine) / len(mine)

        ratio = sum(runs[("baseline", s)]["train"] / runs[(name, s)]["train"] for s in seeds_of) / len(seeds_of)
        cpu_ratio = sum(cpu(runs[("baseline", s)]) / cpu(runs[(name, s)]) for s in seeds_of) / len(seeds_of)
        ndcg = [bootstrap_interval(stats[(name, s)], "ndcg@5") for s in seeds_of]
        diff = [paired_difference_interval(stats[(name, s)], stats[("baseline", s)], "ndcg@5") for s in seeds_of]
        rows.append({"name": name, "seeds": seeds_of, "steps": mean(lambda r: r["steps"]),
                     "comments/s": mean(lambda r: r["comments"] / r["train"]),
                     "tokens/s": mean(lambda r: r["tokens"] / r["train"]),
                     "padded": mean(lambda r: 1 - r["tokens"] / r["cells"]), "train": mean(lambda r: r["train"]),
                     "tokenize": mean(lambda r: r["tokenize"]), "length_fit": mean(lambda r: r["length_fit"]),
                     "eval": mean(lambda r: r["eval"]), "total": mean(lambda r: r["total"]), "ratio": ratio,
                     "train_cpu": mean(cpu), "cpu_ratio": cpu_ratio,
                     "ndcg": ndcg, "diff": diff})  # fmt: skip
    return rows


def format_table(rows: list[dict]) -> str:
    header = ("| variant | flags over the recipe | seeds | steps | comments/s | tokens/s | padded | train s | "
              "vs baseline | train CPU s | vs baseline (CPU) | "
              "tokenize s | length fit s | eval s | run s | validation NDCG@5 [95%] | "
              "minus baseline [95%] |")  # fmt: skip
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        ndcg = " / ".join(iv.as_text() for iv in r["ndcg"])
        diff = " / ".join(iv.as_text(signed=True) for iv in r["diff"]) \
            if r["name"] != "baseline" else "-"  # fmt: skip
        flags = " ".join(VARIANTS[r["name"]]).replace("--", "") or "(today's trainer)"
        seeds = ", ".join(map(str, r["seeds"]))
        lines.append(f"| {r['name']} | {flags} | {seeds} | {r['steps']:.0f} | {r['comments/s']:.1f} | "
                     f"{r['tokens/s']:.0f} | "
                     f"{r['padded']:.1%} | {r['train']:.0f} | {r['ratio']:.2f}x | {r['train_cpu']:.0f} | "
                     f"{r['cpu_ratio']:.2f}x | "
                     f"{r['tokenize']:.1f} | "
                     f"{r['length_fit']:.2f} | {r['eval']:.1f} | {r['total']:.0f} | {ndcg} | {diff} |")  # fmt: skip
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.from_results:  # the table of finished runs (`--work` of an earlier run), without running anything
        runs = finished_runs(Path(args.work))
        args.seeds = sorted({seed for _, seed in runs})
        names = [n for n in VARIANTS if any(key[0] == n for key in runs)]
        return write_table(args, runs, summarize(runs, names, args.seeds))
    if args.child:
        spec = json.loads(Path(args.child).read_text())
        atomic_write_text(spec["result"], json.dumps(run_child(spec)))  # trusted by the next call: whole or absent
        return
    names = ["baseline", *[n for n in args.variants if n != "baseline"]]
    with tempfile.TemporaryDirectory(prefix="bench_throughput-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        data = prepare(args.data, work / "data")
        from concurrent.futures import ThreadPoolExecutor

        order = [(name, seed) for seed in args.seeds for name in names]  # interleaved: each round runs every variant
        with ThreadPoolExecutor(args.parallel) as pool:
            results = list(pool.map(lambda key: run_variant(*key, data, args, work), order))
        runs = dict(zip(order, results))
        if args.work:  # with the runs of earlier calls with this --work
            runs = {**finished_runs(work), **runs}
        names = [n for n in VARIANTS if any(key[0] == n for key in runs)]
        seeds = sorted({seed for _, seed in runs})
        rows = summarize(runs, names, seeds)
    write_table(args, runs, rows)


def finished_runs(work: Path) -> dict:
    """The measurements of the runs finished in `work`, by (variant, seed)."""
    runs = {tuple(f.parent.name.rsplit("-", 1)): json.loads(f.read_text()) for f in work.glob("*/result.json")}
    return {(name, int(seed)): run for (name, seed), run in runs.items()}


def write_table(args, runs: dict, rows: list[dict]) -> None:
    table = format_table(rows)
    import torch

    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    cpu_bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f" {f}" in flags]
    first = runs[("baseline", args.seeds[0])]
    note = (f"Measured {datetime.now(UTC):%Y-%m-%d} on {platform.processor() or platform.machine()} "
            f"({os.cpu_count()} cores, bf16 instructions: {', '.join(cpu_bf16) or 'none'}), "
            f"torch {torch.__version__}, "
            f"{args.threads} thread(s) per run, {args.parallel} run(s) at once, variants in rounds (seeds "
            f"{', '.join(map(str, sorted({s for _, s in runs})))}), data {Path(args.data).name}"
            f"{f', {args.train_posts} training posts' if args.train_posts else ''} ({first['comments']} training "
            f"comments), validation split {len(first['posts'])} posts.")  # fmt: skip
    text = f"{note}\n\n{table}\n"
    print(text)
    write_generated(args.output, Path(__file__).name, text, title="Listwise training throughput")


if __name__ == "__main__":
    main()
