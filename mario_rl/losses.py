"""The Double-DQN loss as a pure function of tensors, so it can be checked by hand."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def double_dqn_targets(
    next_q_online: torch.Tensor,
    next_q_target: torch.Tensor,
    returns: torch.Tensor,
    discounts: torch.Tensor,
) -> torch.Tensor:
    """returns + discount * Q_target(s', argmax_a Q_online(s', a)).

    ``returns`` are n-step discounted reward sums; ``discounts`` are gamma^n, or 0 after a
    termination (a time-out keeps its discount and bootstraps).
    """
    best = next_q_online.argmax(dim=1, keepdim=True)
    return returns + discounts * next_q_target.gather(1, best).squeeze(1)


def double_dqn_loss(
    q: torch.Tensor,
    actions: torch.Tensor,
    next_q_online: torch.Tensor,
    next_q_target: torch.Tensor,
    returns: torch.Tensor,
    discounts: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SmoothL1 (Huber, delta 1) between Q(s, a) and the Double-DQN target.

    Returns the (optionally importance-weighted) mean loss and the TD errors, which a
    prioritized replay uses as new priorities.
    """
    q_taken = q.gather(1, actions.unsqueeze(1)).squeeze(1).float()
    with torch.no_grad():
        target = double_dqn_targets(next_q_online.float(), next_q_target.float(), returns, discounts)
    per_sample = F.smooth_l1_loss(q_taken, target, reduction="none")
    loss = per_sample.mean() if weights is None else (per_sample * weights).mean()
    return loss, (target - q_taken).detach()
