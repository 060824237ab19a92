import numpy as np
import pytest
import torch

from mario_rl.config import default_run
from mario_rl.data import ExperienceStream


class RecordingPolicy:
    """Random actions; remembers every observation batch it was shown."""

    def __init__(self, num_actions: int):
        self.rng = np.random.default_rng(0)
        self.num_actions = num_actions
        self.seen: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []

    def __call__(self, obs, eps):
        self.seen.append(obs.copy())
        self.actions.append(self.rng.integers(self.num_actions, size=obs.shape[0]))
        return self.actions[-1]


def run_stream(env_steps=120, learning_starts=40, train_every=4, num_envs=2, max_episode_steps=17, prioritized=False):
    run = default_run(
        env=dict(num_envs=num_envs, vector="sync", max_episode_steps=max_episode_steps),
        agent=dict(learning_starts=learning_starts, train_every=train_every, batch_size=8, n_step=3),
        replay=dict(capacity=1000, prioritized=prioritized),
        env_steps=env_steps,
    )
    policy = RecordingPolicy(5)
    stream = ExperienceStream(run, policy)
    batches = list(stream)
    stream.close()
    return stream, policy, batches


def test_replay_rebuilds_exactly_the_stacks_the_actor_saw():
    stream, policy, _ = run_stream()
    seen = np.stack(policy.seen)  # (steps, envs, 4, 84, 84)
    replay = stream.replay
    for e in range(2):
        slots = np.flatnonzero(replay.has_action[e])
        assert len(slots) == len(seen) == 60
        envs = np.full(len(slots), e)
        np.testing.assert_array_equal(replay.stacks(envs, slots), seen[:, e])
        np.testing.assert_array_equal(replay.actions[e, slots], np.stack(policy.actions)[:, e])
    # episodes of 17 steps: 3 time-outs per worker in 60 steps
    assert replay.truncated.sum() == 6 and stream.episodes == 6
    assert all(ep.length == 17 for ep in stream.finished)


def test_batches_are_paid_for_by_train_every_env_steps():
    stream, _, batches = run_stream(env_steps=120, learning_starts=40, train_every=4)
    # updates at env steps 40, 44, ..., 120 -> 21 batches; each batch counts the env steps behind it
    assert stream.env_steps == 120 and len(batches) == 21
    assert batches[0]["obs"].shape == (8, 4, 84, 84) and batches[0]["obs"].dtype.is_floating_point is False
    assert [b["env_steps"] for b in batches[:3]] == [38, 42, 46]  # sampled while the step is in flight
    assert not {"weights", "envs", "slots", "priority_beta"} & set(batches[0])  # uniform replay


def test_prioritized_batches_carry_weights_their_indices_and_an_annealed_beta():
    stream, _, batches = run_stream(prioritized=True)
    replay = stream.replay
    batch = batches[0]
    assert batch["weights"].dtype == torch.float32 and batch["weights"].shape == (8,)
    assert batch["weights"].min() > 0 and batch["weights"].max() <= 1
    # the indices name the transitions the batch holds
    np.testing.assert_array_equal(batch["actions"], replay.actions[batch["envs"], batch["slots"]])
    # beta goes from 0.4 at env step 0 to 1 at the 120-step budget
    assert [b["priority_beta"] for b in batches] == pytest.approx([0.4 + 0.6 * b["env_steps"] / 120 for b in batches])
    stream.update_priorities(batch["envs"], batch["slots"], torch.full((8,), 2.0))
    assert replay.priorities[batch["envs"], batch["slots"]].tolist() == pytest.approx([2.000001] * 8)


def test_more_updates_than_vector_steps_when_train_every_is_small():
    _stream, _, batches = run_stream(env_steps=60, learning_starts=40, train_every=1)
    # start = max(learning_starts, batch) = 40: updates at 40..60 -> 21
    assert len(batches) == 21


def schedule_stream(train_every: int = 4) -> ExperienceStream:
    run = default_run(
        env={"num_envs": 2, "vector": "sync"},
        agent={"learning_starts": 40, "train_every": train_every, "batch_size": 8},
        replay={"capacity": 1000},
    )
    return ExperienceStream(run, RecordingPolicy(5))


def test_a_refill_owes_no_update_for_a_warm_up_then_keeps_the_cadence():
    stream = schedule_stream()
    stream.load_state_dict({**stream.state_dict(), "env_steps": 1000, "updates": 241})
    assert stream._updates_owed(1004) == 1  # the fresh schedule: (1004 - 40) // 4 + 1 = 242
    assert stream.refill() == 40
    assert [stream._updates_owed(e) for e in (1002, 1038)] == [0, 0]  # the replay fills from empty
    assert [stream._updates_owed(e) for e in (1040, 1044, 1048)] == [1, 2, 3]  # then one per 4 env steps
    again = schedule_stream()  # a checkpoint taken during the refill brings the refill back
    again.load_state_dict({**stream.state_dict(), "env_steps": 1020})
    assert again._updates_owed(1038) == 0 and again._updates_owed(1040) == 1


def test_a_resume_that_changes_train_every_owes_no_burst_of_updates():
    saved = schedule_stream(train_every=4)
    saved.load_state_dict({**saved.state_dict(), "env_steps": 1000, "updates": 241})
    faster = schedule_stream(train_every=1)  # ckpt_path=last agent.train_every=1
    faster.load_state_dict(saved.state_dict())
    # the old anchor at the new rate would owe (1002 - 40) // 1 + 1 - 241 = 722 updates at once;
    # the new cadence starts one train_every after the resume
    assert [faster._updates_owed(e) for e in (1000, 1001, 1002, 1003)] == [0, 1, 2, 3]
