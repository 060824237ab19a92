import gymnasium as gym
import numpy as np

from mario_rl.config import default_run
from mario_rl.data import ExperienceStream
from mario_rl.synthetic import ENV_ID, make_synthetic_vector_env


def test_synthetic_env_returns_real_frame_stacks_of_a_cycle_and_terminates_on_time():
    env = gym.make(ENV_ID, frame_stack=3, frame_size=36, actions=7, episode_steps=9, pool=4)
    assert env.observation_space.shape == (3, 36, 36) and env.action_space.n == 7
    first, info = env.reset(seed=0)
    assert first.dtype == np.uint8 and info == {"x_pos": 0, "flag_get": False}
    steps = [env.step(0) for _ in range(9)]
    stacks = [first] + [s[0] for s in steps]
    frames = [stack[-1] for stack in stacks]
    # a cycle of 4 frames: frame t is frame t mod 4, and the 4 differ
    for t in range(10):
        np.testing.assert_array_equal(frames[t], frames[t % 4])
    assert len({f.tobytes() for f in frames[:4]}) == 4
    # each stack is the last 3 frames, padded with frame 0 after the reset
    for t, stack in enumerate(stacks):
        expected = [frames[max(0, t - 2)], frames[max(0, t - 1)], frames[t]]
        np.testing.assert_array_equal(stack, np.stack(expected))
    assert [s[2] for s in steps] == [False] * 8 + [True]
    assert steps[-1][4]["x_pos"] == 9


class RandomPolicy:
    def __init__(self):
        self.rng = np.random.default_rng(0)
        self.seen: list[np.ndarray] = []

    def __call__(self, obs, eps):
        self.seen.append(obs.copy())
        return self.rng.integers(5, size=obs.shape[0])


def small_run():
    """Two synthetic workers, 7-step episodes, updates of 8 every 4 env steps from 20 to 60."""
    return default_run(
        env={"num_envs": 2, "max_episode_steps": 7},
        agent={"learning_starts": 20, "train_every": 4, "batch_size": 8, "n_step": 1},
        replay={"capacity": 1000, "prioritized": False},
        env_steps=60,
    )


def test_the_real_stream_runs_on_synthetic_worker_processes():
    run = small_run()
    policy = RandomPolicy()
    stream = ExperienceStream(run, policy, make_envs=make_synthetic_vector_env)
    batches = list(stream)
    stream.close()
    # updates at env steps 20, 24, ..., 60
    assert len(batches) == 11 and batches[0]["obs"].shape == (8, 4, 84, 84)
    # 30 steps per worker: four 7-step episodes each, every one terminated at x_pos 7
    assert stream.episodes == 8 and stream.replay.terminated.sum() == 8
    assert {(e.length, e.x_pos, e.clear) for e in stream.finished} == {(7, 7, False)}
    # the replay rebuilds the stacks the actor saw
    slots = np.flatnonzero(stream.replay.has_action[0])
    np.testing.assert_array_equal(stream.replay.stacks(np.zeros_like(slots), slots), np.stack(policy.seen)[:, 0])


def test_a_checkpoint_mid_run_leaves_workers_that_keep_no_state_running():
    # Gymnasium's async worker exits after any error in a call, so asking an env without
    # worker_state for it, as each checkpoint does, must not reach the workers as an error.
    run = small_run()
    stream = ExperienceStream(run, RandomPolicy(), make_envs=make_synthetic_vector_env)
    batches = iter(stream)
    first = [next(batches) for _ in range(3)]
    saved = stream.state_dict()
    rest = list(batches)
    stream.close()
    assert len(first) + len(rest) == 11 and stream.env_steps == 60
    assert saved["env_steps"] == first[-1]["env_steps"] and saved.get("workers") is None
