"""The listwise losses (`configs.LOSSES` names and states them), over the flattened rewards of a batch of whole posts:
`post_index` numbers the posts 0..B-1, `ranks` are 0 = best."""

from __future__ import annotations

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
    """Mean over posts of the Plackett-Luce NLL of the observed order, `sum_i [logsumexp_{rank_j >= rank_i} r_j - r_i]`.

    Tied comments share their risk set (each denominator includes the ties). Posts of one comment are left out.
    """
    risk = (post_index[:, None] == post_index[None, :]) & (ranks[None, :] >= ranks[:, None])
    masked = rewards[None, :].expand(len(rewards), -1).masked_fill(~risk, float("-inf"))
    nll = _post_sums(torch.logsumexp(masked, dim=1) - rewards, post_index)
    valid = _post_sums(torch.ones_like(rewards), post_index) >= 2
    if not bool(valid.any()):
        return rewards.sum() * 0.0
    return nll[valid].mean()
