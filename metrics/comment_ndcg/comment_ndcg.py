"""comment_ndcg: mean NDCG@k of the rewards a model gives the comments under each post (tie-aware, sklearn-exact)."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Mean over posts of NDCG@k with linear gain (DCG = sum rel_i / log2(i + 2)). Each example is one post: `predictions`
are the rewards of its comments (higher = better), `references` their relevance (higher = better, non-negative,
e.g. n - 1 - rank or votes - min(votes)). Tied rewards share the mean gain of their block over the block's positions,
exactly as `sklearn.metrics.ndcg_score` (ignore_ties=False); a post whose relevance is all 0 scores 0.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: list of lists of float, the rewards of one post's comments.
    references: list of lists of float, the relevance of the same comments (same lengths).
    k: int, cut-off (default 5); larger than a post's length is fine.
Returns:
    {"ndcg@k": mean NDCG@k over posts}
Example:
    >>> metric = evaluate.load("metrics/comment_ndcg")
    >>> metric.compute(predictions=[[0.9, 0.1, 0.5]], references=[[2, 0, 1]], k=5)
    {'ndcg@5': 1.0}
"""

_CITATION = """\
@inproceedings{mcsherry2008ties,
  title={Computing Information Retrieval Performance Measures Efficiently in the Presence of Tied Scores},
  author={McSherry, Frank and Najork, Marc}, booktitle={ECIR}, pages={414--421}, year={2008}}
"""


def _ndcg(relevance, scores, k):
    rel, sc = np.asarray(relevance, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if rel.ndim != 1 or rel.shape != sc.shape or rel.size == 0:
        raise ValueError(
            f"each post needs equal-length, non-empty predictions and references: {sc.shape}, {rel.shape}"
        )
    if (rel < 0).any():
        raise ValueError("NDCG should not be used on negative relevance values")
    discount = 1 / (np.log(np.arange(rel.size) + 2) / np.log(2))
    discount[k:] = 0
    ideal = discount.dot(np.sort(rel)[::-1])
    if ideal == 0:
        return 0.0
    _, inv, counts = np.unique(-sc, return_inverse=True, return_counts=True)
    gain = np.zeros(counts.size)
    np.add.at(gain, inv.reshape(-1), rel)
    block_discount = np.diff(np.cumsum(discount)[np.cumsum(counts) - 1], prepend=0.0)
    return float((gain / counts * block_discount).sum() / ideal)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CommentNDCG(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("float32")),
                }
            ),
        )

    def _compute(self, predictions, references, k=5):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        values = [_ndcg(r, p, k) for p, r in zip(predictions, references)]
        return {f"ndcg@{k}": float(np.mean(values)) if values else float("nan")}
