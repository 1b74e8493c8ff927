"""Rankers on frozen sentence-encoder features, on the Reddit split of `bench_scaling.py`: what a reward model gets
from two numbers per comment, its log length and the cosine of its embedding with the title's, with nothing
fine-tuned. Reads the Reddit data from `../shared/data/reddit/` (not openly licensed: it stays outside the project).

Usage:

    OMP_NUM_THREADS=2 python benchmarks/bench_features.py                     # MiniLM: ~5 min on 2 cores
    python benchmarks/bench_features.py --models bundled:minilm bundled:mpnet   # mpnet: ~8x MiniLM's embedding time
    python benchmarks/bench_features.py --runs reddit-all-seed0 reddit-all-seed1  # with bench_scaling.py's models
    python benchmarks/bench_features.py --fine_tune bundled:minilm                # + the encoder fine-tuned, ~21 min

The rankers, each scored on the same evaluation posts as `bench_scaling.py` (its fixed seeded order, the first
`--eval_posts`), 95% bootstrap intervals over posts, the difference to longest-first paired:
- `cosine`: cos(title, comment) of the encoder's mean-pooled, normalized embeddings (as it was trained);
- `log length + w * cosine` (z-scored cosine), `w` chosen on the validation communities;
- `head(log length, cosine)`: a `--hidden`-unit MLP on those two features, trained on every pair of the training
  posts' comments with a different rank (ties skipped) with the reward loss `-log sigmoid(s_better - s_worse)`, full
  batch, its weight decay chosen on validation at head seed 0 and then reported for every `--head_seeds`;
- `head(log length, cosine, embedding)`: the same with the comment's embedding as well;
- with `--fine_tune MODEL`: the encoder trained on the training posts so that `log length + w * cosine` (the weight
  fixed) orders their comments (`bench_zero_shot.fine_tune`, a bi-encoder reward model started from its own
  similarity; MiniLM ~21 min an epoch on 2 cores);
- with `--runs`: each `bench_scaling.py` model's saved rewards plus `w` times the cosine (both z-scored within posts),
  `w` chosen on validation.
The test communities choose nothing. Embeddings are cached in `--work_dir`; the report goes to
`benchmarks/results/features.md`.
"""

import argparse
import hashlib
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_scaling  # noqa: E402
import bench_zero_shot  # noqa: E402
from report_file import write_generated  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("validation", "test")
WEIGHT_DECAYS = (1e-4, 0.1, 1.0)
WEIGHTS = (0.25, 0.5, 1.0, 2.0)  # of the z-scored cosine, against log length or a model's z-scored reward
KEYS = ("ndcg@1", "ndcg@5", "pair_accuracy", "length_spearman", "shorter_better_pair_accuracy")


def features(post: dict, with_embedding: bool = False) -> np.ndarray:
    """One row per comment: log1p(characters) (the model's length term), cos(title, comment), then the comment's
    embedding if asked."""
    from commentrank.length import length_feature

    columns = [
        np.asarray(length_feature(post["comments"]))[:, None],
        (post["embeddings"] @ post["title_embedding"])[:, None],
    ]
    if with_embedding:
        columns.append(post["embeddings"])
    return np.concatenate(columns, axis=1).astype(np.float32)


def better_worse_pairs(ranks) -> list[tuple[int, int]]:
    """(better, worse) index pairs of one post: every two comments whose ranks differ; tied comments give none."""
    return [(a, b) for a, b in itertools.permutations(range(len(ranks)), 2) if ranks[a] < ranks[b]]


def train_head(posts: list[dict], with_embedding: bool, hidden: int, weight_decay: float, seed: int, steps: int = 300):
    """A small MLP scorer trained on `posts`' pairs with `-log sigmoid(s_better - s_worse)`, full batch (AdamW, lr
    0.01): returns `score(post) -> np.ndarray` and the training losses."""
    import torch

    torch.manual_seed(seed)
    rows, better, worse, offset = [], [], [], 0
    for post in posts:
        rows.append(features(post, with_embedding))
        pairs = better_worse_pairs(post["ranks"])
        better += [offset + a for a, _ in pairs]
        worse += [offset + b for _, b in pairs]
        offset += len(post["ranks"])
    x = torch.tensor(np.concatenate(rows))
    mean, std = x.mean(0), x.std(0) + 1e-6
    x = (x - mean) / std
    better, worse = torch.tensor(better), torch.tensor(worse)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.GELU(), torch.nn.Dropout(0.1),
                              torch.nn.Linear(hidden, 1))  # fmt: skip
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=weight_decay)
    losses = []
    for _ in range(steps):
        scores = net(x).squeeze(-1)
        loss = torch.nn.functional.softplus(scores[worse] - scores[better]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    net.eval()

    def score(post: dict) -> np.ndarray:
        with torch.no_grad():
            return net((torch.tensor(features(post, with_embedding)) - mean) / std).squeeze(-1).numpy()

    return score, losses


def zscore(values: np.ndarray, spread: float) -> np.ndarray:
    return (values - values.mean()) / spread


def within_post_spread(scores: list[np.ndarray]) -> float:
    """The standard deviation of scores around their post's mean: what a ranking within posts sees."""
    return float(np.std(np.concatenate([s - s.mean() for s in scores])))


def embed(model: str, posts: dict[str, list], max_length: int, cache: Path) -> dict[str, list[dict]]:
    """Each split's posts as `bench_zero_shot`'s post dicts with `title_embedding` and `embeddings` added, cached in
    `cache` (one file, written atomically, with a digest of the posts' ids and texts that a later run must match)."""
    out = {split: [{"post_id": p.post_id, "prompt": p.title, "comments": [c.text for c in p.comments],
                    "ranks": [c.rank for c in p.comments]} for p in group]
           for split, group in posts.items()}  # fmt: skip
    texts = {s: [(p["post_id"], p["prompt"], p["comments"]) for p in group] for s, group in out.items()}
    digest = hashlib.sha256(json.dumps([model, max_length, texts], sort_keys=True).encode()).hexdigest()
    arrays = {}
    if cache.exists():
        with np.load(cache) as stored:  # read each array once: an NpzFile reads it again on every access
            arrays = {name: stored[name] for name in stored.files}
    if "digest" not in arrays or arrays["digest"].item() != digest:
        encoder, arrays, start = bench_zero_shot.Encoder(model), {"digest": np.array(digest)}, time.perf_counter()
        for split, group in out.items():
            arrays[f"{split}_titles"], arrays[f"{split}_comments"] = encoder.embeddings(group, max_length)
            print(f"{model}: {split} embedded, {time.perf_counter() - start:.0f} s", flush=True)
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(".partial.npz")
        np.savez(partial, **arrays)
        partial.replace(cache)
    for split, group in out.items():
        bounds = np.cumsum([0] + [len(p["comments"]) for p in group])
        for post, title, a, b in zip(group, arrays[f"{split}_titles"], bounds[:-1], bounds[1:]):
            post["title_embedding"], post["embeddings"] = title, arrays[f"{split}_comments"][a:b]
    return out


def saved_rewards(run_dir: Path, split: str, posts: list[dict]) -> list[np.ndarray]:
    """A `bench_scaling.py` run's saved rewards for `posts`, matched by post id and comment text."""
    by_post = {}
    for line in (run_dir / f"scores-reddit-{split}-{len(posts)}" / "predictions.jsonl").read_text().splitlines():
        post = json.loads(line)
        by_post[post["post_id"]] = {c["text"]: c["reward"] for c in post["comments"]}
    return [np.array([by_post[p["post_id"]][text] for text in p["comments"]]) for p in posts]


def rankers(model: str, data: dict, args, lines: dict, gains: dict, chosen: list, first: bool) -> None:
    """Every ranker of one encoder: its table lines appended to `lines[split]`, each `--runs` model's gain from the
    cosine to `gains[split]`, what validation chose to `chosen`."""
    from commentrank.intervals import paired_difference_interval

    def stats(split, scores):
        return bench_zero_shot.stats(data[split], scores)

    def add(label, setting, scores):
        for split in SPLITS:
            lines[split].append(bench_zero_shot.row(label, stats(split, scores[split]), longest[split], setting, KEYS))

    def best(candidates, scores_of):
        return max(candidates, key=lambda c: stats("validation", scores_of(c)["validation"]).value("ndcg@5"))

    columns = {s: [features(p) for p in data[s]] for s in SPLITS}
    lengths = {s: [x[:, 0] for x in columns[s]] for s in SPLITS}
    cos = {s: [x[:, 1] for x in columns[s]] for s in SPLITS}
    longest = {s: stats(s, lengths[s]) for s in SPLITS}
    if first:
        for split in SPLITS:
            lines[split].append(bench_zero_shot.row("longest-first", longest[split], longest[split], "-", KEYS))
    add(f"{model} cosine", "-", cos)
    mixes = {w: mix(lengths, cos, w) for w in WEIGHTS}
    w = best(WEIGHTS, mixes.get)
    add(f"log length + w * {model} cosine", f"w {w:g}", mixes[w])
    chosen.append(f"{model}: cosine weight {w:g}")
    if model in args.fine_tune:
        scores, seconds = fine_tuned_mix(model, data, lengths, raw_cosine_weight(lengths, cos, w), args)
        add(
            f"the same, the encoder fine-tuned {args.fine_tune_epochs} epoch(s) in {seconds:.0f} s", f"w {w:g}", scores
        )
    for with_embedding in (False, True):
        name = f"head(log length, {model} cosine{', embedding' if with_embedding else ''})"
        trials = {d: head_scores(data, with_embedding, args.hidden, d, args.head_seeds[0]) for d in WEIGHT_DECAYS}
        decay = best(WEIGHT_DECAYS, trials.get)
        chosen.append(f"{name}: weight decay {decay:g}")
        for seed in args.head_seeds:
            scores = (
                trials[decay]
                if seed == args.head_seeds[0]
                else head_scores(data, with_embedding, args.hidden, decay, seed)
            )
            add(name, f"wd {decay:g}, seed {seed}", scores)
        print(f"{name}: done", flush=True)
    for run in args.runs:
        rewards = {s: saved_rewards(ROOT / "outputs" / "bench_scaling" / run, s, data[s]) for s in SPLITS}
        mixes = {w: mix(rewards, cos, w) for w in (0.0, *WEIGHTS)}
        w = best(mixes, mixes.get)
        if first:
            add(f"{run} (bench_scaling.py)", "-", rewards)
        add(f"{run} + w * {model} cosine", f"w {w:g}", mixes[w])
        for split in SPLITS:
            diff = paired_difference_interval(stats(split, mixes[w][split]), stats(split, rewards[split]), "ndcg@5")
            gains[split].append(diff.as_text(signed=True))
        gains["rows"].append(f"{run} + w * {model} cosine (w {w:g})")


def fine_tuned_mix(model: str, data: dict, lengths: dict, weight: float, args) -> tuple[dict, float]:
    """`bench_zero_shot.fine_tune` on the training posts (the encoder learns so that `log length + weight * cos`,
    the weight fixed, orders their comments), then that score of each evaluation split; and the training seconds."""
    encoder = bench_zero_shot.Encoder(model)
    seconds = bench_zero_shot.fine_tune(encoder, data["train"], weight, args.fine_tune_epochs, args.max_length,
                                        log_every=500)  # fmt: skip
    scores = {}
    for split in SPLITS:
        cos = encoder.cosines(data[split], args.max_length)
        scores[split] = [n + weight * c for n, c in zip(lengths[split], cos)]
    return scores, seconds


def raw_cosine_weight(lengths: dict, cos: dict, weight: float) -> float:
    """The weight of the raw cosine against raw log length that orders comments as `mix(lengths, cos, weight)`."""
    return weight * within_post_spread(lengths["validation"]) / within_post_spread(cos["validation"])


def mix(first: dict, cos: dict, weight: float) -> dict:
    """`first` + `weight` * cosine per comment, both z-scored by their spread within the validation posts."""
    a, b = within_post_spread(first["validation"]), within_post_spread(cos["validation"])
    return {s: [zscore(x, a) + weight * zscore(c, b) for x, c in zip(first[s], cos[s])] for s in SPLITS}


def head_scores(data: dict, with_embedding: bool, hidden: int, weight_decay: float, seed: int) -> dict:
    """A head trained on the training posts: its scores of each evaluation split's posts."""
    score, _ = train_head(data["train"], with_embedding, hidden, weight_decay, seed)
    return {s: [score(p) for p in data[s]] for s in SPLITS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["bundled:minilm"])
    parser.add_argument("--max_length", type=int, default=128, help="Tokens per text, as the Reddit recipe trains.")
    parser.add_argument("--eval_posts", type=int, default=500, help="bench_scaling.py's evaluation posts per split.")
    parser.add_argument("--hidden", type=int, default=64, help="The head's hidden units.")
    parser.add_argument("--head_seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--fine_tune",
        nargs="*",
        default=[],
        help="Models of --models to fine-tune on the training posts as well (bench_zero_shot.fine_tune), the weight "
        "chosen for their zero-shot row fixed.",
    )
    parser.add_argument("--fine_tune_epochs", type=int, default=1, help="Epochs of --fine_tune.")
    parser.add_argument("--runs", nargs="*", default=[], help="bench_scaling.py run folders to add the cosine to.")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    parser.add_argument("--work_dir", default=str(ROOT / "outputs" / "bench_features"))
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "features.md"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if not bench_scaling.REDDIT.exists():
        sys.exit(f"{bench_scaling.REDDIT} not found: this benchmark needs the Reddit data in ../shared/data/reddit/")
    by_source, _, _ = bench_scaling.load_splits(bench_scaling.REDDIT)
    reddit = by_source["reddit"]
    posts = {"train": reddit["train"], **{s: bench_scaling.eval_order(reddit[s])[: args.eval_posts] for s in SPLITS}}

    lines, chosen, gains = {split: [] for split in SPLITS}, [], {"rows": [], **{split: [] for split in SPLITS}}
    for model in args.models:
        data = embed(model, posts, args.max_length, Path(args.work_dir) / model.replace(":", "-") / "embeddings.npz")
        rankers(model, data, args, lines, gains, chosen, first=model == args.models[0])
    header = ["ranker", "chosen on validation", *KEYS, "NDCG@5 minus longest-first"]
    text = [
        "# Rankers on frozen sentence-encoder features, Reddit (`benchmarks/bench_features.py`)",
        "",
        f"The split of `bench_scaling.py` (training communities {len(posts['train'])} posts; the first "
        f"{args.eval_posts} posts of each evaluation split in its fixed order), {args.max_length} tokens per text, "
        f"heads of {args.hidden} units trained on the training posts' pairs (ties skipped). Chosen on validation: "
        f"{'; '.join(chosen)}. 95% bootstrap intervals over posts; the difference to longest-first paired.",
    ]
    for split in SPLITS:
        text += ["", f"**reddit {split}** ({args.eval_posts} posts)", ""]
        text += ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2), *lines[split]]
    if gains["rows"]:
        text += [
            "",
            "**What the cosine adds to a fine-tuned model** (NDCG@5, the sum minus the model alone, paired)",
            "",
        ]
        text += ["| ranker | " + " | ".join(f"reddit {split}" for split in SPLITS) + " |", "|---|---:|---:|"]
        text += [f"| {row} | " + " | ".join(gains[s][i] for s in SPLITS) + " |" for i, row in enumerate(gains["rows"])]
    print("\n".join(text))
    write_generated(args.output, Path(__file__).name, "\n".join(text))


if __name__ == "__main__":
    main()
