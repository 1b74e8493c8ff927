"""The losses and their registry `LOSSES` (name, formula, description, function, graded: the one list that the config,
the trainer, the model card and the README read). The listwise losses are over the flattened rewards of a batch of
whole posts: `post_index` numbers the posts 0..B-1, `ranks` are 0 = best, `relevance` (optional) the graded relevance
of each comment (higher = better; default: from the ranks, as the project's NDCG).

Each loss is a mean over the posts of the batch (each post weighs the same, whatever its size); posts with nothing to
learn from (no ordered pair) are left out, and a batch without any such post gives `rewards.sum() * 0.0`, a zero that
keeps the graph so that every process runs a backward. All of them are vectorized over the flattened batch with
(N, N) same-post masks, N the number of comments of the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def pair_mask(post_index: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """`mask[i, j]`: comments i and j are in the same post and i is ranked strictly better (smaller rank)."""
    same_post = post_index[:, None] == post_index[None, :]
    return same_post & (ranks[:, None] < ranks[None, :])


def _post_sums(values: torch.Tensor, post_index: torch.Tensor) -> torch.Tensor:
    """Per-post sums of per-row values (posts are numbered 0..B-1 by the collator)."""
    n_posts = int(post_index.max()) + 1 if post_index.numel() else 0
    return values.new_zeros(n_posts).index_add(0, post_index, values)


def pairwise_all_loss(
    rewards: torch.Tensor, post_index: torch.Tensor, ranks: torch.Tensor, margin_scale: float | None = None
) -> torch.Tensor:
    """Mean over posts of the mean over the post's ordered pairs of `-log sigmoid(r_i - r_j - m_ij)`.

    `m_ij = margin_scale * (rank_j - rank_i)` when `margin_scale` is set, else 0. Posts without a pair (all ranks
    tied) are left out of the mean.
    """
    mask = pair_mask(post_index, ranks)
    diff = rewards[:, None] - rewards[None, :]
    if margin_scale:
        diff = diff - margin_scale * (ranks[None, :] - ranks[:, None]).to(rewards.dtype)
    pair_losses = torch.where(mask, -F.logsigmoid(diff), torch.zeros_like(diff))
    sums = _post_sums(pair_losses.sum(1), post_index)
    n_pairs = _post_sums(mask.sum(1).to(rewards.dtype), post_index)
    valid = n_pairs > 0
    if not bool(valid.any()):
        return rewards.sum() * 0.0  # keeps the graph: every process runs a backward
    return (sums[valid] / n_pairs[valid]).mean()


def listmle_loss(rewards: torch.Tensor, post_index: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """Mean over posts of the Plackett-Luce NLL of the observed order,
    `sum_i [logsumexp_{rank_j >= rank_i} r_j - r_i]`.

    Tied comments share their risk set (each denominator includes the ties). Posts without an ordered pair (one
    comment, or all tied) are left out, as in every loss here.
    """
    risk = (post_index[:, None] == post_index[None, :]) & (ranks[None, :] >= ranks[:, None])
    masked = rewards[None, :].expand(len(rewards), -1).masked_fill(~risk, float("-inf"))
    nll = _post_sums(torch.logsumexp(masked, dim=1) - rewards, post_index)
    valid = _ordered_posts(post_index, pair_mask(post_index, ranks))
    if not bool(valid.any()):
        return rewards.sum() * 0.0
    return nll[valid].mean()


# --------------------------------------------------------------------------------------------------------------------
# NDCG-aware losses: graded relevance, positions, and the three losses
# --------------------------------------------------------------------------------------------------------------------

LAMBDALOSS_MU = 5.0  # NDCG-Loss2++'s weight of delta_ij (Wang et al. 2018)


def _same_post(post_index: torch.Tensor) -> torch.Tensor:
    """`same[i, j]`: comments i and j belong to the same post."""
    return post_index[:, None] == post_index[None, :]


def _post_logsumexp(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Row i: `log sum_{j: mask[i, j]} exp(values_j)` (each row of `mask` must hold at least one True)."""
    return values[None, :].expand(len(values), -1).masked_fill(~mask, float("-inf")).logsumexp(dim=1)


def _positions(values: torch.Tensor, post_index: torch.Tensor) -> torch.Tensor:
    """The 1-based position of each comment when its post is sorted by decreasing `values` (ties: the earlier row
    first, a stable sort), so that the positions of a post are a permutation of 1..n."""
    rows = torch.arange(len(values), device=values.device)
    earlier = rows[None, :] < rows[:, None]
    ahead = (values[None, :] > values[:, None]) | ((values[None, :] == values[:, None]) & earlier)
    return 1 + (_same_post(post_index) & ahead).sum(1)


def relevance_from_ranks(post_index: torch.Tensor, ranks: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Linear graded relevance `n - 1 - rank` of each comment, `n` the size of its post.

    As `commentrank.metrics.relevance_from_ranks` (the project's NDCG), the rank is first replaced by the number of
    comments of the post ranked strictly better, so that relevance stays in 0..n-1 when the ranks are not exactly
    0..n-1 (a capped post) and tied ranks get the same relevance.
    """
    same = _same_post(post_index)
    better = (same & (ranks[None, :] < ranks[:, None])).sum(1)
    return (same.sum(1) - 1 - better).to(dtype)


def _gains(rewards, post_index, ranks, relevance) -> torch.Tensor:
    """The graded relevance `g` of each comment: `relevance` when given (e.g. from votes), else from the ranks."""
    if relevance is None:
        return relevance_from_ranks(post_index, ranks, rewards.dtype)
    return relevance.to(device=rewards.device, dtype=rewards.dtype)


def _ordered_posts(post_index: torch.Tensor, better: torch.Tensor) -> torch.Tensor:
    """Per post: whether it holds at least one ordered pair (`better[i, j]` for two of its comments)."""
    n_pairs = _post_sums(better.sum(1).to(torch.float32), post_index)
    return n_pairs > 0


def plistmle_loss(rewards: torch.Tensor, post_index: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """Mean over posts of the position-aware ListMLE (PListMLE, Lan et al. 2014) of the observed order:
    `sum_i a(i) [logsumexp_{rank_j >= rank_i} r_j - r_i]`.

    The position weights are the exponential ones of `LOSSES`, `a(i) = 2^(n - i) - 1` for the 1-based
    position `i` of the comment in its post of `n` comments, normalized to sum to 1 over the post (so a post's loss is
    a weighted mean of its ListMLE terms, whatever its size; computed as `2^-i - 2^-n`, which cannot overflow). The
    last position gets weight 0, the top positions dominate, as NDCG's discounts do. Tied comments share their risk
    set, as in `listmle_loss`, and the position of a tie block's comments is the block's first position (one plus the
    number of comments ranked strictly better), so tied comments are treated symmetrically. Posts without an order
    (one comment, or all ranks tied) are left out.
    """
    same = _same_post(post_index)
    risk = same & (ranks[None, :] >= ranks[:, None])
    terms = _post_logsumexp(rewards, risk) - rewards
    with torch.no_grad():
        n = same.sum(1).to(rewards.dtype)
        position = 1 + (same & (ranks[None, :] < ranks[:, None])).sum(1).to(rewards.dtype)
        weight = torch.exp2(-position) - torch.exp2(-n)  # (2^(n - i) - 1) / 2^n
        total = _post_sums(weight, post_index)[post_index]
        weight = torch.where(total > 0, weight / total.clamp_min(torch.finfo(total.dtype).tiny), 0.0)
    losses = _post_sums(weight * terms, post_index)
    valid = _ordered_posts(post_index, pair_mask(post_index, ranks))
    if not bool(valid.any()):
        return rewards.sum() * 0.0
    return losses[valid].mean()


def listnet_loss(
    rewards: torch.Tensor, post_index: torch.Tensor, ranks: torch.Tensor, relevance: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over posts of the top-one ListNet loss (Cao et al. 2007), `-sum_i softmax(g)_i log softmax(r)_i`.

    The cross-entropy between the top-one probabilities of the labels and of the rewards, softmaxes over the comments
    of each post. `g` is the graded relevance: `relevance` when given (`log1p` of the vote gap with
    `relevance: votes`), else `relevance_from_ranks`, the project's NDCG relevance (`n - 1 - rank`). Posts without an
    order (one comment, or all relevances equal: a uniform target) are left out.
    """
    gains = _gains(rewards, post_index, ranks, relevance)
    same = _same_post(post_index)
    log_probs = rewards - _post_logsumexp(rewards, same)
    target = torch.exp(gains - _post_logsumexp(gains, same))
    losses = _post_sums(-target * log_probs, post_index)
    valid = _ordered_posts(post_index, same & (gains[:, None] > gains[None, :]))
    if not bool(valid.any()):
        return rewards.sum() * 0.0
    return losses[valid].mean()


def lambdaloss_loss(
    rewards: torch.Tensor,
    post_index: torch.Tensor,
    ranks: torch.Tensor,
    relevance: torch.Tensor | None = None,
    mu: float = LAMBDALOSS_MU,
) -> torch.Tensor:
    """Mean over posts of LambdaLoss with the NDCG-Loss2++ weighting (Wang et al. 2018), the metric-driven bound of
    NDCG's loss: `-sum_{g_i > g_j} log2(sigmoid(r_i - r_j)) * (rho_ij + mu * delta_ij) * |G_i - G_j|`.

    - `g` is the graded relevance: `relevance` when given (`log1p` of the vote gap with `relevance: votes`), else
      `relevance_from_ranks` (`n - 1 - rank`); comments of equal relevance (tied ranks, or tied votes) form no pair.
    - `G_i = g_i / maxDCG` is the NDCG gain with the project's linear gain (as `commentrank.metrics`, not
      `2^g - 1`), `maxDCG = sum_k g_(k) / D_k` over the post's gains in decreasing order.
    - `D_k = log2(1 + k)`, `k` the 1-based position of a comment when its post is sorted by the current rewards
      (a stable sort: equal rewards keep the row order); `rho_ij = |1/D_i - 1/D_j|` (LambdaRank's discount gap) and
      `delta_ij = |1/D_|i-j| - 1/D_(|i-j|+1)|` (NDCG-Loss2's).
    - The weights are constants of the step (positions and gains carry no gradient), `sigma = 1`, `mu = 5`, the
      whole list (no NDCG@k truncation), the sum over the pairs of a post (as the paper and allRank), then the mean
      over the posts that have a pair.
    """
    gains = _gains(rewards, post_index, ranks, relevance)
    same = _same_post(post_index)
    pairs = same & (gains[:, None] > gains[None, :])
    with torch.no_grad():
        position = _positions(rewards.detach(), post_index).to(rewards.dtype)
        ideal = _positions(gains, post_index).to(rewards.dtype)
        max_dcg = _post_sums(gains / torch.log2(1 + ideal), post_index)[post_index]
        gain = torch.where(max_dcg > 0, gains / max_dcg.clamp_min(torch.finfo(max_dcg.dtype).tiny), 0.0)
        inv_discount = 1 / torch.log2(1 + position)
        rho = (inv_discount[:, None] - inv_discount[None, :]).abs()
        gap = (position[:, None] - position[None, :]).abs().clamp_min(1)  # >= 1 on pairs (a post's positions differ)
        delta = (1 / torch.log2(1 + gap) - 1 / torch.log2(2 + gap)).abs()
        weight = (rho + mu * delta) * (gain[:, None] - gain[None, :]).abs()
    diff = rewards[:, None] - rewards[None, :]
    pair_losses = torch.where(pairs, -weight * F.logsigmoid(diff) / math.log(2), torch.zeros_like(diff))
    losses = _post_sums(pair_losses.sum(1), post_index)
    valid = _ordered_posts(post_index, pairs)
    if not bool(valid.any()):
        return rewards.sum() * 0.0
    return losses[valid].mean()


# --------------------------------------------------------------------------------------------------------------------
# The registry: every loss_type, read by the config (its choices), the trainer (the function), the model card and the
# README (name and formula)
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loss:
    """A loss of commentrank: its name, formula and what it is trained on (as the model card and the README state
    them), its function over the flattened rewards of whole posts (None: TRL's RewardTrainer on pairs), and whether
    its gains come from `relevance` (graded; the others take the order from the ranks)."""

    name: str
    formula: str
    description: str
    function: Callable[..., torch.Tensor] | None = None
    graded: bool = False

    @property
    def listwise(self) -> bool:
        """Trained on whole posts by `ListwiseRewardTrainer` (else on pairs by TRL's `RewardTrainer`)."""
        return self.function is not None


LOSSES = {
    "pairwise": Loss(
        "pairwise (Bradley-Terry)",
        "-log sigmoid(r_chosen - r_rejected)",
        "TRL's RewardTrainer on (chosen, rejected) comment pairs of the same post, the CUP IT / InstructGPT recipe",
    ),
    "pairwise_all": Loss(
        "pairwise over all pairs of a post",
        "mean over posts of the mean over ranked pairs (i better than j) of -log sigmoid(r_i - r_j - m_ij)",
        "all the comments of a post in one batch element, each forwarded once (InstructGPT sec. 3.5); m_ij is the "
        "rank gap with use_margin, else 0",
        pairwise_all_loss,
    ),
    "listmle": Loss(
        "ListMLE (Plackett-Luce)",
        "mean over posts of sum_i [log sum_{j: rank_j >= rank_i} exp(r_j) - r_i]",
        "the negative log-likelihood of each post's observed order (Xia et al. 2008), all its comments in one batch "
        "element",
        listmle_loss,
    ),
    "plistmle": Loss(
        "position-aware ListMLE (PListMLE)",
        "mean over posts of sum_i a(i) [log sum_{j: rank_j >= rank_i} exp(r_j) - r_i], a(i) = 2^(n-i) - 1 normalized",
        "ListMLE with the top positions weighted more, as NDCG weighs them (Lan et al. 2014)",
        plistmle_loss,
    ),
    "listnet": Loss(
        "ListNet (top-one cross-entropy)",
        "mean over posts of -sum_i softmax(g)_i log softmax(r)_i, g the graded relevance",
        "the cross-entropy between the top-one probabilities of the labels and of the rewards (Cao et al. 2007)",
        listnet_loss,
        graded=True,
    ),
    "lambdaloss": Loss(
        "LambdaLoss, NDCG-Loss2++",
        "mean over posts of -sum_{g_i > g_j} log2(sigmoid(r_i - r_j)) * (rho_ij + mu * delta_ij) |G_i - G_j|",
        "a bound on NDCG's loss, weighting each pair by the NDCG it costs when swapped (Wang et al. 2018, mu = 5)",
        lambdaloss_loss,
        graded=True,
    ),
}
LISTWISE_LOSSES = tuple(name for name, loss in LOSSES.items() if loss.listwise)
GRADED_LOSSES = tuple(name for name, loss in LOSSES.items() if loss.graded)  # gains from `relevance`


def loss_table() -> str:
    """The losses as a markdown table (`loss_type`, name, formula): the README's table is this one (a test checks)."""
    rows = [
        f"| `{key}` | {loss.name} | `{loss.formula.replace('|', chr(92) + '|')}` |" for key, loss in LOSSES.items()
    ]
    return "\n".join(["| `loss_type` | loss | formula |", "|---|---|---|", *rows])
