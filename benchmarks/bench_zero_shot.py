"""Zero-shot rankers on the leave-sites-out split of `bench_quality.py`: no training, the bundled sentence encoders'
cosine similarity of question and comment, alone and added to the comment's log length. What a trained reward model
has to beat besides longest-first.

Usage:

    OMP_NUM_THREADS=2 python benchmarks/bench_zero_shot.py                    # MiniLM and mpnet (~8 min on 2 cores)
    python benchmarks/bench_zero_shot.py --models bundled:minilm

Each comment's score is `log1p(characters) + weight * cos(question, comment)`, the embeddings mean-pooled and
normalized as the encoders were trained (sentence-transformers), the question as the prompt of the benchmark's data
(the title). The weight is chosen on the validation sites (best NDCG@5 over `WEIGHTS`) and then reported on the test
sites; 95% bootstrap intervals over posts, model minus longest-first paired, as in `scripts/score.py`. The table goes
to stdout and to `benchmarks/results/zero_shot.md` (`--output`).
"""

import argparse
import importlib.util
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = (0.5, 1.0, 2.0, 4.0, 8.0)  # of the cosine against log1p(characters); chosen on validation
KEYS = ("ndcg@1", "ndcg@5", "length_spearman", "shorter_better_pair_accuracy")


def bench_quality():
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "benchmarks" / "bench_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cosines(model_name: str, posts, max_length: int, batch_size: int = 32) -> list[np.ndarray]:
    """cos(question, comment) of every comment of every post under the encoder's own pooling (mean, normalized)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from commentrank.bundled_models import resolve_model_path

    path = resolve_model_path(model_name)
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()

    def embed(texts: list[str]) -> np.ndarray:
        order = np.argsort([len(t) for t in texts])  # similar lengths per batch: less padding
        out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            index = order[start : start + batch_size]
            batch = tokenizer([texts[i] for i in index], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt")  # fmt: skip
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                hidden = model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out[index] = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
        return out

    questions = embed([p["prompt"] for p in posts])
    comments = embed([c for p in posts for c in p["comments"]])
    bounds = np.cumsum([0] + [len(p["comments"]) for p in posts])
    return [comments[a:b] @ q for q, a, b in zip(questions, bounds[:-1], bounds[1:])]


def stats(posts, scores):
    from commentrank.metrics import post_stats

    return post_stats([{"ranks": p["ranks"], "scores": s, "comments": p["comments"]} for p, s in zip(posts, scores)])


def row(label: str, ranker, longest, weight: str) -> str:
    """A table line: each of `KEYS` with its interval, and NDCG@5 minus longest-first (paired), as `score.py` has them."""
    from commentrank.intervals import bootstrap_interval, paired_difference_interval

    cells = []
    for key in KEYS:
        interval = bootstrap_interval(ranker, key)
        cells.append(f"{ranker.value(key):.3f} [{interval.low:.3f}, {interval.high:.3f}]")
    delta = "-"
    if ranker is not longest:
        diff = paired_difference_interval(ranker, longest, "ndcg@5")
        delta = f"{diff.point:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]"
    return f"| {label} | {weight} | " + " | ".join(cells) + f" | {delta} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["bundled:minilm", "bundled:mpnet"])
    parser.add_argument("--max_length", type=int, default=256, help="Tokens per text (both encoders: 256 or more).")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    parser.add_argument("--work_dir", default=str(ROOT / "outputs" / "bench_quality"), help="bench_quality's.")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "zero_shot.md"))
    args = parser.parse_args()
    import datasets
    import torch

    torch.set_num_threads(args.threads)
    bench = bench_quality()
    work = Path(args.work_dir)
    sizes = bench.prepare(work / "data", None, False)
    data = datasets.load_from_disk(str(work / "data" / "listwise"))
    posts = {split: list(data[split]) for split in ("validation", "test")}
    lengths = {split: [np.log1p([len(c) for c in p["comments"]]) for p in posts[split]] for split in posts}
    longest = {split: stats(posts[split], lengths[split]) for split in posts}
    lines = {split: [row("longest-first", longest[split], longest[split], "-")] for split in posts}
    for name in args.models:
        start = time.perf_counter()
        cos = {split: cosines(name, posts[split], args.max_length) for split in posts}
        seconds = time.perf_counter() - start
        with_length = {w: {s: [ln + w * c for ln, c in zip(lengths[s], cos[s])] for s in posts} for w in WEIGHTS}
        best = max(WEIGHTS, key=lambda w: stats(posts["validation"], with_length[w]["validation"]).value("ndcg@5"))
        for split in posts:
            lines[split].append(row(f"{name} cosine", stats(posts[split], cos[split]), longest[split], "-"))
            ranker = stats(posts[split], with_length[best][split])
            lines[split].append(row(f"log length + {name} cosine", ranker, longest[split], f"{best:g}"))
        print(f"{name}: {seconds:.0f} s to embed both splits; weight {best:g} (validation)", flush=True)
    header = ["ranker", "cosine weight", *KEYS, "NDCG@5 minus longest-first"]
    text = [
        "# Zero-shot rankers, leave-sites-out (`benchmarks/bench_zero_shot.py`)",
        "",
        f"Validation {sizes['validation']} posts, test {sizes['test']} posts (`bench_quality.py`'s sites). Score: "
        "`log1p(characters) + weight * cos(question, comment)`, the weight chosen on validation; 95% bootstrap "
        "intervals over posts, the difference to longest-first paired.",
    ]
    for split in posts:
        text += ["", f"**{split}**", "", "| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * (len(header) - 2)]
        text += lines[split]
    print("\n".join(text))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text("\n".join(text) + "\n")


if __name__ == "__main__":
    main()
