"""Scoring throughput and parity: the default path, exported ONNX models and the seed's batching, in one run.

Usage:

    OMP_NUM_THREADS=2 python benchmarks/bench_scoring.py --threads 2  # after `make demo` (its model and test split)
    OMP_NUM_THREADS=2 python benchmarks/bench_scoring.py --model bundled:minilm \
        --dataset data/stackexchange/se_ranked.jsonl.gz

One model scores the same comments (the first `--n_comments` of `--dataset`, at the model's `max_length`) six ways:

(a) the seed's batching: tokenization, batches in input order padded to 512 tokens, float32;
(b) the float32 bare forward: only `model(**batch)` over length-sorted, dynamically padded batches, pre-built, under
    `no_grad` (the baseline: 1.00);
(c) float32 `score_posts` (what scripts/score.py does with `--dtype float32`): tokenization, length-sorted batches;
(d) the default path, `--dtype auto`: bfloat16 where the CPU has AMX or AVX512-BF16 (else float32), head in float32;
(e) ONNX float32 on onnxruntime (scripts/export.py), through the same `score_posts`;
(f) ONNX int8 (dynamic quantization).

Every path runs on the same threads (tokenizers too) after a warm-up; the fastest of `--repeats` runs counts. The
table gives comments/s, the ratio to (b), and, against the float32 rewards of (c), NDCG@5 and its difference and the
Spearman correlation of the rewards. The CPU's bfloat16 flags are printed with it.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenization on the stated threads only

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from commentrank.bundled_models import resolve_model_path  # noqa: E402
from commentrank.data.loading import load_scoring_rows  # noqa: E402
from commentrank.length import add_length_term  # noqa: E402
from commentrank.metrics import ranking_metrics  # noqa: E402
from commentrank.modeling import cpu_bf16_flags  # noqa: E402
from commentrank.score.exported import INT8_FILE, ONNX_FILE, OnnxRewardModel, export_onnx, quantize_int8  # noqa: E402
from commentrank.score.inference import length_sorted_batches, pad_batch, score_ids  # noqa: E402
from commentrank.score.report import labeled_posts  # noqa: E402
from commentrank.score.scorer import Scorer, load_scorer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_file import write_generated  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL, DEMO_DATA = ROOT / "outputs" / "quickstart" / "reward", ROOT / "outputs" / "quickstart" / "data"
SEED_PAD_TO = 512  # the seed (and the original solution) padded every batch to 512 tokens


def take_comments(rows: list[dict], n: int) -> list[dict]:
    """The first posts, the last one cut so that there are at most `n` comments."""
    out, total = [], 0
    for row in rows:
        if total >= n:
            break
        comments = row["comments"][: n - total]
        ranks = row["ranks"][: len(comments)] if row.get("ranks") else None
        out.append({**row, "comments": comments, "ranks": ranks, "votes": None})
        total += len(comments)
    return out


def shown(path: str) -> str:
    """A path inside the repository as relative to it (the results file names no one's home folder)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return path


def timed(fn, repeats: int):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEMO_MODEL) if DEMO_MODEL.is_dir() else "bundled:minilm")
    parser.add_argument("--dataset", default=str(DEMO_DATA) if DEMO_DATA.is_dir() else None)
    parser.add_argument("--split", default="test")
    parser.add_argument("--n_comments", type=int, default=600)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)))
    parser.add_argument("--repeats", type=int, default=3, help="Runs per path; the fastest counts.")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "scoring.md"),
                        help="The results file: the tables go between its markers (report_file.py).")  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dataset = args.dataset or str(ROOT / "data" / "stackexchange" / "se_ranked.jsonl.gz")
    model_path = resolve_model_path(args.model)

    fp32 = load_scorer(model_path, device="cpu", dtype="float32")
    default = load_scorer(model_path, device="cpu", dtype="auto")
    rows = take_comments(load_scoring_rows(dataset, args.split, skip_invalid=True).rows, args.n_comments)
    prompts = [r["prompt"] for r in rows for _ in r["comments"]]
    comments = [c for r in rows for c in r["comments"]]
    encoder, pad = fp32.encoder, fp32.encoder.tokenizer.pad_token_id
    sep = encoder.segment_sep_id
    ids = encoder.encode(prompts, comments).input_ids
    batches = [pad_batch([ids[i] for i in b], pad, segment_sep_id=sep)
               for b in length_sorted_batches([len(x) for x in ids], args.batch_size)]  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(fp32.model, encoder.tokenizer, Path(tmp) / ONNX_FILE, sep is not None)
        quantize_int8(Path(tmp) / ONNX_FILE, Path(tmp) / INT8_FILE)
        onnx32 = Scorer(OnnxRewardModel(Path(tmp) / ONNX_FILE, args.threads), encoder, ONNX_FILE)
        onnx8 = Scorer(OnnxRewardModel(Path(tmp) / INT8_FILE, args.threads), encoder, INT8_FILE)

        def flat(scorer):
            rewards, _ = scorer.score(rows, args.batch_size)
            return [r for post in rewards for r in post]

        def seed():
            encoded = encoder.encode(prompts, comments).input_ids
            rewards = score_ids(fp32.model, encoded, pad, args.batch_size, sort_by_length=False, pad_to=SEED_PAD_TO,
                                segment_sep_id=sep)  # fmt: skip
            return add_length_term(rewards, comments, encoder.settings.length_weight)  # as every scorer adds it

        def bare():
            with torch.no_grad():
                for batch in batches:
                    fp32.model(**batch)

        paths = [
            (f"(a) the seed's batching: input order, padded to {SEED_PAD_TO}, float32", seed),
            ("(b) float32 bare forward, length-sorted dynamic padding", bare),
            ("(c) score_posts, float32", lambda: flat(fp32)),
            (f"(d) score_posts, default dtype auto ({default.dtype})", lambda: flat(default)),
            ("(e) ONNX float32 (onnxruntime)", lambda: flat(onnx32)),
            ("(f) ONNX int8, dynamic quantization", lambda: flat(onnx8)),
        ]
        for _, fn in paths:  # warm-up over every batch shape
            fn()
        measured = [(name, *timed(fn, args.repeats)) for name, fn in paths]

    n = len(comments)
    reference = measured[2][2]
    ref_ndcg = ranking_metrics(labeled_posts(rows, split_like(reference, rows)))["ndcg@5"]
    t_bare = measured[1][1]
    flags = ", ".join(cpu_bf16_flags()) or "none"
    lines = [f"model {shown(args.model)}, {n} comments of {len(rows)} posts of {shown(dataset)} ({args.split}), "
             f"max_length {encoder.max_length}, batch {args.batch_size}, {args.threads} thread(s), "
             f"torch {torch.__version__}, python {sys.version.split()[0]}, CPU bfloat16 flags: {flags}",
             "",
             "| path | seconds | comments/s | vs fp32 bare forward | NDCG@5 | vs fp32 | reward Spearman vs fp32 |",
             "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    results = []
    for name, seconds, rewards in measured:
        row = {"path": name, "seconds": seconds, "comments_per_s": n / seconds, "ratio": t_bare / seconds}
        if rewards is not None:
            row["ndcg@5"] = ranking_metrics(labeled_posts(rows, split_like(rewards, rows)))["ndcg@5"]
            row["spearman"] = float(spearmanr(reference, rewards)[0])
        results.append(row)
        quality = (f"{row['ndcg@5']:.4f} | {row['ndcg@5'] - ref_ndcg:+.4f} | {row['spearman']:.4f}"
                   if "ndcg@5" in row else "- | - | -")  # fmt: skip
        lines.append(f"| {name} | {seconds:.2f} | {row['comments_per_s']:.1f} | {row['ratio']:.2f} | {quality} |")
    text = "\n".join(lines)
    print(text)
    command = " ".join(["benchmarks/bench_scoring.py", *(argv if argv is not None else sys.argv[1:])])
    written = write_generated(args.output, "benchmarks/bench_scoring.py",
                              f"`{command}`, one run, best of {args.repeats} per path\n\n{text}",
                              title="Scoring benchmark")  # fmt: skip
    print(f"\nwritten to {written}")
    return results


def split_like(flat: list[float], rows: list[dict]) -> list[list[float]]:
    out, start = [], 0
    for row in rows:
        out.append(list(np.asarray(flat[start : start + len(row["comments"])], dtype=np.float64)))
        start += len(row["comments"])
    return out


if __name__ == "__main__":
    main()
