"""The pure part of benchmarks/bench_features.py: the features, the pairs a head trains on, and that it learns."""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
_spec = importlib.util.spec_from_file_location("bench_features", ROOT / "benchmarks" / "bench_features.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def post(comments, ranks, embeddings, title_embedding):
    return {"comments": comments, "ranks": ranks, "embeddings": np.asarray(embeddings, dtype=np.float32),
            "title_embedding": np.asarray(title_embedding, dtype=np.float32)}  # fmt: skip


def test_features_are_the_models_log_length_and_the_title_cosine():
    p = post(["a", "abcd"], [0, 1], [[1.0, 0.0], [0.6, 0.8]], [0.0, 1.0])
    x = bench.features(p)
    assert x.shape == (2, 2)
    np.testing.assert_allclose(x[:, 0], [math.log1p(1), math.log1p(4)], rtol=1e-6)
    np.testing.assert_allclose(x[:, 1], [0.0, 0.8], rtol=1e-6)
    assert bench.features(p, with_embedding=True).shape == (2, 4)


def test_pairs_put_the_better_rank_first_and_skip_ties():
    assert sorted(bench.better_worse_pairs([1, 0, 1])) == [(1, 0), (1, 2)]
    assert bench.better_worse_pairs([0, 0]) == []


def test_a_head_learns_to_rank_by_the_cosine_and_its_loss_falls():
    rng = np.random.default_rng(0)

    def random_post():
        embeddings = rng.normal(size=(4, 8))
        embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
        title = embeddings.mean(0) / np.linalg.norm(embeddings.mean(0))
        cos = embeddings @ title
        texts = ["x" * int(n) for n in rng.integers(5, 500, size=4)]  # length carries no signal
        return post(texts, [int(r) for r in np.argsort(np.argsort(-cos))], embeddings, title)

    train = [random_post() for _ in range(200)]
    score, losses = bench.train_head(train, with_embedding=False, hidden=16, weight_decay=1e-4, seed=0, steps=150)
    assert losses[-1] < 0.5 * losses[0]
    held_out = [random_post() for _ in range(50)]
    right = [score(p)[a] > score(p)[b] for p in held_out for a, b in bench.better_worse_pairs(p["ranks"])]
    assert np.mean(right) > 0.9


def test_the_fine_tuned_score_starts_from_the_zero_shot_mix_order():
    rng = np.random.default_rng(1)
    lengths = {s: [rng.normal(5, 1, size=4) for _ in range(30)] for s in bench.SPLITS}
    cos = {s: [rng.normal(0.3, 0.1, size=4) for _ in range(30)] for s in bench.SPLITS}
    mixed = bench.mix(lengths, cos, 0.5)
    weight = bench.raw_cosine_weight(lengths, cos, 0.5)
    for split in bench.SPLITS:
        for m, n, c in zip(mixed[split], lengths[split], cos[split]):
            np.testing.assert_array_equal(np.argsort(m), np.argsort(n + weight * c))
