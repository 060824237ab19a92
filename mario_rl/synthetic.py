"""A synthetic env that costs nothing to step, to measure the pipeline around the emulators.

``SyntheticFrames`` hands back prepared uint8 frame stacks of the training env's shape and
the info keys the stream reads, so the actor, vector-env IPC, replay, Lightning's loop and
logging are all that is left to time (benchmarks/pipeline_ceiling.py). It is registered with
Gymnasium as ``mario_rl/SyntheticFrames-v0``.
"""

from __future__ import annotations

import functools
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from mario_rl.config import EnvConfig
from mario_rl.envs import num_actions, vectorize

ENV_ID = "mario_rl/SyntheticFrames-v0"


class SyntheticFrames(gym.Env):
    """Observations (frame_stack, frame_size, frame_size) uint8 from a cycle of ``pool`` random frames.

    After ``t`` steps of an episode the observation is the stack of frames t-frame_stack+1 .. t
    of the cycle, padded with frame 0 after a reset as FrameStackObservation(padding_type=
    "reset") pads: real frame stacks, so the replay can rebuild them from single frames. All
    stacks are made once; a step is a counter and an index, no copy, no emulation. Reward 1
    per step, ``x_pos`` = steps so far; an episode terminates after ``episode_steps`` env
    steps, never with the flag.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (Gymnasium's class attribute)

    def __init__(
        self, frame_stack: int = 4, frame_size: int = 84, actions: int = 5, episode_steps: int = 400, pool: int = 32
    ):
        if pool < frame_stack:
            raise ValueError(f"pool={pool} must be >= frame_stack={frame_stack}")
        frames = np.random.default_rng(0).integers(0, 256, (pool, frame_size, frame_size), dtype=np.uint8)
        # stack t holds frames max(0, t - frame_stack + 1) .. t (mod pool); the frame_stack - 1
        # padded ones come first, then the pool unpadded ones that repeat
        index = np.arange(pool + frame_stack - 1)[:, None] + np.arange(1 - frame_stack, 1)[None, :]
        self._stacks = frames[np.where(index < 0, 0, index % pool)]
        self._padded = frame_stack - 1
        self._pool = pool
        self._episode_steps = episode_steps
        self._t = 0
        self.observation_space = gym.spaces.Box(0, 255, self._stacks.shape[1:], np.uint8)
        self.action_space = gym.spaces.Discrete(actions)

    def _info(self) -> dict[str, Any]:
        return {"x_pos": self._t, "flag_get": False}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t = 0
        return self._stacks[0], self._info()

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        self._t += 1
        row = min(self._t, self._padded + (self._t - self._padded) % self._pool)
        return self._stacks[row], 1.0, self._t >= self._episode_steps, False, self._info()


gym.register(ENV_ID, entry_point=SyntheticFrames)


def make_synthetic_env(cfg: EnvConfig) -> gym.Env:
    """One synthetic worker with the observation and action spaces ``cfg`` gives the Mario env;
    its episodes last ``cfg.max_episode_steps`` env steps (400 when null)."""
    return gym.make(
        ENV_ID,
        frame_stack=cfg.frame_stack,
        frame_size=cfg.frame_size,
        actions=num_actions(cfg.actions),
        episode_steps=cfg.max_episode_steps or 400,
        disable_env_checker=True,
    )


def make_synthetic_vector_env(cfg: EnvConfig) -> gym.vector.VectorEnv:
    """``cfg.num_envs`` synthetic workers in the vector env the Mario workers use (``cfg.vector``:
    worker processes or this one), reset in the step that ends an episode."""
    return vectorize([functools.partial(make_synthetic_env, cfg)] * cfg.num_envs, cfg.vector)
