"""data_prep on a whole Stack Exchange dump: time and peak memory of today's reader and the bounded one.

Usage:

    OMP_NUM_THREADS=1 python benchmarks/bench_data_prep.py --sizes_gb 0.25 1 2.5 --num_proc 2
    python benchmarks/bench_data_prep.py --sizes_gb 0.05   # a quick check

A seeded generator writes a `Posts.xml` of the real schema (the attributes of the dumps' rows, a BOM, one `<row/>` a
line, HTML bodies with paragraphs, lists, code and links, ~4.5 answers per question, answers coming after their
question, some of them far later) under a temporary folder, deleted afterwards. Each size runs the full data_prep
(read, validate, split, the three views, saved) in a fresh process: today's reader, i.e. data_prep as it was when
issue 22 was filed (`--baseline_rev`, the commit before that work: its `src/` taken from git and run in memory, on
one core), and the bounded one of this checkout (`run_prepare`, `--num_proc`), one after the other; peak memory is the
largest resident set of the process and its workers (`wait4`'s `ru_maxrss`), speed the dump's MB per wall-clock second.
The scaling exponents are log-log fits of time and memory against size. Today's reader needs ~6x the dump in memory: it
runs at a size only when `MemAvailable` is over 8x the dump (else its point is skipped and extrapolated by its fit).
Writes benchmarks/results/data_prep.md and data_prep.png.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from html import escape
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_file import save_figure, write_generated  # noqa: E402

WORDS = (
    "the a of to and in is it that for on with as this be are was by not or from at have can but an which you all "
    "beer hop malt yeast water barrel lager ale stout porter ipa bitter sweet sour citrus pine foam glass bottle keg "
    "temperature ferment brew mash boil wort gravity carbonation flavor aroma color style recipe grain wheat barley"
).split()


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(6, 22))]
    return " ".join(words).capitalize() + rng.choice([".", ".", "?", "!"])


def _html(rng: random.Random) -> str:
    blocks = []
    for _ in range(rng.randint(1, 5)):
        kind = rng.random()
        if kind < 0.65:
            text = " ".join(_sentence(rng) for _ in range(rng.randint(1, 5)))
            if rng.random() < 0.3:
                text += f' See <a href="https://example.com/{rng.randint(1, 99999)}">this link</a>.'
            blocks.append(f"<p>{text}</p>")
        elif kind < 0.85:
            blocks.append("<ul>" + "".join(f"<li>{_sentence(rng)}</li>" for _ in range(rng.randint(2, 4))) + "</ul>")
        else:
            code = "\n".join(f"    x{i} = brew({i}, '{rng.choice(WORDS)}')" for i in range(rng.randint(2, 6)))
            blocks.append(f"<pre><code>{escape(code)}\n</code></pre>")
    return "\n\n".join(blocks) + "\n"


def _attr(value: str) -> str:
    return escape(value, quote=True).replace("\n", "&#xA;")


def generate_dump(path: Path, target_bytes: int, seed: int = 0) -> dict:
    """A Posts.xml of about `target_bytes`: questions and answers with the real dumps' attributes, seeded."""
    rng = random.Random(seed)
    pool = [_attr(_html(rng)) for _ in range(4000)]  # bodies drawn from a pool: fast, and realistic HTML
    titles = [_attr(_sentence(rng).rstrip(".?!") + "?") for _ in range(4000)]
    next_id, written, questions, answers = 1, 0, 0, 0
    waiting: list[tuple[int, int]] = []  # (question id, answers still to come)
    with path.open("w", encoding="utf-8", newline="\r\n") as f:
        f.write('\ufeff<?xml version="1.0" encoding="utf-8"?>\n<posts>\n')
        while written < target_bytes:
            day = 1 + next_id // 5000
            date = (
                f"20{10 + day // 365 % 14:02d}-{1 + day // 30 % 12:02d}-{1 + day % 28:02d}"
                f"T{next_id % 24:02d}:00:00.000"
            )
            if not waiting or rng.random() < 0.2:
                n = rng.choice([0, 1, 2, 3, 4, 5, 6, 8, 12])
                line = (
                    f'  <row Id="{next_id}" PostTypeId="1" AcceptedAnswerId="{next_id + 1}" CreationDate="{date}" '
                    f'Score="{rng.randint(-3, 200)}" ViewCount="{rng.randint(10, 99999)}" Body="{rng.choice(pool)}" '
                    f'OwnerUserId="{rng.randint(1, 99999)}" LastActivityDate="{date}" Title="{rng.choice(titles)}" '
                    f'Tags="&lt;beer&gt;&lt;{rng.choice(WORDS)}&gt;" AnswerCount="{n}" '
                    f'CommentCount="{rng.randint(0, 9)}" '
                    f'ContentLicense="CC BY-SA 4.0" />\n'
                )
                waiting.append((next_id, n))
                questions += 1
            else:
                k = len(waiting) - 1 if rng.random() < 0.8 else rng.randrange(len(waiting))  # some answers come late
                parent, left = waiting[k]
                waiting[k] = (parent, left - 1)
                if left <= 1:
                    waiting.pop(k)
                line = (
                    f'  <row Id="{next_id}" PostTypeId="2" ParentId="{parent}" CreationDate="{date}" '
                    f'Score="{rng.randint(-5, 300)}" Body="{rng.choice(pool)}" OwnerUserId="{rng.randint(1, 99999)}" '
                    f'LastActivityDate="{date}" CommentCount="{rng.randint(0, 9)}" ContentLicense="CC BY-SA 4.0" />\n'
                )
                answers += 1
            if len(waiting) > 5000:
                waiting.pop(0)
            f.write(line)
            written += len(line)
            next_id += 1
        f.write("</posts>\n")
    return {"questions": questions, "answers": answers}


BASELINE_REV = "0a85630^"  # main before issue 22's work: data_prep in memory, on one core


def child(path: str, out: str, mode: str, num_proc: int) -> None:
    """One data_prep run (in a fresh process): `old` today's reader (the baseline revision's `src` comes first on
    PYTHONPATH), `new` the bounded one."""
    from commentrank.configs import PrepArguments
    from commentrank.data.prepare import run_prepare

    options = {} if mode == "old" else {"num_proc": num_proc}
    config = PrepArguments(inputs=[path], output_dir=out, skip_invalid=True, **options)
    start = time.perf_counter()
    summary = run_prepare(config)
    print(json.dumps({"seconds": time.perf_counter() - start, "posts_kept": summary.posts_kept}))


def baseline_src(rev: str, folder: Path) -> Path:
    """The `src/` of revision `rev` of this repository, extracted under `folder`."""
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(root), "archive", rev, "src"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "src"


def run_child(path: Path, out: Path, mode: str, num_proc: int, src: Path | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    if src is not None:
        env["PYTHONPATH"] = str(src)
    cmd = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--dump",
        str(path),
        "--out",
        str(out),
        "--num_proc",
        str(num_proc),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    output = proc.stdout.read().decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{mode} failed ({proc.returncode})")
    result = json.loads(output.strip().splitlines()[-1])
    result["peak_mb"] = usage.ru_maxrss / 1024
    return result


def output_digests(folder: Path) -> dict[str, str]:
    """A hash of each file data_prep wrote but prep_config.json (it names the folder), without the fingerprint of
    each state.json (a hash of the table in memory, of the shards on disk), as tests/test_data_prep_scale.py compares
    them."""
    import hashlib

    digests = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_dir() or name in ("prep_config.json", ".commentrank-output.json"):
            continue
        digest = hashlib.sha256()
        if path.name == "state.json":
            state = json.loads(path.read_bytes())
            state.pop("_fingerprint", None)
            digest.update(json.dumps(state).encode())
        else:
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 24), b""):
                    digest.update(block)
        digests[name] = digest.hexdigest()
    return digests


def compare_outputs(old: Path, new: Path) -> str:
    """Whether the bounded run wrote today's files: the views byte for byte, and summary.json's counts (it may hold
    keys added since, which are named)."""
    old_files, new_files = output_digests(old), output_digests(new)
    differ = sorted(k for k in set(old_files) | set(new_files) if old_files.get(k) != new_files.get(k))
    added = []
    if differ == ["summary.json"]:
        before, after = (json.loads((folder / "summary.json").read_text()) for folder in (old, new))
        if {key: after.get(key) for key in before} == before:
            differ, added = [], sorted(set(after) - set(before))
    if differ:
        return f"no: {', '.join(differ[:3])}{' ...' if len(differ) > 3 else ''}"
    return "yes" + (f" (summary.json adds {', '.join(added)})" if added else "")


def mem_available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024**2
    return 0.0


def fit(xs, ys) -> tuple[float, float]:
    """(exponent, log-intercept) of y = c * x**k by least squares on the logs."""
    import numpy as np

    k, c = np.polyfit(np.log(xs), np.log(ys), 1)
    return float(k), float(c)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes_gb", type=float, nargs="+", default=[0.25, 1.0, 2.5])
    parser.add_argument("--num_proc", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline_rev", default=BASELINE_REV, help="the revision whose data_prep is today's reader")
    parser.add_argument("--results", default=str(Path(__file__).parent / "results" / "data_prep"))
    parser.add_argument("--child", choices=["old", "new"])
    parser.add_argument("--dump")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        return child(args.dump, args.out, args.child, args.num_proc)
    with tempfile.TemporaryDirectory(prefix="bench_data_prep-baseline-") as base:  # removed however the run ends
        measure_sizes(args, baseline_src(args.baseline_rev, Path(base)))


def measure_sizes(args, src: Path) -> None:
    """Each dump size: generated, run by the baseline (`src`) and by today's data_prep, written after each size."""
    rows = []
    for size in args.sizes_gb:
        with tempfile.TemporaryDirectory(prefix="bench_data_prep-") as tmp:
            dump = Path(tmp) / "bench.stackexchange.com" / "Posts.xml"
            dump.parent.mkdir()
            start = time.perf_counter()
            counts = generate_dump(dump, int(size * 1e9), args.seed)
            mb = dump.stat().st_size / 1e6
            print(f"{size} GB: generated {mb:.0f} MB in {time.perf_counter() - start:.0f} s, {counts}", flush=True)
            row = {"size_mb": mb, **counts}
            available = mem_available_gb()
            if available > 8 * mb / 1e3:
                row["old"] = run_child(dump, Path(tmp) / "old", "old", 1, src)
            else:
                row["old_skipped"] = f"{available:.1f} GB available, under 8x the dump"
            print(row, flush=True)
            row["new"] = run_child(dump, Path(tmp) / "new", "new", args.num_proc)
            if "old" in row:
                row["identical"] = compare_outputs(Path(tmp) / "old", Path(tmp) / "new")
            print(row, flush=True)
            rows.append(row)
        write_results(rows, args)  # after each size: a long run leaves its finished sizes


def write_results(rows: list[dict], args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    fits = {}
    for mode in ("old", "new"):
        pts = [(r["size_mb"], r[mode]["seconds"], r[mode]["peak_mb"]) for r in rows if mode in r]
        if len(pts) >= 2:
            xs = [p[0] for p in pts]
            fits[mode] = {"time": fit(xs, [p[1] for p in pts]), "memory": fit(xs, [p[2] for p in pts])}
    lines = [
        "# data_prep on a whole Stack Exchange dump",
        "",
        f"`python benchmarks/bench_data_prep.py --sizes_gb {' '.join(map(str, args.sizes_gb))} --num_proc "
        f"{args.num_proc}` (seed {args.seed}): generated `Posts.xml` dumps of the real schema, the full data_prep "
        "(read, validate, split, three views, saved) in a fresh process each; peak = the largest resident set of the "
        f"process and its workers. Today's = data_prep at `{args.baseline_rev}` (before issue 22: in memory, "
        f"one core); bounded = "
        f"`run_prepare` with `--num_proc {args.num_proc}` (Parquet shards, DuckDB group and sort, views staged on "
        "disk); the two paths ran one after the other at each size.",
        "",
        "| Posts.xml | questions | answers | today's: time | MB/s | peak memory | bounded: time | MB/s | peak memory "
        "| speed-up | same files |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        new = r["new"]
        if "old" in r:
            old = r["old"]
            old_cells = f"{old['seconds']:.0f} s | {r['size_mb'] / old['seconds']:.1f} | {old['peak_mb']:.0f} MB"
            ratio = f"{old['seconds'] / new['seconds']:.2f}x"
        else:
            extra = ""
            if "old" in fits:
                (kt, ct), (km, cm) = fits["old"]["time"], fits["old"]["memory"]
                t, m = np.exp(ct) * r["size_mb"] ** kt, np.exp(cm) * r["size_mb"] ** km
                extra = f" (extrapolated by the fit: ~{t:.0f} s, ~{m / 1e3:.1f} GB)"
            old_cells = f"skipped: {r['old_skipped']}{extra} | | "
            ratio = ""
        lines.append(
            f"| {r['size_mb']:.0f} MB | {r['questions']:,} | {r['answers']:,} | {old_cells} | {new['seconds']:.0f} s "
            f"| {r['size_mb'] / new['seconds']:.1f} | {new['peak_mb']:.0f} MB | {ratio} | {r.get('identical', '')} |"
        )
    lines += ["", "Scaling exponents (log-log fit against the dump size; 1 = linear, 0 = flat):", ""]
    for mode, name in (("old", "today's"), ("new", "bounded")):
        if mode in fits:
            lines.append(
                f"- {name}: time ~ size^{fits[mode]['time'][0]:.2f}, memory ~ size^{fits[mode]['memory'][0]:.2f}"
            )
    written = write_generated(f"{results}.md", Path(__file__).name, "\n".join(lines))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for mode, name in (("old", f"today's ({args.baseline_rev})"), ("new", f"bounded, num_proc {args.num_proc}")):
        pts = [(r["size_mb"], r[mode]["seconds"], r[mode]["peak_mb"]) for r in rows if mode in r]
        if pts:
            axes[0].loglog([p[0] for p in pts], [p[1] for p in pts], "o-", label=name)
            axes[1].loglog([p[0] for p in pts], [p[2] for p in pts], "o-", label=name)
    for ax, ylabel in zip(axes, ("wall time (s)", "peak memory (MB)")):
        ax.set_xlabel("Posts.xml (MB)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, written)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
