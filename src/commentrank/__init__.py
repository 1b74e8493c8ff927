"""commentrank: train and serve reward models that rank the comments under a post.

The stages are subpackages: `commentrank.data` (data_prep), `commentrank.train` (reward trainers), `commentrank.score`
(scoring and reports); `configs` holds every setting. The names below are the small public API, imported on first use
(so that `import commentrank` stays light):

    from commentrank import load_scorer
    scorer = load_scorer("outputs/quickstart/reward")
    scorer.rank("Which hop gives citrus notes?", ["Citra.", "Water."])
"""

import importlib

__version__ = "0.1.0"

_API = {
    "EncoderSettings": "commentrank.configs",
    "PrepArguments": "commentrank.configs",
    "RewardArguments": "commentrank.configs",
    "ListwiseRewardConfig": "commentrank.configs",
    "SFTArguments": "commentrank.configs",
    "ScoreArguments": "commentrank.configs",
    "PairEncoder": "commentrank.encoding",
    "RankedPost": "commentrank.data.records",
    "Comment": "commentrank.data.records",
    "run_prepare": "commentrank.data.prepare",
    "open_ranked_data": "commentrank.data.loading",
    "load_scoring_rows": "commentrank.data.loading",
    "PairwiseRewardTrainer": "commentrank.train.pairwise",
    "ListwiseRewardTrainer": "commentrank.train.listwise",
    "load_scorer": "commentrank.score.scorer",
    "Scorer": "commentrank.score.scorer",
    "RewardFunction": "commentrank.score.reward_function",
    "ranking_metrics": "commentrank.metrics",
    "baseline_metrics": "commentrank.metrics",
    "build_model_card": "commentrank.model_card",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'commentrank' has no attribute {name!r}")
