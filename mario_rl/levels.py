"""Which level each training episode plays, and where in it the episode starts.

Per worker: a ``LevelSet`` is the bottom of the wrapper stack (envs.py). It holds one
emulator per level it has played, so switching level is a reset of another emulator in
the same process, never a new worker. At every reset it

1. draws the episode's level (``LevelSampler``: uniform, or adaptive toward failing levels),
2. with ``start_states=frontier`` and probability ``start_state_prob``, begins the episode
   from a saved emulator state of that level (``StartStatePool``) instead of the level start.

Everything above it (reward, frame skip, time limits, frame stack) sees an ordinary reset,
so a restored start is an episode start for the whole pipeline: frame stack, replay stacks
and n-step windows, the classic reward's x reference, the stuck-Mario timeout and the
episode statistics.

Start states are nes-py snapshots (``dump_state``/``load_state``), which are opaque native
objects and cannot be written to a file. Each one is therefore kept with its *prefix*: the
controller byte of every NES frame from the level start to the snapshot. The emulator is
deterministic, so replaying the prefix from the level start rebuilds the snapshot exactly;
that is how a checkpoint stores the pool and how a resumed worker gets it back (lazily,
the first time an entry is drawn). The idea of restarting from states along the agent's own
failed trajectories follows Go-Explore (Ecoffet et al. 2021) and backplay-style curricula.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, SupportsFloat

import gym_super_mario_bros
import gymnasium as gym
import numpy as np

# x_pos at which Mario takes the flag, measured on this project's clears (x_pos max of every
# cleared evaluation episode). Progress as a fraction of the level is logged only where known.
FLAG_X: dict[str, int] = {"1-1": 3161}


def split_level(level: str, game: str) -> tuple[str, str]:
    """('lost_levels:1-1', 'smb') -> ('lost_levels', '1-1'); a bare 'W-S' is a level of ``game``."""
    if ":" in level:
        prefix, stage = level.split(":", 1)
        return prefix, stage
    return game, level


def env_id(game: str, level: str) -> str:
    """Gymnasium id of a single-stage level, e.g. ('smb', '1-1') -> 'SuperMarioBros-1-1-v0';
    a level may name its own game: ('smb', 'lost_levels:1-1') -> 'SuperMarioBros2-1-1-v0'."""
    game, stage = split_level(level, game)
    prefix = {"smb": "SuperMarioBros", "lost_levels": "SuperMarioBros2"}[game]
    return f"{prefix}-{stage}-v0"


def level_tag(level: str) -> str:
    """A level's name in metric tags and file names: '1-1', 'lost_levels-1-1'."""
    return level.replace(":", "-")


def flag_fraction(level: str, x_pos: float) -> float | None:
    """x_pos as a fraction of the distance to the level's flag, where that distance is known."""
    flag = FLAG_X.get(level)
    return None if flag is None else min(1.0, x_pos / flag)


class LevelSampler:
    """Draws the level of each new episode.

    ``uniform``: every level with the same probability. ``adaptive``: level l with probability
    proportional to max(floor, f_l), where f_l is the fraction of the last ``window`` episodes
    of l, started at the level start, that did not reach the flag (1 while l has none). A
    level the agent clears every time keeps the floor's share, so it is still practised;
    a level it always fails gets 1 / floor times as much. Only episodes from the level start
    count: one restored near the flag says little about the level.
    """

    def __init__(self, levels: list[str], mode: str, window: int, floor: float):
        self.levels = list(levels)
        self.mode = mode
        self.floor = floor
        self.outcomes: dict[str, deque[bool]] = {level: deque(maxlen=window) for level in self.levels}

    def weights(self) -> np.ndarray:
        """Drawing probabilities in the order of ``levels``, shape (len(levels),), float64, summing to 1."""
        if self.mode == "uniform":
            w = np.ones(len(self.levels))
        else:
            fail = [1.0 - sum(o) / len(o) if o else 1.0 for o in self.outcomes.values()]
            w = np.maximum(self.floor, np.asarray(fail, dtype=np.float64))
        return w / w.sum()

    def draw(self, rng: np.random.Generator) -> str:
        if len(self.levels) == 1:
            return self.levels[0]
        return self.levels[int(rng.choice(len(self.levels), p=self.weights()))]

    def record(self, level: str, cleared: bool) -> None:
        """Count a finished episode that started at the level start."""
        if level in self.outcomes:
            self.outcomes[level].append(bool(cleared))


@dataclass
class StartState:
    """A place inside a level to begin an episode from.

    ``prefix``: controller byte of every NES frame from the level start to this state, uint8,
    shape (frames,). ``snapshot``: the emulator state, rebuilt from the prefix when missing.
    """

    x_pos: int
    prefix: np.ndarray
    snapshot: Any = field(default=None, repr=False)


class StartStatePool:
    """Per level, the ``size`` most recent start states, each taken ``lead`` agent steps before a
    training episode ended in a death or a time-out: the frontier where the agent fails.

    A draw is uniform over a level's entries, so the pool follows where recent episodes fail.
    """

    def __init__(self, levels: list[str], size: int):
        self.entries: dict[str, deque[StartState]] = {level: deque(maxlen=size) for level in levels}

    def __len__(self) -> int:
        return sum(len(d) for d in self.entries.values())

    def add(self, level: str, state: StartState) -> None:
        if level in self.entries:
            self.entries[level].append(state)

    def draw(self, level: str, rng: np.random.Generator) -> StartState | None:
        entries = self.entries.get(level)
        if not entries:
            return None
        return entries[int(rng.integers(len(entries)))]

    def state_dict(self) -> dict[str, list[dict[str, Any]]]:
        """Plain data (x_pos and prefix bytes per entry) that a checkpoint can hold."""
        return {
            level: [{"x_pos": s.x_pos, "prefix": s.prefix.tobytes()} for s in entries]
            for level, entries in self.entries.items()
        }

    def load_state_dict(self, state: dict[str, list[dict[str, Any]]]) -> None:
        """Entries of the levels this pool keeps; their snapshots are rebuilt when first drawn."""
        for level, saved in state.items():
            for entry in saved:
                self.add(level, StartState(int(entry["x_pos"]), np.frombuffer(entry["prefix"], dtype=np.uint8).copy()))


class LevelSet(gym.Env):
    """The raw emulator of the level being played, switched at each reset; see the module docstring.

    Observations, actions and info are those of gym-super-mario-bros' single-stage envs
    (240x256x3 uint8 screen, a controller byte per NES frame); info adds ``level`` (str) and
    ``restored`` (True when the episode began from a start state). ``frame_skip`` is the
    agent step in NES frames: start states are taken on agent-step boundaries.
    """

    def __init__(
        self,
        game: str,
        levels: list[str],
        sampling: str = "uniform",
        window: int = 20,
        floor: float = 0.1,
        start_states: str = "off",
        start_state_prob: float = 0.0,
        pool_size: int = 1,
        lead: int = 1,
        frame_skip: int = 4,
        render_mode: str | None = None,
    ):
        self.game = game
        self.levels = list(levels)
        self.render_mode = render_mode
        self.sampler = LevelSampler(self.levels, sampling, window, floor)
        self.frontier = start_states == "frontier"
        self.start_state_prob = start_state_prob
        self.pool = StartStatePool(self.levels, pool_size)
        self.frame_skip = frame_skip
        self._emulators: dict[str, Any] = {}
        self.level = self.levels[0]
        self.nes = self._emulator(self.level)
        # worker_state: the collectors save and restore this env's worker_state (collectors.keeps_worker_state)
        self.metadata = {**self.nes.metadata, "worker_state": True}
        self.observation_space = self.nes.observation_space
        self.action_space = self.nes.action_space
        self._rng = np.random.default_rng()
        self.restored = False
        self._base = np.zeros(0, dtype=np.uint8)  # the restored start's prefix
        self._buttons: list[int] = []
        # Snapshots every `every` agent steps, the last few of the episode: (frame, x_pos, snapshot).
        # The oldest lies lead to lead + every agent steps before the newest; a snapshot is about
        # 260 KB, so the episode keeps five rather than one per agent step.
        every = max(1, lead // 4)
        self._snapshot_frames = every * frame_skip
        self._recent: deque[tuple[int, int, Any]] = deque(maxlen=math.ceil(lead / every) + 1)
        self._flag = False
        self._x = 0

    def _emulator(self, level: str) -> Any:
        """The emulator of ``level``, made the first time the level is played (about 0.25 s)."""
        if level not in self._emulators:
            env = gym_super_mario_bros.make(env_id(self.game, level), render_mode=self.render_mode)
            self._emulators[level] = env.unwrapped
        return self._emulators[level]

    @property
    def ram(self) -> np.ndarray:
        """The current level's RAM (2 KB, uint8), as nes-py exposes it."""
        return self.nes.ram

    def observation(self, mode: Any, output: np.ndarray | None = None) -> np.ndarray:
        """nes-py's screen copy (e.g. its native grayscale) of the current level's emulator."""
        return self.nes.observation(mode, output=output)

    def render(self) -> Any:
        return self.nes.render()

    def _end_episode(self) -> None:
        """Book the episode that just ended: its outcome, and a start state if it failed."""
        if not self._buttons and not self.restored:
            return
        if not self.restored:
            self.sampler.record(self.level, self._flag)
        if self.frontier and not self._flag and self._recent and self._recent[0][0] > 0:
            frame, x_pos, snapshot = self._recent[0]
            prefix = np.concatenate([self._base, np.asarray(self._buttons[:frame], dtype=np.uint8)])
            self.pool.add(self.level, StartState(x_pos, prefix, snapshot))

    def _restore(self, state: StartState) -> None:
        """Load a start state into the current emulator, replaying its prefix if it has no snapshot."""
        if state.snapshot is None:
            for button in state.prefix:
                self.nes.step(int(button))
            state.snapshot = self.nes.dump_state()
        else:
            self.nes.load_state(state.snapshot)
        # nes-py's reset hooks: the package reward's references (time, best x, score) from RAM.
        self.nes._did_reset()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._end_episode()
        self.level = (options or {}).get("level") or self.sampler.draw(self._rng)
        self.nes = self._emulator(self.level)
        self.nes.reset(seed=seed)
        self.restored = False
        self._base = np.zeros(0, dtype=np.uint8)
        if self.frontier and self._rng.random() < self.start_state_prob:
            state = self.pool.draw(self.level, self._rng)
            if state is not None:
                self._restore(state)
                self.restored = True
                self._base = state.prefix
        self._buttons = []
        self._recent.clear()
        self._flag = False
        info = self.nes._get_info()
        self._x = int(info["x_pos"])
        self._mark_boundary()
        return self.nes.screen, self._info(info)

    def _mark_boundary(self) -> None:
        if self.frontier:
            self._recent.append((len(self._buttons), self._x, self.nes.dump_state()))

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        info["level"] = self.level
        info["restored"] = self.restored
        return info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.nes.step(action)
        self._buttons.append(int(action))
        self._flag = bool(info["flag_get"])
        self._x = int(info["x_pos"])
        if len(self._buttons) % self._snapshot_frames == 0 and not (terminated or truncated):
            self._mark_boundary()
        return obs, reward, terminated, truncated, self._info(info)

    @property
    def worker_state(self) -> dict[str, Any]:
        """What a checkpoint keeps of this worker: the start-state pool and the recent outcomes."""
        return {
            "pool": self.pool.state_dict(),
            "outcomes": {level: list(o) for level, o in self.sampler.outcomes.items()},
        }

    @worker_state.setter
    def worker_state(self, state: dict[str, Any]) -> None:
        self.pool.load_state_dict(state.get("pool", {}))
        for level, outcomes in state.get("outcomes", {}).items():
            if level in self.sampler.outcomes:
                self.sampler.outcomes[level].extend(bool(o) for o in outcomes)

    def close(self) -> None:
        for env in self._emulators.values():
            env.close()
        self._emulators.clear()


# Resident memory of one nes-py snapshot of an SMB emulator (it holds the 240x256 RGBA screen
# besides CPU, PPU and RAM state): the growth of a process holding 10,000 of them
# (benchmarks/levels.py).
SNAPSHOT_BYTES = 262_000
# A prefix holds a byte per NES frame: a whole level at the agent's pace is a few thousand.
PREFIX_BYTES = 4_000


def pool_nbytes(levels: int, pool_size: int, num_envs: int) -> int:
    """Upper estimate of a run's start-state memory in bytes: every worker's pool full (``pool_size``
    entries per level, each a snapshot and its prefix) plus its five recent snapshots."""
    per_worker = levels * pool_size * (SNAPSHOT_BYTES + PREFIX_BYTES) + 5 * SNAPSHOT_BYTES
    return num_envs * per_worker
