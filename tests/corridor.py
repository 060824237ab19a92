"""A small deterministic Gymnasium env that the real pipeline can learn in seconds: a corridor.

At position i only the action ``path[i]`` moves Mario on (+1 reward); any other action ends
the episode there (terminated, no reward). Reaching the end of the corridor ends the episode
with ``flag_get``. So exactly one action sequence reaches the goal, with return ``len(path)``;
a uniform random policy over 5 actions gets there once in 5^len(path) episodes. Frames are
84x84 uint8, blank but for a white band at the position, as the Mario workers' frames are
uint8 84x84; ``info`` carries ``x_pos`` (the position) and ``flag_get`` like theirs.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import FrameStackObservation

from mario_rl.config import EnvConfig

PATH = (3, 1, 4, 0, 2)  # the one action sequence that reaches the goal
NUM_ACTIONS = 5  # as env.actions=right_only, so the DQN's Q head fits


class Corridor(gym.Env):
    """Positions 0 .. len(path); observations (size, size) uint8 with a white band at the position."""

    def __init__(self, path: tuple[int, ...] = PATH, size: int = 84):
        self.path = path
        self.size = size
        self.band = size // (len(path) + 1)
        self.observation_space = gym.spaces.Box(0, 255, (size, size), np.uint8)
        self.action_space = gym.spaces.Discrete(NUM_ACTIONS)
        self.pos = 0

    def _frame(self) -> np.ndarray:
        frame = np.zeros((self.size, self.size), dtype=np.uint8)
        frame[:, self.pos * self.band : (self.pos + 1) * self.band] = 255
        return frame

    def _info(self) -> dict[str, Any]:
        return {"x_pos": self.pos, "flag_get": self.pos == len(self.path)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.pos = 0
        return self._frame(), self._info()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if int(action) != self.path[self.pos]:
            return self._frame(), 0.0, True, False, self._info()
        self.pos += 1
        return self._frame(), 1.0, self.pos == len(self.path), False, self._info()


def corridor(frame_stack: int) -> gym.Env:
    """One corridor with the frame stack the agent sees, padded like the Mario workers'."""
    return FrameStackObservation(Corridor(), frame_stack, padding_type="reset")


def corridor_envs(cfg: EnvConfig) -> gym.vector.VectorEnv:
    """``make_envs`` for the ExperienceStream and DQN: ``cfg.num_envs`` corridors in-process."""
    return SyncVectorEnv(
        [lambda: corridor(cfg.frame_stack) for _ in range(cfg.num_envs)], autoreset_mode=AutoresetMode.SAME_STEP
    )
