"""The actor: epsilon-greedy on the online network, batched over the vector env."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mario_rl.config import AgentConfig


def epsilon(agent: AgentConfig, env_steps: int, updates: int) -> float:
    """Exploration rate at a point of training.

    ``linear`` anneals from epsilon_start to epsilon_end over epsilon_decay_steps env
    steps. ``exponential`` is the notebook's rule: multiply by epsilon_decay after every
    gradient update, floored at epsilon_end. Both are pure functions of the counters, so a
    resumed run continues the schedule exactly.
    """
    if agent.epsilon_schedule == "linear":
        frac = min(1.0, env_steps / agent.epsilon_decay_steps)
        return agent.epsilon_start + frac * (agent.epsilon_end - agent.epsilon_start)
    return max(agent.epsilon_end, agent.epsilon_start * agent.epsilon_decay**updates)


class EpsilonGreedy:
    """Picks one action per env: random with probability epsilon, else argmax Q."""

    def __init__(self, q_net: nn.Module, num_actions: int, seed: int):
        self.q_net = q_net
        self.num_actions = num_actions
        self.rng = np.random.default_rng(seed)

    @torch.no_grad()
    def __call__(self, obs: np.ndarray, eps: float) -> np.ndarray:
        n = obs.shape[0]
        explore = self.rng.random(n) < eps
        actions = self.rng.integers(self.num_actions, size=n)
        if not explore.all():
            device = next(self.q_net.parameters()).device
            q = self.q_net(torch.from_numpy(obs).to(device))
            actions = np.where(explore, actions, q.argmax(dim=1).cpu().numpy())
        return actions
