"""data_prep on one huge thread: time and peak memory per stage, to show they grow linearly with the comments.

Usage:

    python benchmarks/bench_memory.py --comments 20000            # the target: under 1 GB and 30 s in all
    python benchmarks/bench_memory.py --comments 5000 20000       # several sizes in one table

One post with N ranked comments (each a distinct ~25-word text, with timestamps) is written as CUP IT JSONL, then
data_prep's own stages run on it, each timed: read + validate (`load_posts`), split, the views (`build_views` with
the default `adjacent` pairs, listwise and sft; the pair counts of every strategy), `to_dataset_dicts`, save. Peak
memory is the process's resident set (`ru_maxrss`) after each stage, measured in a fresh process per size, and the
Python heap peak of each stage (`tracemalloc`; Arrow buffers are outside it). Before the fix, counting the `all`
pairs built all N(N-1)/2 of them: 10,000 comments took 93 s and 15 GB, 20,000 ran out of memory.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path


def write_thread(path: Path, n: int) -> None:
    words = ["hop", "malt", "yeast", "water", "barrel", "citrus", "pine", "bitter", "sweet", "foam", "lager", "ale"]
    comments = [
        {"text": f"answer {i}: " + " ".join(words[(i * 7 + j) % len(words)] for j in range(24)), "score": i,
         "created": f"2020-01-01T00:{(i * 37) % 60:02d}:{i % 60:02d}.{i:06d}"}
        for i in range(n)
    ]  # fmt: skip
    post = {"id": "huge", "text": "Which beer for a hot day?", "post_body": "Details.", "comments": comments}
    path.write_text(json.dumps(post) + "\n", encoding="utf-8")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(n: int) -> list[dict]:
    """The stages of one data_prep run on an N-comment thread (run in a fresh process), in a temporary folder removed
    at the end."""
    with tempfile.TemporaryDirectory(prefix="bench_memory-") as folder:
        return measure_in(n, Path(folder))


def measure_in(n: int, folder: Path) -> list[dict]:
    from commentrank.configs import PrepArguments
    from commentrank.data import prepare
    from commentrank.data.validation import PrepSummary

    raw = folder / "huge.jsonl"
    write_thread(raw, n)
    config = PrepArguments(inputs=[str(raw)], output_dir=str(folder / "out"), test_size=0, validation_size=0,
                           visibility_filter=True)  # fmt: skip
    summary, rows, state = PrepSummary(), [], {}

    def stage(name, fn):
        tracemalloc.start()
        start = time.perf_counter()
        state[name] = fn()
        seconds = time.perf_counter() - start
        heap = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        rows.append({"stage": name, "seconds": seconds, "heap_mb": heap, "rss_mb": rss_mb()})

    stage("read + validate", lambda: prepare.load_posts(config, summary))
    stage("split", lambda: prepare.select_splits(state["read + validate"], config, summary))
    stage("views + pair counts", lambda: prepare.build_views(state["split"], config, summary))
    stage("datasets", lambda: prepare.to_dataset_dicts(state["views + pair counts"]))

    def save():
        out = folder / "saved"
        for view, dataset_dict in state["datasets"].items():
            dataset_dict.save_to_disk(str(out / view))

    stage("save", save)
    rows.append({"stage": "pairs counted (all)", "seconds": None, "heap_mb": None,
                 "rss_mb": summary.pairs.get("all", {}).get("candidates")})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comments", type=int, nargs="+", default=[20000])
    parser.add_argument("--_child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child is not None:
        print(json.dumps(measure(args._child)))
        return
    print(f"data_prep on one post, CPU {os.cpu_count()} cores; RSS = peak resident memory of the process so far\n")
    print("| comments | stage | seconds | Python heap peak (MB) | process RSS peak (MB) |")
    print("|---:|---|---:|---:|---:|")
    for n in args.comments:
        child = subprocess.run([sys.executable, __file__, "--_child", str(n)], capture_output=True, text=True)
        if child.returncode != 0:
            print(f"| {n:,} | failed | | | |\n{child.stderr[-2000:]}")
            continue
        rows = json.loads(child.stdout.strip().splitlines()[-1])
        total = sum(r["seconds"] for r in rows if r["seconds"] is not None)
        for r in rows[:-1]:
            print(f"| {n:,} | {r['stage']} | {r['seconds']:.2f} | {r['heap_mb']:.0f} | {r['rss_mb']:.0f} |")
        print(f"| {n:,} | **all stages** | **{total:.2f}** | | **{max(r['rss_mb'] for r in rows[:-1]):.0f}** |")
        print(f"| {n:,} | (all-pairs candidates counted, none built: {rows[-1]['rss_mb']:,}) | | | |")


if __name__ == "__main__":
    main()
