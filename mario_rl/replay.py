"""Replay of single uint8 frames, with frame stacks and n-step returns rebuilt at sample time.

Each vector-env worker writes its own stream (one row of the arrays), so a stream is the
exact sequence of frames that worker saw. A slot holds the newest frame of an observation
and the transition taken from it. When an episode ends the final frame gets a slot of its
own (no action: it is never sampled, only bootstrapped from on a time-out), and the reset
frame that follows is flagged ``first``. Stacks walk back from a slot and repeat the first
frame of the episode instead of crossing into the previous one, exactly as Gymnasium's
FrameStackObservation(padding_type="reset") does; so a stack rebuilt here equals the one the
actor saw. A 1,000,000-transition buffer of 84x84 frames takes about 7.07 GB.

Sampling is uniform over valid transitions, or, with ``prioritized``, proportional to
priority^alpha (Schaul et al. 2016) through a sum tree over all slots (mario_rl/priorities.py).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from mario_rl import atomic
from mario_rl.config import ConfigError
from mario_rl.priorities import SumTree

META = "meta.json"  # written last: a directory with it holds a whole save
OLD_SUFFIX = ".old"
_ARRAYS = ("frames", "actions", "rewards", "terminated", "truncated", "first", "has_action")
_NOTHING_TO_SAMPLE = "replay: no valid transition to sample; is learning_starts too small?"


def available_ram_bytes() -> int:
    """MemAvailable from /proc/meminfo (what can be allocated without swapping)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def replay_nbytes(capacity: int, frame_shape: tuple[int, int], prioritized: bool = False) -> int:
    """Bytes the arrays of a buffer of ``capacity`` slots will take once filled."""
    per_slot = int(np.prod(frame_shape)) + 1 + 4 + 4  # frame, action, reward, four flags
    if not prioritized:
        return capacity * per_slot
    return capacity * (per_slot + 4) + SumTree.nbytes(capacity)  # + a float32 priority per slot


def saved_replay(path: str | Path) -> Path | None:
    """The directory holding the last whole save of ``ReplayBuffer.save(path)``: ``path``, or
    ``<path>.old`` when a crash fell between its two renames; None when there is none."""
    path = Path(path)
    for candidate in (path, path.with_name(path.name + OLD_SUFFIX)):
        if (candidate / META).is_file():
            return candidate
    return None


class ReplayBuffer:
    """Preallocated ring of ``capacity`` slots split evenly over ``num_envs`` streams.

    With ``prioritized``, slot (env, slot) is leaf ``env * per_env + slot`` of a sum tree.
    Which slots may be sampled changes as the cursor moves (see ``_valid``): a transition
    becomes valid once its n-step window is written, and invalid when the cursor comes
    within a frame stack of it. Rather than drawing and redrawing, the tree holds
    priority^alpha exactly on valid slots and 0 elsewhere: every cursor move re-checks the
    few slots whose validity it can change (``_refresh_leaves``). So every draw is valid, the
    tree's total is the mass of valid transitions and the importance weights use the very
    probabilities the batch was drawn with. Each slot's priority is kept in ``priorities``
    while its leaf is 0, so a slot gets it back when it becomes valid.
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        frame_shape: tuple[int, int],
        frame_stack: int,
        n_step: int,
        gamma: float,
        seed: int,
        max_ram_fraction: float = 0.8,
        prioritized: bool = False,
        priority_alpha: float = 0.6,
        priority_eps: float = 1e-6,
    ):
        need = replay_nbytes(capacity, frame_shape, prioritized)
        have = available_ram_bytes()
        if need > max_ram_fraction * have:
            raise ConfigError(
                f"replay.capacity={capacity} needs {need / 1e9:.2f} GB of RAM but only "
                f"{have / 1e9:.2f} GB are available (replay.max_ram_fraction={max_ram_fraction}); "
                "lower replay.capacity"
            )
        self.nbytes = need
        self.num_envs = num_envs
        self.per_env = capacity // num_envs
        self.frame_stack = frame_stack
        self.n_step = n_step
        self.gamma = gamma
        self.rng = np.random.default_rng(seed)
        shape = (num_envs, self.per_env)
        self.frames = np.zeros((*shape, *frame_shape), dtype=np.uint8)
        self.actions = np.zeros(shape, dtype=np.uint8)
        self.rewards = np.zeros(shape, dtype=np.float32)
        self.terminated = np.zeros(shape, dtype=bool)
        self.truncated = np.zeros(shape, dtype=bool)
        self.first = np.zeros(shape, dtype=bool)
        self.has_action = np.zeros(shape, dtype=bool)
        self.cursor = np.zeros(num_envs, dtype=np.int64)
        self.written = np.zeros(num_envs, dtype=np.int64)
        self._envs = np.arange(num_envs)
        self.priority_alpha = priority_alpha
        self.priority_eps = priority_eps
        self.tree = SumTree(num_envs * self.per_env) if prioritized else None
        self.priorities: np.ndarray | None = np.zeros(shape, dtype=np.float32) if prioritized else None
        # New transitions enter at the largest priority seen so far, so they are among the
        # likeliest draws until their TD error is known (1 until a TD error exceeds it).
        self.max_priority = 1.0

    @property
    def capacity(self) -> int:
        return self.num_envs * self.per_env

    def __len__(self) -> int:
        """Stored transitions (slots with an action)."""
        return int(self.has_action.sum())

    def _write_frames(self, envs: np.ndarray, frames: np.ndarray, first: bool) -> None:
        slots = self.cursor[envs]
        self.frames[envs, slots] = frames
        self.first[envs, slots] = first
        self.has_action[envs, slots] = False
        self.terminated[envs, slots] = False
        self.truncated[envs, slots] = False
        self.cursor[envs] = (slots + 1) % self.per_env
        self.written[envs] += 1
        if self.tree is not None:
            self._refresh_leaves(envs)

    def _set_leaves(self, envs: np.ndarray, slots: np.ndarray) -> None:
        """Leaves of (env, slot): priority^alpha where the slot is valid, else 0."""
        valid = self._valid(envs, slots)
        mass = np.where(valid, self._mass(self.priorities[envs, slots]), 0.0)
        self.tree.set(envs * self.per_env + slots, mass)

    def _mass(self, priorities: np.ndarray) -> np.ndarray:
        """A tree leaf's value for a priority: priority^alpha, in float64 like the tree."""
        return priorities.astype(np.float64) ** self.priority_alpha

    def _refresh_leaves(self, envs: np.ndarray) -> None:
        """Re-check the slots whose validity a one-slot cursor move in ``envs`` can change.

        With the new cursor c: the slot just overwritten (c - 1), the one given its action by
        ``add`` (c - 2), the one whose n-step window just completed (c - 1 - n_step), and
        the one whose frame stack now reaches the overwritten frame (c + frame_stack - 2; when
        the ring fills, all of c .. c + frame_stack - 2 at once).
        """
        offsets = np.arange(-(self.n_step + 1), self.frame_stack - 1)
        slot_envs = np.repeat(envs, offsets.size)
        slots = (self.cursor[slot_envs] + np.tile(offsets, len(envs))) % self.per_env
        self._set_leaves(slot_envs, slots)

    def _streams(self, envs: np.ndarray | None) -> np.ndarray:
        return self._envs if envs is None else np.asarray(envs, dtype=np.int64)

    def start(self, frames: np.ndarray, envs: np.ndarray | None = None) -> None:
        """Begin an episode in streams ``envs`` (all if None) with their reset frames, shape (len(envs), H, W)."""
        self._write_frames(self._streams(envs), frames, first=True)

    def truncate_episodes(self, envs: np.ndarray | None = None) -> None:
        """Cut the running episode of streams ``envs`` (all if None) short, as a time-out, before a restart.

        After a resume, or when a collector's actor is restarted, the emulators start new
        episodes; the old ones' last transitions must neither run on into them (n-step) nor
        lose their bootstrap (a time-out keeps it).
        """
        envs = self._streams(envs)
        last = (self.cursor[envs] - 2) % self.per_env
        cut = (self.written[envs] >= 2) & self.has_action[envs, last]
        envs, last = envs[cut], last[cut]
        self.truncated[envs, last] |= ~self.terminated[envs, last]

    def add(
        self,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        next_frames: np.ndarray,
        reset_frames: np.ndarray | None = None,
        envs: np.ndarray | None = None,
    ) -> None:
        """Record one vector step of streams ``envs`` (all if None); arrays are indexed like ``envs``.

        ``next_frames`` are the newest frames after the step (the final frame where an
        episode ended); ``reset_frames`` the newest frames of the observations that start the
        next episodes, read only where ``terminated | truncated``.
        """
        envs = self._streams(envs)
        slots = (self.cursor[envs] - 1) % self.per_env
        self.actions[envs, slots] = actions
        self.rewards[envs, slots] = rewards
        self.terminated[envs, slots] = terminated
        self.truncated[envs, slots] = truncated
        self.has_action[envs, slots] = True
        if self.tree is not None:
            self.priorities[envs, slots] = self.max_priority
        self._write_frames(envs, next_frames, first=False)
        ended = np.flatnonzero(np.logical_or(terminated, truncated))
        if ended.size:
            assert reset_frames is not None, "an episode ended: reset_frames are needed"
            self._write_frames(envs[ended], reset_frames[ended], first=True)

    def _valid(self, envs: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Slots with an action whose stack and n-step window stay inside written data."""
        newest = (self.cursor[envs] - 1) % self.per_env
        ahead = (newest - slots) % self.per_env
        full = self.written[envs] >= self.per_env
        oldest = np.where(full, self.cursor[envs], 0)
        back = (slots - oldest) % self.per_env
        stored = slots < np.minimum(self.written[envs], self.per_env)
        # Before the ring wraps, slot 0 opens an episode, so a stack walk stops there anyway.
        intact = ~full | (back >= self.frame_stack - 1)
        return stored & self.has_action[envs, slots] & (ahead >= self.n_step) & intact

    def stacks(self, envs: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Frame stacks ending at (env, slot), oldest first: shape (B, frame_stack, H, W)."""
        out = np.empty((len(slots), self.frame_stack, *self.frames.shape[2:]), dtype=np.uint8)
        pos = slots.copy()
        out[:, -1] = self.frames[envs, pos]
        for j in range(self.frame_stack - 2, -1, -1):
            pos = np.where(self.first[envs, pos], pos, (pos - 1) % self.per_env)
            out[:, j] = self.frames[envs, pos]
        return out

    def n_step_targets(self, envs: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Discounted n-step reward sums, bootstrap discounts and bootstrap slots.

        The sum stops at the end of an episode; a termination zeroes the discount, a
        time-out keeps gamma^m and bootstraps from the final frame.
        """
        returns = np.zeros(len(slots), dtype=np.float32)
        scale = np.ones(len(slots), dtype=np.float32)
        active = np.ones(len(slots), dtype=bool)
        ended_terminal = np.zeros(len(slots), dtype=bool)
        pos = slots.copy()
        for _ in range(self.n_step):
            returns += np.where(active, scale * self.rewards[envs, pos], 0.0).astype(np.float32)
            scale = np.where(active, scale * self.gamma, scale).astype(np.float32)
            term = self.terminated[envs, pos]
            stop = active & (term | self.truncated[envs, pos])
            ended_terminal |= active & term
            pos = np.where(active, (pos + 1) % self.per_env, pos)
            active &= ~stop
        discounts = np.where(ended_terminal, 0.0, scale).astype(np.float32)
        return returns, discounts, pos

    def sample_indices(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Uniform over valid transitions, by rejection (invalid slots are a few per episode)."""
        sizes = np.minimum(self.written, self.per_env)
        envs = np.empty(batch_size, dtype=np.int64)
        slots = np.empty(batch_size, dtype=np.int64)
        todo = np.arange(batch_size)
        for _ in range(1000):
            e = self.rng.choice(self.num_envs, size=todo.size, p=sizes / sizes.sum())
            s = (self.rng.random(todo.size) * sizes[e]).astype(np.int64)
            ok = self._valid(e, s)
            envs[todo[ok]], slots[todo[ok]] = e[ok], s[ok]
            todo = todo[~ok]
            if todo.size == 0:
                return envs, slots
        raise RuntimeError(_NOTHING_TO_SAMPLE)

    def sample_prioritized(self, batch_size: int, beta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw in proportion to priority^alpha (stratified); envs, slots and importance weights.

        The weight of transition i is (N * P(i))^-beta divided by the largest weight in the
        buffer, that of the least likely transition: (P(i) / P_min)^-beta, N cancels. Weights
        are at most 1, so they only ever shrink a step (Schaul et al. 2016, section 3.4).
        """
        if self.tree.total <= 0:
            raise RuntimeError(_NOTHING_TO_SAMPLE)
        leaves = self.tree.sample(batch_size, self.rng)
        weights = (self.tree.get(leaves) / self.tree.min) ** -beta
        return leaves // self.per_env, leaves % self.per_env, weights.astype(np.float32)

    def update_priorities(self, envs: np.ndarray, slots: np.ndarray, td_errors: np.ndarray) -> None:
        """Set the priorities of sampled transitions to |TD error| + priority_eps.

        Lightning draws the next batch before it trains on this one, so the cursor may have
        moved on meanwhile. A drawn slot lies at least frame_stack - 1 slots ahead of the
        cursor, and once overwritten it is invalid until n_step frames follow it: an error
        that comes back within frame_stack + n_step - 1 writes of its worker finds either its
        own transition or an invalid slot, and is then dropped (the new transition keeps the
        max priority it came with). A vector step is one write per worker, two at an episode
        end; with the default cadence one or two steps pass between a draw and its update.
        """
        keep = self._valid(envs, slots)
        envs, slots = envs[keep], slots[keep]
        priorities = np.abs(td_errors[keep]).astype(np.float32) + np.float32(self.priority_eps)
        self.priorities[envs, slots] = priorities
        self.tree.set(envs * self.per_env + slots, self._mass(priorities))
        if priorities.size:
            self.max_priority = max(self.max_priority, float(priorities.max()))

    def sample(self, batch_size: int, beta: float = 1.0) -> dict[str, np.ndarray]:
        """A batch of uint8 stacks with n-step returns, ready for the Double-DQN loss.

        A prioritized buffer adds the importance ``weights`` (exponent ``beta``) and the
        ``envs`` and ``slots`` drawn, for ``update_priorities``.
        """
        prioritized: dict[str, np.ndarray] = {}
        if self.tree is None:
            envs, slots = self.sample_indices(batch_size)
        else:
            envs, slots, weights = self.sample_prioritized(batch_size, beta)
            prioritized = {"weights": weights, "envs": envs, "slots": slots}
        returns, discounts, next_slots = self.n_step_targets(envs, slots)
        return {
            "obs": self.stacks(envs, slots),
            "actions": self.actions[envs, slots].astype(np.int64),
            "returns": returns,
            "discounts": discounts,
            "next_obs": self.stacks(envs, next_slots),
            **prioritized,
        }

    def save(self, path: str | Path) -> None:
        """Write the buffer to directory ``path`` so that a crash at any moment leaves one whole copy.

        The arrays go to ``<path>.tmp``, each flushed to disk, ``meta.json`` last. Then the
        previous ``path`` is renamed to ``<path>.old`` and the new one to ``path``, and only then
        is the old one removed: a crash between the two renames leaves ``<path>.old``, which
        ``saved_replay`` finds. Every rename stays inside the parent directory, one filesystem.
        """
        path = Path(path)
        tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + OLD_SUFFIX)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        filled = int(min(self.written.max(), self.per_env))
        for name in self._saved_arrays():
            with atomic.flushed(tmp / f"{name}.npy") as f:
                np.save(f, getattr(self, name)[:, :filled])
        meta = {
            "cursor": self.cursor.tolist(),
            "written": self.written.tolist(),
            "per_env": self.per_env,
            "num_envs": self.num_envs,
            "frame_shape": list(self.frames.shape[2:]),
            "rng": self.rng.bit_generator.state,
            "max_priority": self.max_priority,
        }
        with atomic.flushed(tmp / META) as f:
            f.write(json.dumps(meta).encode())
        atomic.fsync_dir(tmp)
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)  # a leftover of an earlier crash; path is whole
            path.rename(old)
            atomic.fsync_dir(path.parent)
        tmp.rename(path)
        atomic.fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)

    def load(self, path: str | Path) -> None:
        """Restore a buffer written by ``save`` into this one (same shape); ``path`` as ``saved_replay`` finds it."""
        path = Path(path)
        try:
            meta = json.loads((path / META).read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"replay file {path}: unreadable ({err})") from None
        shape = [meta["num_envs"], meta["per_env"], *meta["frame_shape"]]
        if shape != list(self.frames.shape):
            raise ConfigError(f"replay file {path}: shape {shape} does not match this run's {list(self.frames.shape)}")
        unprioritized_save = self.tree is not None and not (path / "priorities.npy").exists()
        for name in _ARRAYS if unprioritized_save else self._saved_arrays():
            try:
                data = np.load(path / f"{name}.npy", mmap_mode="r")
            except (OSError, ValueError) as err:
                raise ConfigError(f"replay file {path / name}.npy: corrupt or truncated ({err})") from None
            getattr(self, name)[:, : data.shape[1]] = data
        self.cursor[:] = meta["cursor"]
        self.written[:] = meta["written"]
        self.rng.bit_generator.state = meta["rng"]
        if self.tree is not None:
            self.max_priority = meta.get("max_priority", 1.0)
            if unprioritized_save:  # a resume that turns prioritized replay on: all stored transitions at the max
                self.priorities[:] = np.where(self.has_action, self.max_priority, 0.0)
            envs, slots = np.divmod(np.arange(self.capacity), self.per_env)
            self._set_leaves(envs, slots)

    def _saved_arrays(self) -> tuple[str, ...]:
        """The per-slot arrays ``save`` writes: with priorities when prioritized."""
        return (*_ARRAYS, "priorities") if self.tree is not None else _ARRAYS
