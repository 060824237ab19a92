import numpy as np
import pytest

from mario_rl.config import ConfigError
from mario_rl.replay import ReplayBuffer, replay_nbytes


def frame(value: int) -> np.ndarray:
    return np.full((1, 2, 2), value, dtype=np.uint8)


def make(per_env=10, stack=3, n_step=1, gamma=0.5, num_envs=1) -> ReplayBuffer:
    return ReplayBuffer(per_env * num_envs, num_envs, (2, 2), stack, n_step, gamma, seed=0)


def step(buf, action, reward, nxt, term=False, trunc=False, reset=None):
    buf.add(
        np.array([action]),
        np.array([reward], dtype=np.float32),
        np.array([term]),
        np.array([trunc]),
        frame(nxt),
        frame(reset if reset is not None else 0),
    )


def values(stacks: np.ndarray) -> list[list[int]]:
    """Each stack as the list of its frames' fill values, oldest first."""
    return [[int(f[0, 0]) for f in s] for s in stacks]


def episode_pair(buf):
    """Episode A: frames 1,2,3 (terminated after 2 steps); episode B: frames 4,5,6 (running)."""
    buf.start(frame(1))
    step(buf, 0, 1.0, 2)
    step(buf, 1, 2.0, 3, term=True, reset=4)
    step(buf, 2, 4.0, 5)
    step(buf, 3, 8.0, 6)


def test_stacks_repeat_first_frame_and_never_cross_an_episode_start():
    buf = make()
    episode_pair(buf)
    env = np.zeros(6, dtype=np.int64)
    # slots: 0:f1(first) 1:f2 2:f3(final, no action) 3:f4(first) 4:f5 5:f6(newest)
    got = values(buf.stacks(env, np.arange(6)))
    assert got == [[1, 1, 1], [1, 1, 2], [1, 2, 3], [4, 4, 4], [4, 4, 5], [4, 5, 6]]


def test_only_slots_with_an_action_and_a_written_successor_are_sampled():
    buf = make()
    episode_pair(buf)
    env = np.zeros(6, dtype=np.int64)
    assert buf._valid(env, np.arange(6)).tolist() == [True, True, False, True, True, False]
    assert len(buf) == 4
    _envs, slots = buf.sample_indices(200)
    assert set(slots.tolist()) == {0, 1, 3, 4}


def test_one_step_targets_stop_at_termination():
    buf = make()
    episode_pair(buf)
    env = np.zeros(4, dtype=np.int64)
    returns, discounts, nxt = buf.n_step_targets(env, np.array([0, 1, 3, 4]))
    assert returns.tolist() == [1.0, 2.0, 4.0, 8.0]
    assert discounts.tolist() == [0.5, 0.0, 0.5, 0.5]
    assert nxt.tolist() == [1, 2, 4, 5]


def test_n_step_returns_by_hand():
    buf = make(per_env=12, n_step=3, gamma=0.5)
    buf.start(frame(1))
    for i, r in enumerate([1.0, 2.0, 4.0, 8.0, 16.0]):
        step(buf, 0, r, i + 2)
    env = np.zeros(3, dtype=np.int64)
    returns, discounts, nxt = buf.n_step_targets(env, np.array([0, 1, 2]))
    # slot 0: 1 + .5*2 + .25*4 = 3; slot 1: 2 + .5*4 + .25*8 = 6; slot 2: 4 + 4 + 4 = 12
    assert returns.tolist() == [3.0, 6.0, 12.0]
    assert discounts.tolist() == [0.125, 0.125, 0.125]
    assert nxt.tolist() == [3, 4, 5]
    # slot 3 has only 1 written successor step (slot 4 holds an action, slot 5 is newest): not valid
    assert buf._valid(np.zeros(4, dtype=np.int64), np.arange(4)).tolist() == [True, True, True, False]


def test_truncation_bootstraps_from_the_final_frame_and_termination_does_not():
    buf = make(per_env=12, n_step=3, gamma=0.5)
    buf.start(frame(1))
    step(buf, 0, 1.0, 2)
    step(buf, 0, 2.0, 3, trunc=True, reset=10)  # time-out: final frame 3 in slot 2
    step(buf, 0, 4.0, 11)
    step(buf, 0, 8.0, 12, term=True, reset=20)  # death: final frame 12 in slot 5
    for v in (21, 22, 23):
        step(buf, 0, 0.0, v)
    env = np.zeros(4, dtype=np.int64)
    returns, discounts, nxt = buf.n_step_targets(env, np.array([0, 1, 3, 4]))
    assert returns.tolist() == [1.0 + 0.5 * 2.0, 2.0, 4.0 + 0.5 * 8.0, 8.0]
    assert discounts.tolist() == [0.25, 0.5, 0.0, 0.0]
    assert values(buf.stacks(env[:2], nxt[:2])) == [[1, 2, 3], [1, 2, 3]]


def test_wrap_around_overwrites_oldest_and_rejects_stacks_reaching_the_cursor():
    buf = make(per_env=5, stack=3)
    buf.start(frame(1))
    for v in range(2, 9):  # frames 1..8 in a ring of 5: slots hold 6,7,8,4,5
        step(buf, 0, 1.0, v)
    assert buf.frames[0, :, 0, 0].tolist() == [6, 7, 8, 4, 5]
    env = np.zeros(5, dtype=np.int64)
    # oldest slot is 3 (frame 4); slots 3 and 4 would need frames 2-3, overwritten
    assert buf._valid(env, np.arange(5)).tolist() == [True, True, False, False, False]
    assert values(buf.stacks(env[:2], np.array([0, 1]))) == [[4, 5, 6], [5, 6, 7]]


def test_streams_of_different_workers_stay_apart():
    buf = ReplayBuffer(20, 2, (2, 2), 2, 1, 0.9, seed=0)
    buf.start(np.stack([frame(1)[0], frame(100)[0]]))
    for t in range(2, 6):
        buf.add(
            np.array([0, 1]),
            np.ones(2, dtype=np.float32),
            np.array([False, t == 3]),
            np.zeros(2, dtype=bool),
            np.stack([frame(t)[0], frame(100 + t)[0]]),
            np.stack([frame(0)[0], frame(200 + t)[0]]),
        )
    assert buf.cursor.tolist() == [5, 6]
    got = values(buf.stacks(np.array([0, 1, 1]), np.array([3, 3, 4])))
    # worker 1 terminated at t=3: slot 2 final frame 103, slot 3 reset frame 203
    assert got == [[3, 4], [203, 203], [203, 104]]


def test_truncate_episodes_turns_the_running_episode_into_a_time_out():
    buf = make()
    episode_pair(buf)
    buf.truncate_episodes()
    assert buf.truncated[0, 4] and not buf.terminated[0, 4]
    buf.start(frame(30))
    env = np.zeros(1, dtype=np.int64)
    returns, discounts, nxt = buf.n_step_targets(env, np.array([4]))
    assert (returns.tolist(), discounts.tolist()) == ([8.0], [0.5])
    assert values(buf.stacks(env, nxt)) == [[4, 5, 6]]
    assert values(buf.stacks(env, np.array([6]))) == [[30, 30, 30]]


def test_sample_batch_shapes_and_dtypes():
    buf = make(per_env=50, stack=4, n_step=3)
    buf.start(frame(1))
    for v in range(2, 40):
        step(buf, v % 5, 1.0, v, term=v % 13 == 0, reset=v + 100)
    batch = buf.sample(16)
    assert batch["obs"].shape == (16, 4, 2, 2) and batch["obs"].dtype == np.uint8
    assert batch["next_obs"].shape == (16, 4, 2, 2)
    assert batch["actions"].dtype == np.int64 and batch["returns"].dtype == np.float32


def test_bytes_per_transition_and_a_million_fit_target():
    per = replay_nbytes(1, (84, 84))
    assert per == 84 * 84 + 9 <= 7200
    assert replay_nbytes(1_000_000, (84, 84)) <= 7.5e9


def test_refuses_a_buffer_that_cannot_fit_in_ram():
    with pytest.raises(ConfigError, match=r"replay.capacity=10000000000 needs .* GB of RAM"):
        ReplayBuffer(10_000_000_000, 1, (84, 84), 4, 1, 0.99, seed=0)


def test_save_load_round_trip(tmp_path):
    buf = make(per_env=10)
    episode_pair(buf)
    buf.save(tmp_path / "replay")
    other = make(per_env=10)
    other.load(tmp_path / "replay")
    for name in ("frames", "actions", "rewards", "terminated", "truncated", "first", "has_action", "cursor"):
        np.testing.assert_array_equal(getattr(other, name), getattr(buf, name))
    assert other.sample_indices(8)[1].tolist() == buf.sample_indices(8)[1].tolist()


def test_load_names_a_truncated_file(tmp_path):
    buf = make(per_env=10)
    episode_pair(buf)
    buf.save(tmp_path / "replay")
    path = tmp_path / "replay" / "frames.npy"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ConfigError, match=r"replay file .*frames.npy: corrupt or truncated"):
        make(per_env=10).load(tmp_path / "replay")


def two_streams(**kwargs) -> ReplayBuffer:
    """Two workers, 18 steps each, with terminations at different times, in rings of 12."""
    buf = ReplayBuffer(2 * 12, 2, (2, 2), 3, 2, 0.5, seed=0, **kwargs)
    buf.start(np.stack([np.full((2, 2), 1, np.uint8), np.full((2, 2), 100, np.uint8)]))
    for t in range(2, 20):
        buf.add(
            np.array([t % 3, t % 5]),
            np.array([1.0, 2.0], dtype=np.float32),
            np.array([t % 7 == 0, t % 4 == 0]),
            np.zeros(2, dtype=bool),
            np.stack([np.full((2, 2), t, np.uint8), np.full((2, 2), 100 + t, np.uint8)]),
            np.stack([np.full((2, 2), 50 + t, np.uint8), np.full((2, 2), 150 + t, np.uint8)]),
        )
    return buf


def test_uniform_draws_are_those_of_the_buffer_before_prioritized_replay():
    buf = two_streams()
    envs, slots = buf.sample_indices(10)
    # pinned from the code before prioritized replay existed (commit 5d33cf6), same seed
    assert envs.tolist() == [1, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert slots.tolist() == [4, 0, 4, 0, 8, 2, 3, 8, 3, 5]
    assert set(buf.sample(4)) == {"obs", "actions", "returns", "discounts", "next_obs"}


def make_per(per_env=10, stack=3, n_step=1, alpha=1.0, num_envs=1) -> ReplayBuffer:
    return ReplayBuffer(
        per_env * num_envs,
        num_envs,
        (2, 2),
        stack,
        n_step,
        0.5,
        seed=0,
        prioritized=True,
        priority_alpha=alpha,
        priority_eps=1e-6,
    )


VALID = np.array([0, 1, 3, 4])  # the transitions of episode_pair
ENV0 = np.zeros(4, dtype=np.int64)


def draw_counts(buf, batches=100, batch_size=32, beta=0.4) -> np.ndarray:
    """How often each slot of env 0 was drawn over ``batches`` prioritized batches."""
    slots = np.concatenate([buf.sample_prioritized(batch_size, beta)[1] for _ in range(batches)])
    return np.bincount(slots, minlength=buf.per_env)


def test_new_transitions_get_the_max_priority_and_only_valid_slots_carry_mass():
    buf = make_per()
    episode_pair(buf)
    assert buf.priorities[0, VALID].tolist() == [1.0] * 4  # the max before any TD error
    # slot 2 is episode A's final frame, slot 5 the newest frame: no transition to draw
    assert buf.tree.get(np.arange(6)).tolist() == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    buf.update_priorities(ENV0, VALID, np.array([0.5, -3.0, 0.2, 0.1]))
    assert buf.max_priority == pytest.approx(3.000001)
    step(buf, 1, 1.0, 7)  # a new transition in slot 5
    assert buf.priorities[0, 5] == pytest.approx(3.000001)
    assert buf.tree.get(np.array([5])) == pytest.approx(3.000001)
    assert set(np.flatnonzero(draw_counts(buf))) == {0, 1, 3, 4, 5}


def test_draw_frequencies_follow_priority_to_the_alpha():
    buf = make_per(alpha=0.5)
    episode_pair(buf)
    buf.update_priorities(ENV0, VALID, np.array([1.0, 4.0, 9.0, 16.0]))
    counts = draw_counts(buf, batches=2000)[VALID]
    # priority^0.5 = 1, 2, 3, 4 of a total of 10. Over 64,000 draws a frequency drawn
    # independently has a standard deviation of at most sqrt(0.25 / 64,000) = 0.002;
    # stratified draws vary less. 0.008 is four of those; uniform draws (0.25 each) fail it.
    np.testing.assert_allclose(counts / counts.sum(), [0.1, 0.2, 0.3, 0.4], atol=0.008)


def test_importance_weights_by_hand():
    buf = make_per(alpha=0.5)
    episode_pair(buf)
    buf.update_priorities(ENV0, VALID, np.array([1.0, 4.0, 9.0, 16.0]))
    # P = 0.1, 0.2, 0.3, 0.4 and N = 4; beta 0.5: (N P)^-beta = 1.5811, 1.1180, 0.9129, 0.7906,
    # divided by the largest (slot 0, the least likely): 1, 0.7071, 0.5774, 0.5
    expected = {0: 1.0, 1: 0.70711, 3: 0.57735, 4: 0.5}
    seen = set()
    for _ in range(20):
        _envs, slots, weights = buf.sample_prioritized(4, beta=0.5)
        assert weights.dtype == np.float32
        for slot, weight in zip(slots.tolist(), weights.tolist(), strict=True):
            assert weight == pytest.approx(expected[slot], rel=1e-4)
            seen.add(slot)
    assert seen == {0, 1, 3, 4}
    # beta 0: no correction
    assert buf.sample_prioritized(4, beta=0.0)[2].tolist() == [1.0] * 4


def test_update_priorities_changes_what_is_sampled():
    buf = make_per(alpha=0.6)
    episode_pair(buf)
    before = draw_counts(buf)[VALID]
    assert before.min() > 0.2 * before.sum()  # equal priorities: about a quarter each
    buf.update_priorities(ENV0, VALID, np.array([1e-3, 1e-3, 1000.0, 1e-3]))
    # 1000^0.6 = 63.1 against 3 x 0.016: slot 3 is 99.9% of the mass
    assert draw_counts(buf)[3] >= 0.95 * 3200
    buf.update_priorities(ENV0[:1], np.array([3]), np.array([0.0]))  # eps only: 2.5e-4 against 0.016 each
    assert draw_counts(buf)[3] <= 0.05 * 3200


def test_an_update_for_an_overwritten_transition_is_dropped():
    buf = make_per(per_env=8, stack=2, n_step=1)
    episode_pair(buf)  # slots 0..5, cursor 6
    drawn = np.array([0])
    assert buf._valid(ENV0[:1], drawn)[0]
    for v in (7, 8, 9):  # the ring wraps: frame 9 overwrites slot 0 before the learner's error comes back
        step(buf, 0, 1.0, v)
    buf.update_priorities(ENV0[:1], drawn, np.array([50.0]))
    assert buf.max_priority == 1.0
    step(buf, 0, 1.0, 10)  # slot 0 holds a new, valid transition: at the max priority, not 50
    assert buf._valid(ENV0[:1], drawn)[0]
    assert (buf.priorities[0, 0], buf.tree.get(drawn)[0]) == (1.0, 1.0)


@pytest.mark.parametrize(("stack", "n_step", "num_envs"), [(3, 1, 1), (4, 3, 2), (1, 2, 1), (2, 5, 3)])
def test_leaves_hold_priority_exactly_on_the_valid_slots(stack, n_step, num_envs):
    """After every step of a long run through small rings (wraps, episode ends, a restart),
    each leaf is priority^alpha where the slot may be drawn and 0 elsewhere."""
    rng = np.random.default_rng(stack * 10 + n_step)
    per_env = stack + n_step + 4
    buf = make_per(per_env=per_env, stack=stack, n_step=n_step, alpha=0.7, num_envs=num_envs)
    envs, slots = np.divmod(np.arange(buf.capacity), per_env)

    def check():
        valid = buf._valid(envs, slots)
        expected = np.where(valid, buf.priorities[envs, slots].astype(np.float64) ** 0.7, 0.0)
        np.testing.assert_array_equal(buf.tree.get(np.arange(buf.capacity)), expected)
        if valid.any():
            e, s, _ = buf.sample_prioritized(16, beta=0.4)
            assert buf._valid(e, s).all()

    frames = np.zeros((num_envs, 2, 2), dtype=np.uint8)
    buf.start(frames)
    check()
    for t in range(200):
        ended = rng.random(num_envs) < 0.15
        terminated = ended & (rng.random(num_envs) < 0.5)
        buf.add(
            rng.integers(5, size=num_envs),
            rng.random(num_envs, dtype=np.float32),
            terminated,
            ended & ~terminated,
            frames,
            frames,
        )
        if t % 3 == 0 and buf.tree.total > 0:
            e, s, _ = buf.sample_prioritized(4, beta=0.4)
            buf.update_priorities(e, s, rng.normal(size=4) * 5)
        if t == 100:
            buf.truncate_episodes()
            buf.start(frames)
        check()


def test_prioritized_save_load_round_trip_keeps_priorities(tmp_path):
    buf = make_per(per_env=10, alpha=0.6)
    episode_pair(buf)
    buf.update_priorities(ENV0, VALID, np.array([0.5, 7.0, 0.2, 0.1]))
    step(buf, 1, 1.0, 7)
    buf.save(tmp_path / "replay")
    assert (tmp_path / "replay" / "priorities.npy").is_file()
    other = make_per(per_env=10, alpha=0.6)
    other.load(tmp_path / "replay")
    np.testing.assert_array_equal(other.priorities, buf.priorities)
    np.testing.assert_array_equal(other.tree.sums, buf.tree.sums)
    assert other.max_priority == buf.max_priority == pytest.approx(7.000001)
    for a, b in zip(other.sample_prioritized(8, 0.5), buf.sample_prioritized(8, 0.5), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_uniform_save_loads_into_a_prioritized_buffer_at_the_max_priority(tmp_path):
    uniform = make(per_env=10)
    episode_pair(uniform)
    uniform.save(tmp_path / "replay")
    buf = make_per(per_env=10)
    buf.load(tmp_path / "replay")
    assert buf.tree.get(np.arange(6)).tolist() == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]


def test_prioritized_bytes_count_the_priorities_and_the_trees():
    # 7,065 bytes + a float32 priority per slot, and two float64 trees of 2 x 131,072 nodes
    assert replay_nbytes(100_000, (84, 84), prioritized=True) == 100_000 * 7_069 + 4 * 131_072 * 8


def test_lanes_are_written_apart_and_a_truncation_cuts_only_its_lanes():
    buf = make(num_envs=3)
    one = np.array([1])
    buf.start(np.stack([frame(1)[0], frame(100)[0], frame(200)[0]]))
    # lane 1 alone steps twice; lanes 0 and 2 once, together
    for nxt in (101, 102):
        buf.add(np.array([3]), np.array([1.0], np.float32), np.array([False]), np.array([False]), frame(nxt), None, one)
    both = np.array([0, 2])
    pair = np.stack([frame(2)[0], frame(201)[0]])
    buf.add(np.array([1, 2]), np.array([5.0, 7.0], np.float32), np.zeros(2, bool), np.zeros(2, bool), pair, None, both)
    assert buf.cursor.tolist() == [2, 3, 2]
    assert buf.actions[:, 0].tolist() == [1, 3, 2] and buf.rewards[:, 0].tolist() == [5.0, 1.0, 7.0]
    assert values(buf.stacks(np.array([1, 2]), np.array([2, 1]))) == [[100, 101, 102], [200, 200, 201]]
    # lane 1 restarts: its running episode becomes a time-out, the others run on
    buf.truncate_episodes(one)
    buf.start(frame(150), one)
    assert buf.truncated.tolist() == [[False] * 10, [False, True] + [False] * 8, [False] * 10]
    assert values(buf.stacks(one, np.array([3]))) == [[150, 150, 150]]
