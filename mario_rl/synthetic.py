"""A stand-in for the Mario workers that costs nothing to step, for pipeline tests and benchmarks.

``SyntheticMario`` (Gymnasium id ``MarioRL/Synthetic-v0``) returns prepared uint8 frames of
the training frame size at once, so what a run measures with it is the pipeline around the
emulators: the actor's forward, the vector env or Ray transport, replay writes and sampling,
and the learner. ``make_vector_env`` builds it behind the same frame stack and vector env as
the Mario workers (mario_rl/envs.py), so it can replace them wherever an env factory is taken
(``ExperienceStream(make_envs=...)``, the Ray collector's actors).

Each frame says where it came from, so a test can check a rebuilt stack against what the actor
saw: row 0 holds the episode's tag (4 bytes, drawn from the env's seeded generator at every
reset, so every emulator's episodes differ), the step within the episode (2 bytes) and the
action that led to the frame (1 byte). The reward of a step is the action taken, so stored
rewards can be checked against stored actions.
"""

from __future__ import annotations

import functools
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import FrameStackObservation, TimeLimit

from mario_rl.config import EnvConfig
from mario_rl.envs import num_actions, vectorize

ENV_ID = "MarioRL/Synthetic-v0"
# Distinct frames the env cycles through, prepared once: enough that consecutive stacks differ
# and the network's forward is not fed one repeated image.
BANK_SIZE = 64
TAG_BYTES = slice(0, 4)
STEP_BYTES = slice(4, 6)
ACTION_BYTE = 6


class SyntheticMario(gym.Env):
    """Single (size, size) uint8 frames with no emulation; an episode is ``episode_steps`` steps.

    The last step of an episode terminates it with ``flag_get`` (a clear); ``x_pos`` is the step.
    Info carries the keys the Mario workers' does (mario_rl.envs.INFO_KEYS).
    """

    def __init__(self, size: int = 84, actions: int = 5, episode_steps: int = 100):
        self.observation_space = gym.spaces.Box(0, 255, (size, size), np.uint8)
        self.action_space = gym.spaces.Discrete(actions)
        self.episode_steps = episode_steps
        self._bank = np.random.default_rng(0).integers(0, 256, (BANK_SIZE, size, size), dtype=np.uint8)
        self._tag = np.zeros(4, dtype=np.uint8)
        self._step = 0

    def _frame(self, action: int) -> np.ndarray:
        frame = self._bank[self._step % BANK_SIZE].copy()
        frame[0, TAG_BYTES] = self._tag
        frame[0, STEP_BYTES] = np.array([self._step], dtype="<u2").view(np.uint8)
        frame[0, ACTION_BYTE] = action
        return frame

    def _info(self, clear: bool) -> dict[str, Any]:
        return {"x_pos": self._step, "flag_get": clear, "time": 400, "life": 2, "world": 1, "stage": 1}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._tag = self.np_random.integers(0, 256, 4, dtype=np.uint8)
        self._step = 0
        return self._frame(0), self._info(False)

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        self._step += 1
        clear = self._step >= self.episode_steps
        return self._frame(int(action)), float(action), clear, False, self._info(clear)


gym.register(ENV_ID, entry_point=SyntheticMario)


def frame_origin(frame: np.ndarray) -> tuple[bytes, int, int]:
    """What a synthetic frame says of itself: (episode tag, step in the episode, action that led to it)."""
    row = frame[0]
    return row[TAG_BYTES].tobytes(), int(row[STEP_BYTES].view("<u2")[0]), int(row[ACTION_BYTE])


def make_env(cfg: EnvConfig, episode_steps: int = 100) -> gym.Env:
    """One synthetic worker: (frame_stack, size, size) uint8 stacks, env.max_episode_steps applied."""
    env = gym.make(ENV_ID, size=cfg.frame_size, actions=num_actions(cfg.actions), episode_steps=episode_steps)
    if cfg.max_episode_steps:
        env = TimeLimit(env, cfg.max_episode_steps)
    return FrameStackObservation(env, cfg.frame_stack, padding_type="reset")


def make_vector_env(cfg: EnvConfig, episode_steps: int = 100) -> gym.vector.VectorEnv:
    """``cfg.num_envs`` synthetic workers in the vector env the Mario workers use (``cfg.vector``)."""
    return vectorize([functools.partial(make_env, cfg, episode_steps) for _ in range(cfg.num_envs)], cfg.vector)
