import numpy as np
import pytest
import torch

from mario_rl.config import default_run
from mario_rl.policy import EpsilonGreedy, epsilon


def test_linear_schedule_counts_env_steps():
    agent = default_run(
        agent=dict(epsilon_schedule="linear", epsilon_start=1.0, epsilon_end=0.1, epsilon_decay_steps=1000)
    ).agent
    assert epsilon(agent, 0, 0) == 1.0
    assert epsilon(agent, 500, 99) == pytest.approx(0.55)
    assert epsilon(agent, 1000, 0) == pytest.approx(0.1)
    assert epsilon(agent, 10**6, 0) == pytest.approx(0.1)


def test_exponential_schedule_is_the_notebooks_per_update_decay():
    agent = default_run(
        agent=dict(epsilon_schedule="exponential", epsilon_start=1.0, epsilon_end=0.02, epsilon_decay=0.9999)
    ).agent
    assert epsilon(agent, 123, 0) == 1.0
    assert epsilon(agent, 0, 10_000) == pytest.approx(0.9999**10_000)  # ~0.368
    assert epsilon(agent, 0, 100_000) == 0.02  # 0.9999**1e5 ~ 4.5e-5, floored


class FixedQ(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, obs):
        q = torch.zeros(obs.shape[0], 3)
        q[:, 2] = 1.0
        return q


def test_greedy_picks_argmax_and_epsilon_one_explores():
    policy = EpsilonGreedy(FixedQ(), num_actions=3, seed=0)
    obs = np.zeros((64, 4, 84, 84), dtype=np.uint8)
    assert (policy(obs, 0.0) == 2).all()
    explored = policy(obs, 1.0)
    assert set(explored.tolist()) == {0, 1, 2}
