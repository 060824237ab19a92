"""From level names to the uint8 frames the agent sees.

Per worker: levels and start states (levels.py) -> [classic reward] -> [jump release]
-> JoypadSpace(actions) [-> frame tap] -> skip + max-pool over gray frames -> resize to 84 [-> crop]
-> [time limits] -> frame stack.
Workers run in a Gymnasium vector env; observations stay uint8 until the network.
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable
from multiprocessing import resource_tracker
from typing import Any, SupportsFloat

import cv2
import gymnasium as gym
import numpy as np
from gym_super_mario_bros.actions import COMPLEX_MOVEMENT, RIGHT_ONLY, SIMPLE_MOVEMENT
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import FrameStackObservation, TimeLimit
from nes_py.nes_env import OBSERVATION_MODE_GRAYSCALE
from nes_py.wrappers import JoypadSpace

from mario_rl.config import EnvConfig
from mario_rl.levels import LevelSet
from mario_rl.stopping import STOPS, stops_blocked

ACTION_SETS: dict[str, list[list[str]]] = {
    "right_only": RIGHT_ONLY,
    "simple": SIMPLE_MOVEMENT,
    "complex": COMPLEX_MOVEMENT,
}

# Keys of the emulator's info dict that training and evaluation read; the rest is dropped in
# the worker so the vector env does not ship ~30 keys per step between processes.
INFO_KEYS = ("x_pos", "flag_get", "time", "life", "world", "stage", "level", "restored")

CLASSIC_REWARD_CLIP = 15.0

# NES controller bit of the A (jump) button, as nes-py's JoypadSpace encodes it.
BUTTON_A = 0b00000001
# SMB RAM: Mario's float state, 0 while he stands or walks on the ground, 1-3 in the air.
RAM_FLOAT_STATE = 0x001D

# Receives every NES frame (240x256x3 uint8, nes-py's shared screen buffer: copy to keep it),
# that frame's reward and the emulator's full info dict.
FrameSink = Callable[[np.ndarray, float, dict[str, Any]], None]


class ClassicReward(gym.Wrapper):
    """The 7.x reward every published Mario result used, rebuilt from the 9.x info.

    Per NES frame: x-progress (x_t - x_{t-1}, zeroed when |dx| > 5, i.e. on warps and resets)
    plus the clock penalty plus the death penalty (-25), clipped to [-15, 15]. The 9.x
    package reward instead pays only new best x and adds score, coins, power-ups and +50
    for the flag; it is kept in ``info["package_reward"]`` for comparison.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._x_last = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._x_last = int(info["x_pos"])
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, package_reward, terminated, truncated, info = self.env.step(action)
        x = int(info["x_pos"])
        dx = x - self._x_last
        self._x_last = x
        if abs(dx) > 5:
            dx = 0
        parts = info["reward_components"]
        reward = dx + parts["time"] + parts["death"]
        info["package_reward"] = package_reward
        return obs, float(np.clip(reward, -CLASSIC_REWARD_CLIP, CLASSIC_REWARD_CLIP)), terminated, truncated, info


class JumpRelease(gym.Wrapper):
    """Let go of A for one frame when Mario has stood on the ground with A held for two frames.

    The game starts a jump only on a fresh press of A. An agent that picks a jump action on
    consecutive steps holds A through the landing and cannot jump again until it picks an
    action without A, and its frames do not show that A is held: an agent trained on the raw pad
    stood pinned against a pipe choosing right+A+B (docs/RESULTS.md). In the air nothing changes, so a
    held A still makes the high jump. Two frames, not one, because the float state turns
    from ground to air one frame after the press that starts a jump. Sits between the raw
    env and JoypadSpace, on controller bytes, once per NES frame.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._held_on_ground = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self._held_on_ground = 0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        buttons = int(action)
        if self._held_on_ground >= 2:
            buttons &= ~BUTTON_A
        result = self.env.step(buttons)
        # Read through the env each frame: a LevelSet switches emulators (and their RAM) at reset.
        held = buttons & BUTTON_A and self.env.unwrapped.ram[RAM_FLOAT_STATE] == 0
        self._held_on_ground = self._held_on_ground + 1 if held else 0
        return result


class SkipMaxGray(gym.Wrapper):
    """Repeat the action ``skip`` NES frames, sum rewards, max-pool the last two gray frames.

    Reads nes-py's native grayscale copy of the screen, several times cheaper than converting
    the RGB view (docs/BENCHMARKS.md), and copies into its own buffers: nes-py returns one shared screen
    array, so keeping references would pool nothing. On an early end inside the window the
    last frame is used alone (Gymnasium's MaxAndSkipObservation pools stale frames then).
    """

    def __init__(self, env: gym.Env, skip: int):
        super().__init__(env)
        self._skip = skip
        self._nes = env.unwrapped
        self._frames = np.zeros((2, 240, 256), dtype=np.uint8)
        self.observation_space = gym.spaces.Box(0, 255, (240, 256), np.uint8)

    def _grab(self, slot: int) -> None:
        self._nes.observation(OBSERVATION_MODE_GRAYSCALE, output=self._frames[slot])

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        _, info = self.env.reset(**kwargs)
        self._grab(1)
        return self._frames[1].copy(), info

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        total = 0.0
        terminated = truncated = False
        info: dict[str, Any] = {}
        for i in range(self._skip):
            _, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                self._grab(1)
                return self._frames[1].copy(), total, terminated, truncated, info
            if i >= self._skip - 2:
                self._grab(i - (self._skip - 2))
        return np.maximum(self._frames[0], self._frames[1]), total, terminated, truncated, info


class FrameTap(gym.Wrapper):
    """Hands every NES frame, full size and in colour, to ``sink``: the frames videos are made of.

    It sits below the frame skip, where all ``frame_skip`` frames of an agent step pass, not
    only the max-pooled gray one the agent sees. Opt-in (``make_env(frame_sink=...)``): the
    training workers never pay for it.
    """

    def __init__(self, env: gym.Env, sink: FrameSink):
        super().__init__(env)
        self._sink = sink

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._sink(obs, 0.0, info)
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._sink(obs, float(reward), info)
        return obs, reward, terminated, truncated, info


class ResizeCrop(gym.ObservationWrapper):
    """Area-resize the 240x256 gray frame to ``size`` x ``size``.

    With ``crop`` it follows the notebook: resize to size x (size * 110 / 84) and keep the
    middle rows, dropping the score bar. cv2 in one call runs 30% faster end to end than
    Gymnasium's GrayscaleObservation + ResizeObservation (benchmarks/throughput.py).
    """

    def __init__(self, env: gym.Env, size: int, crop: bool):
        super().__init__(env)
        self._size = size
        self._crop = crop
        self._tall = round(size * 110 / 84)
        self._top = round(size * 18 / 84)
        self.observation_space = gym.spaces.Box(0, 255, (size, size), np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        if not self._crop:
            return cv2.resize(observation, (self._size, self._size), interpolation=cv2.INTER_AREA)
        tall = cv2.resize(observation, (self._size, self._tall), interpolation=cv2.INTER_AREA)
        return tall[self._top : self._top + self._size]


class NoProgressTimeout(gym.Wrapper):
    """Truncate an episode when Mario's best x has not grown for ``patience`` agent steps.

    A Mario stuck against a pipe otherwise burns the whole 400-tick clock (~2,400 steps)
    teaching nothing; truncation (not termination) lets the target still bootstrap.
    """

    def __init__(self, env: gym.Env, patience: int):
        super().__init__(env)
        self._patience = patience
        self._best_x = 0
        self._since_best = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._best_x = int(info["x_pos"])
        self._since_best = 0
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        x = int(info["x_pos"])
        if x > self._best_x:
            self._best_x = x
            self._since_best = 0
        else:
            self._since_best += 1
        if self._since_best >= self._patience:
            truncated = True
        return obs, reward, terminated, truncated, info


class SlimInfo(gym.Wrapper):
    """Keep only INFO_KEYS (and the package reward) in info; see INFO_KEYS for why."""

    def _slim(self, info: dict[str, Any]) -> dict[str, Any]:
        keep = {k: info[k] for k in INFO_KEYS}
        if "package_reward" in info:
            keep["package_reward"] = info["package_reward"]
        return keep

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return obs, self._slim(info)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._slim(info)


def level_set(cfg: EnvConfig, level: str | None = None, render_mode: str | None = None) -> LevelSet:
    """The bottom of a worker's stack: the training levels, their sampling and start states; or,
    with ``level``, that one level always from its start (evaluation and videos)."""
    if level is not None:
        return LevelSet(cfg.game, [level], frame_skip=cfg.frame_skip, render_mode=render_mode)
    return LevelSet(
        cfg.game,
        cfg.training_levels,
        sampling=cfg.level_sampling,
        window=cfg.level_window,
        floor=cfg.level_floor,
        start_states=cfg.start_states,
        start_state_prob=cfg.start_state_prob,
        pool_size=cfg.start_state_pool,
        lead=cfg.start_state_lead,
        frame_skip=cfg.frame_skip,
        render_mode=render_mode,
    )


def make_env(
    cfg: EnvConfig, level: str | None = None, render_mode: str | None = None, frame_sink: FrameSink | None = None
) -> gym.Env:
    """One worker's env: uint8 observations of shape (frame_stack, size, size).

    Without ``level`` it plays the training levels (``cfg.training_levels``) as configured; with
    one, that level from its start, never from a start state. ``frame_sink`` additionally
    receives every full-size NES frame (see FrameTap), for videos.
    """
    env: gym.Env = level_set(cfg, level, render_mode)
    if cfg.reward == "classic":
        env = ClassicReward(env)
    if cfg.release_jump:
        env = JumpRelease(env)
    env = JoypadSpace(env, ACTION_SETS[cfg.actions])
    if frame_sink is not None:
        env = FrameTap(env, frame_sink)
    env = SkipMaxGray(env, cfg.frame_skip)
    env = ResizeCrop(env, cfg.frame_size, cfg.crop)
    if cfg.max_episode_steps:
        env = TimeLimit(env, cfg.max_episode_steps)
    if cfg.stuck_patience:
        env = NoProgressTimeout(env, cfg.stuck_patience)
    env = SlimInfo(env)
    return FrameStackObservation(env, cfg.frame_stack, padding_type="reset")


def make_vector_env(cfg: EnvConfig, level: str | None = None) -> gym.vector.VectorEnv:
    """``cfg.num_envs`` Mario workers (see ``vectorize``)."""
    return vectorize([functools.partial(make_env, cfg, level) for _ in range(cfg.num_envs)], cfg.vector)


def vectorize(fns: list[Callable[[], gym.Env]], vector: str) -> gym.vector.VectorEnv:
    """A vector env of one worker per env factory: ``async`` worker processes or ``sync`` in this one.

    Workers reset themselves in the step that ends an episode (SAME_STEP) and hand back the
    final observation in ``info["final_obs"]``, which the replay needs to bootstrap time-outs.
    """
    if vector == "async":
        return worker_processes(fns)
    return SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)


def ignoring_stops(make: Callable[[], gym.Env], learner_pid: int) -> gym.Env:
    """Build a worker process's env with SIGINT, SIGTERM and SIGHUP ignored in that process (not
    in the learner's, ``learner_pid``, where AsyncVectorEnv builds one env to read the spaces).

    A terminal's Ctrl-C (and ``timeout -s INT``, ``kill -INT -PGID``) reaches every process of
    the foreground group, the env workers too, and so does a SIGTERM to the group (``kill -TERM
    -PGID``, systemd's stop, Slurm's ``scancel``) and the SIGHUP a shell sends its jobs when its
    terminal closes. The learner stops at its next env step, reads
    the workers' start states into last.ckpt and closes the workers itself (mario_rl/stopping.py);
    a worker that died of the signal first would take its start states with it. A worker still
    ends when the learner's end closes its pipe, and a forced close kills it (``worker_processes``).
    A stop that came before this, while the worker was forked and read its env factory, is
    pending in it (``worker_processes``): ignoring it drops it.
    """
    if os.getpid() != learner_pid:
        for sig in STOPS:
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
    return make()


def worker_processes(fns: list[Callable[[], gym.Env]]) -> AsyncVectorEnv:
    """One forkserver process per env, each ignoring Ctrl-C, SIGTERM and SIGHUP (``ignoring_stops``),
    reset in the step that ends an episode.

    A worker can set no handler before it has imported and unpickled its env factory (a second
    or more), and a stop to the run's process group in that time (Slurm pre-empting a job that
    has just started) would end it. The signals are blocked while the workers start: the
    forkserver, started by the first call, inherits the blocked mask, and so does every worker
    it forks, until ``ignoring_stops`` ignores them. The resource tracker is started before the
    block: its start unblocks SIGINT and SIGTERM in the thread that starts it
    (multiprocessing.resource_tracker).
    """
    resource_tracker.ensure_running()
    with stops_blocked():
        envs = AsyncVectorEnv(
            [functools.partial(ignoring_stops, fn, os.getpid()) for fn in fns],
            autoreset_mode=AutoresetMode.SAME_STEP,
            context="forkserver",
        )
    for process in envs.processes:
        # Gymnasium's forced close (close(terminate=True), a close that timed out, and the one in
        # AsyncVectorEnv.__del__) ends workers with terminate(), whose SIGTERM they ignore, then
        # joins them without a timeout: it must be SIGKILL.
        process.terminate = process.kill
    return envs


def num_actions(actions: str) -> int:
    """Size of the discrete action space of an action set."""
    return len(ACTION_SETS[actions])
