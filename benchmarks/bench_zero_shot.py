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

`--fine_tune_epochs N` then trains each encoder on the training sites so that the same score orders their comments
(a bi-encoder reward model started from the encoder's own similarity: `fine_tune`), at `--fine_tune_max_length`
tokens (128), and adds two rows: the untrained encoder at that length, and the fine-tuned one, with the same weight
(MiniLM ~5 min an epoch on 2 cores, mpnet ~8x):

    OMP_NUM_THREADS=2 python benchmarks/bench_zero_shot.py --fine_tune_epochs 1
"""

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_file import write_generated  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = (0.5, 1.0, 2.0, 4.0, 8.0)  # of the cosine against log1p(characters); chosen on validation
KEYS = ("ndcg@1", "ndcg@5", "length_spearman", "shorter_better_pair_accuracy")


def bench_quality():
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "benchmarks" / "bench_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Encoder:
    """A bundled sentence encoder's embeddings under its own pooling (mean over tokens, normalized), as it was trained
    (sentence-transformers); `embed` keeps the graph while the model is in training mode."""

    def __init__(self, model_name: str):
        from transformers import AutoModel, AutoTokenizer

        from commentrank.bundled_models import resolve_model_path

        path = resolve_model_path(model_name)
        self.tokenizer, self.model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()

    def embed(self, texts: list[str], max_length: int):
        import torch

        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hidden = self.model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    def embeddings(self, posts, max_length: int, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """The embeddings of every post's question and of every comment of every post (in order), without
        gradients."""
        import torch

        def embed_all(texts: list[str]) -> np.ndarray:
            order = np.argsort([len(t) for t in texts])  # similar lengths per batch: less padding
            out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
            for start in range(0, len(texts), batch_size):
                index = order[start : start + batch_size]
                with torch.inference_mode():
                    out[index] = self.embed([texts[i] for i in index], max_length).numpy()
            return out

        self.model.eval()
        return embed_all([p["prompt"] for p in posts]), embed_all([c for p in posts for c in p["comments"]])

    def cosines(self, posts, max_length: int, batch_size: int = 32) -> list[np.ndarray]:
        """cos(question, comment) of every comment of every post, without gradients."""
        questions, comments = self.embeddings(posts, max_length, batch_size)
        bounds = np.cumsum([0] + [len(p["comments"]) for p in posts])
        return [comments[a:b] @ q for q, a, b in zip(questions, bounds[:-1], bounds[1:])]


def fine_tune(
    encoder: Encoder,
    posts,
    weight: float,
    epochs: int,
    max_length: int,
    learning_rate: float = 1e-5,
    posts_per_step: int = 4,
    max_comments: int = 12,
    seed: int = 42,
    log_every: int = 100,
) -> float:
    """Train the encoder on `posts` so that `log1p(characters) + weight * cos` orders each post's comments: RankNet
    (`pairwise_all_loss`, `-log sigmoid(s_better - s_worse)` over every pair of the post, up to `max_comments` drawn
    per post), AdamW with 10% linear warm-up and linear decay, gradients clipped at 1, bf16 autocast. The weight stays
    fixed: the encoder learns, starting from its own similarity. Posts without two differently ranked comments are
    left out (no pair, nothing to learn; they would only dilute the printed running loss). Prints that loss every
    `log_every` posts; returns the seconds it took."""
    import random

    import torch

    from commentrank.length import length_feature
    from commentrank.train.losses import pairwise_all_loss

    posts = [post for post in posts if len(set(post["ranks"])) > 1]  # a post without a ranked pair teaches nothing
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = encoder.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    steps = epochs * -(-len(posts) // posts_per_step)
    warmup = max(1, steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: min((i + 1) / warmup, (steps - i) / steps))
    start = time.perf_counter()
    for epoch in range(epochs):
        order = list(range(len(posts)))
        rng.shuffle(order)
        total = 0.0
        for n, i in enumerate(order, 1):
            post = posts[i]
            keep = sorted(rng.sample(range(len(post["comments"])), min(max_comments, len(post["comments"]))))
            comments = [post["comments"][j] for j in keep]
            ranks = torch.tensor([post["ranks"][j] for j in keep])
            cos = encoder.embed(comments, max_length) @ encoder.embed([post["prompt"]], max_length)[0]
            scores = torch.tensor(length_feature(comments)) + weight * cos
            loss = pairwise_all_loss(scores, torch.zeros_like(ranks), ranks)  # the listwise trainer's RankNet
            (loss / posts_per_step).backward()
            total += loss.item()
            if n % posts_per_step == 0 or n == len(order):
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            if n % log_every == 0:
                print(f"  epoch {epoch + 1}, {n}/{len(order)} posts: mean RankNet loss {total / n:.4f}, "
                      f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
    model.eval()
    return time.perf_counter() - start


def stats(posts, scores):
    from commentrank.metrics import post_stats

    return post_stats([{"ranks": p["ranks"], "scores": s, "comments": p["comments"]} for p, s in zip(posts, scores)])


def with_length(lengths, cos, weight: float) -> list[np.ndarray]:
    return [length + weight * c for length, c in zip(lengths, cos)]


def best_weight(posts, lengths, cos) -> float:
    """The cosine's weight with the best validation NDCG@5 (the test sites choose nothing)."""
    validation = posts["validation"], lengths["validation"], cos["validation"]

    def ndcg(weight: float) -> float:
        return stats(validation[0], with_length(validation[1], validation[2], weight)).value("ndcg@5")

    return max(WEIGHTS, key=ndcg)


def row(label: str, ranker, longest, weight: str, keys=KEYS) -> str:
    """A table line: each of `keys` with its interval, and NDCG@5 minus longest-first (paired), as `score.py` has
    them."""
    from commentrank.intervals import bootstrap_interval, paired_difference_interval

    cells = []
    for key in keys:
        interval = bootstrap_interval(ranker, key)
        cells.append(f"{ranker.value(key):.3f} [{interval.low:.3f}, {interval.high:.3f}]")
    delta = "-"
    if ranker is not longest:
        diff = paired_difference_interval(ranker, longest, "ndcg@5")
        delta = diff.as_text(signed=True)
    return f"| {label} | {weight} | " + " | ".join(cells) + f" | {delta} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["bundled:minilm", "bundled:mpnet"])
    parser.add_argument("--max_length", type=int, default=256, help="Tokens per text (both encoders: 256 or more).")
    parser.add_argument(
        "--fine_tune_epochs",
        type=int,
        default=0,
        help="Also fine-tune each encoder on the training sites (`fine_tune`) for this many epochs.",
    )
    parser.add_argument("--fine_tune_max_length", type=int, default=128, help="Tokens per text when fine-tuning.")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    parser.add_argument("--work_dir", default=str(ROOT / "outputs" / "bench_quality"), help="bench_quality's.")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "zero_shot.md"))
    args = parser.parse_args()
    import datasets
    import torch

    from commentrank.length import length_feature

    torch.set_num_threads(args.threads)
    bench = bench_quality()
    work = Path(args.work_dir)
    sizes = bench.prepare(work / "data", None, False)
    data = datasets.load_from_disk(str(work / "data" / "listwise"))
    posts = {split: list(data[split]) for split in ("validation", "test")}
    train = list(data["train"])
    lengths = {split: [np.array(length_feature(p["comments"])) for p in posts[split]] for split in posts}
    longest = {split: stats(posts[split], lengths[split]) for split in posts}
    lines = {split: [row("longest-first", longest[split], longest[split], "-")] for split in posts}
    for name in args.models:
        start = time.perf_counter()
        encoder = Encoder(name)
        cos = {split: encoder.cosines(posts[split], args.max_length) for split in posts}
        seconds = time.perf_counter() - start
        best = best_weight(posts, lengths, cos)
        for split in posts:
            lines[split].append(row(f"{name} cosine", stats(posts[split], cos[split]), longest[split], "-"))
            ranker = stats(posts[split], with_length(lengths[split], cos[split], best))
            lines[split].append(row(f"log length + {name} cosine", ranker, longest[split], f"{best:g}"))
        print(f"{name}: {seconds:.0f} s to embed both splits; weight {best:g} (validation)", flush=True)
        if args.fine_tune_epochs:  # before and after, both at the fine-tuning length, the same weight
            tokens = args.fine_tune_max_length
            for tuned in (False, True):
                label = f"the same at {tokens} tokens"
                if tuned:
                    seconds = fine_tune(encoder, train, best, args.fine_tune_epochs, tokens)
                    label = f"the same fine-tuned, {args.fine_tune_epochs} epoch(s) in {seconds:.0f} s"
                cos = {split: encoder.cosines(posts[split], tokens) for split in posts}
                for split in posts:
                    ranker = stats(posts[split], with_length(lengths[split], cos[split], best))
                    lines[split].append(row(label, ranker, longest[split], f"{best:g}"))
    header = ["ranker", "cosine weight", *KEYS, "NDCG@5 minus longest-first"]
    text = [
        "# Zero-shot rankers, leave-sites-out (`benchmarks/bench_zero_shot.py`)",
        "",
        f"Validation {sizes['validation']} posts, test {sizes['test']} posts (`bench_quality.py`'s sites). Score: "
        "`log1p(characters) + weight * cos(question, comment)`, the weight chosen on validation; 95% bootstrap "
        "intervals over posts, the difference to longest-first paired.",
    ]
    if args.fine_tune_epochs:
        text[-1] += (
            f" Fine-tuned: the encoder trained on the {len(train)} training posts so that the same score orders "
            f"their comments (`fine_tune`: RankNet over each post's pairs, the weight fixed), at "
            f"{args.fine_tune_max_length} tokens as the row above it; {args.threads} threads."
        )
    for split in posts:
        text += ["", f"**{split}**", "", "| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * (len(header) - 2)]
        text += lines[split]
    print("\n".join(text))
    write_generated(args.output, Path(__file__).name, "\n".join(text))


if __name__ == "__main__":
    main()
