"""Property test of the replay: what it rebuilds equals a naive walk over the episodes that were played.

Random episodes on several workers (terminations, time-outs, restarts as after a resume) are
fed to a small ReplayBuffer whose rings wrap many times. Each frame carries a unique id in its
pixels, so every stack the buffer rebuilds can be read back as ids. The reference keeps the
episodes as plain lists and computes, per transition, what the definitions say: the stack of
the last ``frame_stack`` observations padded with the episode's first frame (Gymnasium's
FrameStackObservation, padding_type="reset"), the n-step return cut at the episode's end, the
bootstrap discount (0 after a termination, gamma^m otherwise) and the stack bootstrapped from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from mario_rl.replay import ReplayBuffer

FRAME_SHAPE = (1, 2)  # two pixels: a frame id of up to 16 bits


@dataclass
class Episode:
    """One episode as played: frame ids (reset frame first), where each was written, and its end."""

    frames: list[int] = field(default_factory=list)
    writes: list[int] = field(default_factory=list)  # index of each frame in its worker's write stream
    actions: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    terminated: bool = False  # ended by a termination (no bootstrap); otherwise a time-out if ended
    ended: bool = False


@dataclass
class Transition:
    worker: int
    write: int
    action: int
    obs: list[int]
    n_step_return: float
    discount: float
    next_obs: list[int]


def encode(ids: np.ndarray) -> np.ndarray:
    """(N,) frame ids -> (N, 1, 2) uint8 frames."""
    return np.stack([ids % 256, ids // 256], axis=-1).astype(np.uint8)[:, None, :]


def decode(frames: np.ndarray) -> np.ndarray:
    """(..., 1, 2) uint8 frames -> (...) frame ids."""
    return frames[..., 0, 0].astype(np.int64) + 256 * frames[..., 0, 1].astype(np.int64)


def stack_at(episode: Episode, t: int, k: int) -> list[int]:
    """The observation at step t: frames t-k+1 .. t, the episode's first frame standing in before it."""
    return [episode.frames[max(0, t - k + 1 + j)] for j in range(k)]


class Reference:
    """The naive record of what the workers played, fed to the buffer step by step."""

    def __init__(self, num_envs: int, rng: np.random.Generator):
        self.rng = rng
        self.next_id = 0
        self.written = [0] * num_envs
        self.episodes: list[list[Episode]] = [[] for _ in range(num_envs)]
        self.cut = 0  # running episodes that a restart ended

    def new_frames(self, count: int) -> np.ndarray:
        ids = np.arange(self.next_id, self.next_id + count)
        self.next_id += count
        return ids

    def begin(self, workers: np.ndarray, ids: np.ndarray) -> None:
        for w, frame in zip(workers, ids, strict=True):
            self.episodes[w].append(Episode(frames=[int(frame)], writes=[self.written[w]]))
            self.written[w] += 1

    def step(self, buf: ReplayBuffer, p_terminate: float, p_truncate: float) -> None:
        n = buf.num_envs
        actions = self.rng.integers(0, 7, size=n)
        rewards = self.rng.integers(-15, 16, size=n) / 8.0  # exact in float32
        draw = self.rng.random(n)
        terminated = draw < p_terminate
        truncated = (draw >= p_terminate) & (draw < p_terminate + p_truncate)
        next_ids = self.new_frames(n)
        reset_ids = self.new_frames(n)
        buf.add(actions, rewards, terminated, truncated, encode(next_ids), encode(reset_ids))
        for w in range(n):
            ep = self.episodes[w][-1]
            ep.actions.append(int(actions[w]))
            ep.rewards.append(float(rewards[w]))
            ep.frames.append(int(next_ids[w]))
            ep.writes.append(self.written[w])
            self.written[w] += 1
            if terminated[w] or truncated[w]:
                ep.ended, ep.terminated = True, bool(terminated[w])
        ended = np.flatnonzero(terminated | truncated)
        self.begin(ended, reset_ids[ended])

    def restart(self, buf: ReplayBuffer) -> None:
        """Every worker starts a new episode, as after a resume; a running one ends as a time-out."""
        buf.truncate_episodes()
        for w in range(buf.num_envs):
            ep = self.episodes[w][-1]
            if ep.actions and not ep.ended:
                ep.ended = True
                self.cut += 1
        ids = self.new_frames(buf.num_envs)
        buf.start(encode(ids))
        self.begin(np.arange(buf.num_envs), ids)

    def transitions(self, k: int, n: int, gamma: float) -> list[Transition]:
        """Every transition whose n-step window has been played, with its targets by definition."""
        out = []
        for w, episodes in enumerate(self.episodes):
            for ep in episodes:
                for t, action in enumerate(ep.actions):
                    m = min(n, len(ep.actions) - t)
                    if m < n and not ep.ended:
                        continue  # the episode goes on: the window is not written yet
                    ret = sum(gamma**i * ep.rewards[t + i] for i in range(m))
                    ends_here = ep.ended and t + m == len(ep.actions)
                    discount = 0.0 if ends_here and ep.terminated else gamma**m
                    out.append(
                        Transition(w, ep.writes[t], action, stack_at(ep, t, k), ret, discount, stack_at(ep, t + m, k))
                    )
        return out


def expected_valid(tr: Transition, written: int, per_env: int, k: int, n: int) -> bool:
    """The buffer's sampling rule, as ReplayBuffer documents it: a transition may be drawn once
    n_step frames follow it, while it is stored, and, once the ring is full, while frame_stack - 1
    older slots stand between it and the write cursor."""
    oldest = max(0, written - per_env)
    full = written >= per_env
    return tr.write >= oldest and written - 1 - tr.write >= n and (not full or tr.write - oldest >= k - 1)


def play(seed: int) -> tuple[ReplayBuffer, Reference, dict]:
    rng = np.random.default_rng(seed)
    p = {
        "num_envs": int(rng.integers(1, 5)),
        "frame_stack": int(rng.integers(1, 5)),
        "n_step": int(rng.integers(1, 5)),
        "gamma": float(rng.choice([0.5, 0.9, 0.99, 1.0])),
        "p_terminate": float(rng.uniform(0.0, 0.15)),
        "p_truncate": float(rng.uniform(0.0, 0.15)),
        "p_restart": float(rng.choice([0.0, 0.02])),
        "steps": int(rng.integers(20, 200)),
    }
    per_env = int(rng.integers(p["frame_stack"] + p["n_step"] + 1, 40))
    buf = ReplayBuffer(
        capacity=per_env * p["num_envs"],
        num_envs=p["num_envs"],
        frame_shape=FRAME_SHAPE,
        frame_stack=p["frame_stack"],
        n_step=p["n_step"],
        gamma=p["gamma"],
        seed=seed,
    )
    ref = Reference(p["num_envs"], rng)
    ids = ref.new_frames(p["num_envs"])
    buf.start(encode(ids))
    ref.begin(np.arange(p["num_envs"]), ids)
    for _ in range(p["steps"]):
        if rng.random() < p["p_restart"]:
            ref.restart(buf)
        ref.step(buf, p["p_terminate"], p["p_truncate"])
    return buf, ref, p


@pytest.mark.parametrize("seed", range(200))
def test_replay_matches_a_naive_walk_over_random_episodes(seed: int):
    buf, ref, p = play(seed)
    k, n, gamma = p["frame_stack"], p["n_step"], p["gamma"]
    expected = {}
    for tr in ref.transitions(k, n, gamma):
        if expected_valid(tr, ref.written[tr.worker], buf.per_env, k, n):
            expected[(tr.worker, tr.write % buf.per_env)] = tr
    envs, slots = np.divmod(np.arange(buf.capacity), buf.per_env)
    valid = buf._valid(envs, slots)
    assert set(zip(envs[valid].tolist(), slots[valid].tolist(), strict=True)) == set(expected)
    if not expected:
        return
    envs, slots = np.array(list(expected)).T
    returns, discounts, next_slots = buf.n_step_targets(envs, slots)
    trs = list(expected.values())
    assert decode(buf.stacks(envs, slots)).tolist() == [tr.obs for tr in trs]
    assert buf.actions[envs, slots].tolist() == [tr.action for tr in trs]
    np.testing.assert_allclose(returns, [tr.n_step_return for tr in trs], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(discounts, [tr.discount for tr in trs], rtol=1e-6)
    assert decode(buf.stacks(envs, next_slots)).tolist() == [tr.next_obs for tr in trs]


@pytest.mark.parametrize("seed", range(20))
def test_sampled_batches_match_the_naive_walk(seed: int):
    """sample(), the path the learner takes: each drawn transition, found by its newest frame's id."""
    buf, ref, p = play(seed)
    by_newest_frame = {tr.obs[-1]: tr for tr in ref.transitions(p["frame_stack"], p["n_step"], p["gamma"])}
    if len(buf) == 0 or not buf._valid(*np.divmod(np.arange(buf.capacity), buf.per_env)).any():
        return
    batch = buf.sample(64)
    trs = [by_newest_frame[i] for i in decode(batch["obs"][:, -1]).tolist()]
    assert decode(batch["obs"]).tolist() == [tr.obs for tr in trs]
    assert batch["actions"].tolist() == [tr.action for tr in trs]
    np.testing.assert_allclose(batch["returns"], [tr.n_step_return for tr in trs], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(batch["discounts"], [tr.discount for tr in trs], rtol=1e-6)
    assert decode(batch["next_obs"]).tolist() == [tr.next_obs for tr in trs]


def test_the_random_episodes_cover_every_case():
    """The seeds above play terminations, time-outs, restarts, wrapped rings and several workers."""
    seen = {"terminated": False, "truncated": False, "restart": False, "wrapped": False, "workers": False}
    for seed in range(200):
        buf, ref, _ = play(seed)
        ends = [ep for episodes in ref.episodes for ep in episodes if ep.ended]
        seen["terminated"] |= any(ep.terminated for ep in ends)
        seen["truncated"] |= any(not ep.terminated for ep in ends)
        seen["restart"] |= ref.cut > 0
        seen["wrapped"] |= bool((buf.written > 2 * buf.per_env).any())
        seen["workers"] |= buf.num_envs > 1
    assert all(seen.values()), seen
