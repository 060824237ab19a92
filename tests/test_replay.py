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


def test_interrupt_turns_the_running_episode_into_a_time_out():
    buf = make()
    episode_pair(buf)
    buf.interrupt()
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
