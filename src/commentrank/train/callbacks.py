"""Training callbacks: ranking metrics (NDCG, pair accuracy, length-controlled metrics) of whole validation posts at
each evaluation."""

from __future__ import annotations

import logging
import math

from transformers import TrainerCallback

from commentrank.encoding import PairEncoder
from commentrank.inference import collapse_warning, encode_posts, score_ids, split_by_post
from commentrank.length import add_length_term
from commentrank.metrics import length_metrics, ranking_metrics

logger = logging.getLogger(__name__)

LOGGED = ("ndcg@1", "ndcg@3", "ndcg@5", "ndcg_votes@1", "ndcg_votes@5", "top1_ndcg@5", "pair_accuracy",
          "length_spearman", "shorter_better_pair_accuracy")  # fmt: skip


class RankingEvalCallback(TrainerCallback):
    """Scores every comment of the validation posts and logs NDCG@1/3/5, pair accuracy and the length-controlled
    metrics (`length_spearman`, `shorter_better_pair_accuracy`; point values, no intervals) as `eval_*` metrics, next
    to TRL's own reward metrics, so `metric_for_best_model: eval_ndcg@5` can pick the best checkpoint. Warns, as the
    scorer does, when the model's own rewards are all but constant (a collapsed run).

    Set `callback.trainer` after building the trainer. Every process scores the same posts (ZeRO-3 gathers
    parameters collectively, so all ranks must run the same forwards).
    """

    def __init__(self, posts: list[dict], encoder: PairEncoder, batch_size: int = 32):
        self.posts = [p for p in posts if p.get("ranks") is not None]
        self.encoder = encoder
        self.batch_size = batch_size
        self.trainer = None
        self.last_metrics: dict[str, float] = {}
        self.last_warning: str | None = None  # the scorer's collapse warning at the last evaluation, if any
        self.last_dtype: str | None = None  # the precision the last evaluation scored in (the model's parameters')
        self._input_ids = None  # the posts are encoded once, at the first evaluation

    def evaluate_posts(self, model) -> dict[str, float]:
        if self._input_ids is None:
            self._input_ids, _ = encode_posts(self.encoder, self.posts)
        self.last_dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        flat = score_ids(model, self._input_ids, self.encoder.tokenizer.pad_token_id, self.batch_size,
                         segment_sep_id=self.encoder.segment_sep_id)  # fmt: skip
        weight = self.trainer.scored_length_weight() if hasattr(self.trainer, "scored_length_weight") else 0.0
        comments = [comment for post in self.posts for comment in post["comments"]]
        flat = add_length_term(flat, comments, weight)  # the rewards as the saved model will score them
        rewards = split_by_post(flat, self.posts)
        self.last_warning = collapse_warning(self.posts, rewards, weight)
        scored = [{**p, "scores": r} for p, r in zip(self.posts, rewards)]
        return {**ranking_metrics(scored), **length_metrics(scored)}

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not self.posts or self.trainer is None:
            return
        results = self.evaluate_posts(self.trainer.model)
        self.last_metrics = results
        if self.last_warning:
            logger.warning("at step %s: %s", getattr(state, "global_step", "?"), self.last_warning)
        extra = {f"eval_{k}": v for k, v in results.items() if k in LOGGED and math.isfinite(v)}  # no NaN logged
        if metrics is not None:
            metrics.update(extra)
        self.trainer.log(extra)
