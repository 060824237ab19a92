"""The seed notebook's training loop (../shared/seed/), ported only as far as the Gymnasium
API requires, as the baseline that benchmarks/throughput.py measures against.

Kept as the notebook had it: float32 frame stacks in a deque of torch tensors (two stacks per
transition), one update of batch 32 per env step, fp32, the notebook's wrappers. Its
max-and-skip keeps references to nes-py's one screen array, so it pools nothing: that bug
is the notebook's and stays.
"""

from __future__ import annotations

import collections
import random
import time
from collections import deque, namedtuple

import cv2
import gym_super_mario_bros
import gymnasium as gym
import numpy as np
import torch
from gym_super_mario_bros.actions import SIMPLE_MOVEMENT
from nes_py.wrappers import JoypadSpace
from torch import nn


class MaxAndSkipEnv(gym.Wrapper):
    def __init__(self, env, skip=4):
        super().__init__(env)
        self._obs_buffer = collections.deque(maxlen=2)
        self._skip = skip

    def step(self, action):
        total_reward = 0.0
        done = False
        for _ in range(self._skip):
            obs, reward, terminated, truncated, info = self.env.step(action)
            done = terminated or truncated
            self._obs_buffer.append(obs)
            total_reward += reward
            if done:
                break
        return np.max(np.stack(self._obs_buffer), axis=0), total_reward, done, False, info

    def reset(self, **kwargs):
        self._obs_buffer.clear()
        obs, info = self.env.reset(**kwargs)
        self._obs_buffer.append(obs)
        return obs, info


class ProcessFrame84(gym.ObservationWrapper):
    def __init__(self, env):
        super().__init__(env)
        self.observation_space = gym.spaces.Box(low=0, high=255, shape=(84, 84, 1), dtype=np.uint8)

    def observation(self, frame):
        img = np.reshape(frame, [240, 256, 3]).astype(np.float32)
        img = img[:, :, 0] * 0.299 + img[:, :, 1] * 0.587 + img[:, :, 2] * 0.114
        resized = cv2.resize(img, (84, 110), interpolation=cv2.INTER_AREA)
        return np.reshape(resized[18:102, :], [84, 84, 1]).astype(np.uint8)


class ImageToPyTorch(gym.ObservationWrapper):
    def __init__(self, env):
        super().__init__(env)
        old = self.observation_space.shape
        self.observation_space = gym.spaces.Box(0.0, 1.0, (old[-1], old[0], old[1]), dtype=np.float32)

    def observation(self, observation):
        return np.moveaxis(observation, 2, 0)


class ScaledFloatFrame(gym.ObservationWrapper):
    def observation(self, obs):
        return np.array(obs).astype(np.float32) / 255.0


class BufferWrapper(gym.ObservationWrapper):
    def __init__(self, env, n_steps, dtype=np.float32):
        super().__init__(env)
        self.dtype = dtype
        old = env.observation_space
        self.observation_space = gym.spaces.Box(
            old.low.repeat(n_steps, axis=0), old.high.repeat(n_steps, axis=0), dtype=dtype
        )

    def reset(self, **kwargs):
        self.buffer = np.zeros_like(self.observation_space.low, dtype=self.dtype)
        obs, info = self.env.reset(**kwargs)
        return self.observation(obs), info

    def observation(self, observation):
        self.buffer[:-1] = self.buffer[1:]
        self.buffer[-1] = observation
        return self.buffer


def make_env(name: str) -> gym.Env:
    env = gym_super_mario_bros.make(name)
    env = MaxAndSkipEnv(env)
    env = ProcessFrame84(env)
    env = ImageToPyTorch(env)
    env = BufferWrapper(env, 4)
    env = ScaledFloatFrame(env)
    return JoypadSpace(env, SIMPLE_MOVEMENT)


class DQNSolver(nn.Module):
    def __init__(self, input_shape, n_actions):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(input_shape[0], 32, kernel_size=8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=1),
            nn.ReLU(),
        )
        conv_out = int(np.prod(self.conv(torch.zeros(1, *input_shape)).size()))
        self.fc = nn.Sequential(nn.Linear(conv_out, 512), nn.ReLU(), nn.Linear(512, n_actions))

    def forward(self, x):
        return self.fc(self.conv(x).view(x.size()[0], -1))


Transition = namedtuple("Transition", ("state", "action", "next_state", "done", "reward"))
BATCH = 32  # the notebook's batch: it learns once this many transitions are in memory


def run(env_steps: int, seed: int = 42, warmup: int = 100) -> dict[str, float]:
    """Play and learn ``env_steps`` steps as the notebook did; time the steps after the first ``warmup``.

    The notebook learns from its 32nd env step on, one update per env step, so ``warmup`` only
    sets where the clock starts: after a full batch is in memory and the first updates warmed up.
    """
    env = make_env("SuperMarioBros-1-1-v0")
    torch.manual_seed(seed)
    random.seed(seed + 4)
    shape, n_actions = env.observation_space.shape, env.action_space.n
    online, target = DQNSolver(shape, n_actions), DQNSolver(shape, n_actions)
    target.load_state_dict(online.state_dict())
    for p in target.parameters():
        p.requires_grad = False
    optimizer = torch.optim.Adam(online.parameters(), lr=0.00025)
    l1 = nn.SmoothL1Loss()
    memory: deque = deque(maxlen=20_000)
    epsilon, gamma = 1.0, 0.9
    state, _ = env.reset(seed=seed + 1)
    state = torch.tensor(np.array([state]), dtype=torch.float)
    started, timed_updates = None, 0
    for step in range(env_steps):
        if step == warmup:
            started = time.perf_counter()
        if torch.rand(1).item() <= epsilon:
            action = torch.randint(0, n_actions, (1,)).item()
        else:
            with torch.no_grad():
                action = torch.argmax(online(state)).item()
        next_state, reward, done, _, _ = env.step(action)
        next_state = torch.tensor(np.array([next_state]), dtype=torch.float)
        memory.append(
            Transition(
                state,
                torch.tensor([action]),
                next_state,
                torch.tensor([float(done)]).unsqueeze(0),
                torch.tensor([reward], dtype=torch.float).unsqueeze(0),
            )
        )
        state = next_state
        if done:
            state, _ = env.reset()
            state = torch.tensor(np.array([state]), dtype=torch.float)
        if len(memory) < BATCH:
            continue
        batch = Transition(*zip(*random.sample(memory, BATCH), strict=True))
        s, s2 = torch.cat(batch.state), torch.cat(batch.next_state)
        a, d, r = torch.cat(batch.action), torch.cat(batch.done), torch.cat(batch.reward)
        with torch.no_grad():
            best = online(s2).max(1)[1].view(-1, 1)
            value = target(s2).gather(1, best).view(-1, 1)
        y = r + gamma * value * (1 - d)
        q = online(s).gather(1, a.unsqueeze(-1)).float()
        optimizer.zero_grad()
        loss = l1(q, y)
        loss.backward()
        optimizer.step()
        timed_updates += started is not None
        epsilon = max(epsilon * 0.9999, 0.02)
    elapsed = time.perf_counter() - started
    env.close()
    one = memory[0]
    per_transition = sum(t.element_size() * t.nelement() for t in one)
    return {
        "steps_per_s": (env_steps - warmup) / elapsed,
        "updates_per_s": timed_updates / elapsed,
        "bytes_per_transition": per_transition,
    }
