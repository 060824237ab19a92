"""The DQN and Double-DQN losses as pure functions of tensors, so they can be checked by hand."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def double_dqn_targets(
    next_q_online: torch.Tensor,
    next_q_target: torch.Tensor,
    returns: torch.Tensor,
    discounts: torch.Tensor,
) -> torch.Tensor:
    """returns + discount * Q_target(s', argmax_a Q_online(s', a)) (van Hasselt et al. 2016).

    ``returns`` are n-step discounted reward sums; ``discounts`` are gamma^n, or 0 after a
    termination (a time-out keeps its discount and bootstraps).
    """
    best = next_q_online.argmax(dim=1, keepdim=True)
    return returns + discounts * next_q_target.gather(1, best).squeeze(1)


def dqn_targets(next_q_target: torch.Tensor, returns: torch.Tensor, discounts: torch.Tensor) -> torch.Tensor:
    """returns + discount * max_a Q_target(s', a): the target of DQN (Mnih et al. 2015).

    The same max picks and values the action, which biases Q upwards; Double DQN splits the two.
    Shapes as ``double_dqn_targets``.
    """
    return returns + discounts * next_q_target.max(dim=1).values


def dqn_loss(
    q: torch.Tensor,
    actions: torch.Tensor,
    next_q_online: torch.Tensor | None,
    next_q_target: torch.Tensor,
    returns: torch.Tensor,
    discounts: torch.Tensor,
    weights: torch.Tensor | None = None,
    huber_delta: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SmoothL1 with transition point ``huber_delta`` between Q(s, a) and the Double-DQN target,
    or DQN's when ``next_q_online`` is None (one forward pass fewer per update).

    Per sample, with td = target - Q(s, a) in reward units: 0.5 * td^2 / delta where
    |td| < delta, else |td| - 0.5 * delta; its gradient with respect to Q(s, a) is
    -clip(td / delta, -1, 1). That is exactly the gradient a reward scale of 1 / delta would
    give at the network's output under delta 1, while Q-values, TD errors and priorities stay
    in reward units. Shapes: q, next_q_* (batch, actions); actions (batch,) int64; returns,
    discounts, weights (batch,).

    Everything here is float32, under autocast too: the targets and TD errors of Q-values
    near 100 must not be rounded to bf16's steps of 0.5. Returns the (optionally
    importance-weighted) mean loss and the TD errors, which a prioritized replay uses as new
    priorities.
    """
    with torch.autocast(q.device.type, enabled=False):
        q_taken = q.gather(1, actions.unsqueeze(1)).squeeze(1).float()
        with torch.no_grad():
            returns, discounts, next_target = returns.float(), discounts.float(), next_q_target.float()
            if next_q_online is None:
                target = dqn_targets(next_target, returns, discounts)
            else:
                target = double_dqn_targets(next_q_online.float(), next_target, returns, discounts)
        per_sample = F.smooth_l1_loss(q_taken, target, reduction="none", beta=huber_delta)
        loss = per_sample.mean() if weights is None else (per_sample * weights.float()).mean()
    return loss, (target - q_taken).detach()
