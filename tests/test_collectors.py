"""Collectors: Ape-X's epsilons, and Ray actors feeding the stream and a real training run.

The Ray tests share one local Ray of 2 CPUs (module fixture): starting Ray costs seconds.
"""

import logging

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mario_rl.collectors import actor_seed, ape_x_epsilons
from mario_rl.config import RunConfig, default_run
from mario_rl.data import ExperienceStream
from mario_rl.errors import EnvWorkerError
from mario_rl.nets import NatureCNN
from mario_rl.policy import EpsilonGreedy
from mario_rl.synthetic import frame_origin, make_vector_env
from tests.conftest import compose_train

ray = pytest.importorskip("ray")


def test_ape_x_epsilons_spread_from_the_base_down():
    # Horgan et al. 2018: eps_i = 0.4^(1 + 7 i / (N - 1))
    assert ape_x_epsilons(4, 0.4, 7.0).tolist() == pytest.approx([0.4, 0.4 ** (1 + 7 / 3), 0.4 ** (1 + 14 / 3), 0.4**8])
    assert ape_x_epsilons(1, 0.4, 7.0).tolist() == [0.4]
    assert ape_x_epsilons(3, 0.3, 0.0).tolist() == pytest.approx([0.3] * 3)


def test_every_actor_and_restart_gets_its_own_seed():
    seeds = {actor_seed(1, actor, generation) for actor in range(4) for generation in range(3)}
    assert len(seeds) == 12 and actor_seed(1, 2, 1) == actor_seed(1, 2, 1)


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


def ray_run(env_steps=400, max_episode_steps=13, **collector) -> RunConfig:
    """2 actors of 2 synthetic emulators: 4 replay lanes."""
    return default_run(
        env=dict(num_envs=2, max_episode_steps=max_episode_steps),
        agent=dict(learning_starts=64, train_every=4, batch_size=8, n_step=3, epsilon_start=0.5),
        replay=dict(capacity=2000, prioritized=False),
        collector=dict(kind="ray", actors=2, chunk_steps=4, **collector),
        env_steps=env_steps,
    )


def ray_stream(run: RunConfig) -> ExperienceStream:
    policy = EpsilonGreedy(NatureCNN(4, 5, 84, True), 5, seed=0)
    return ExperienceStream(run, policy, make_envs=make_vector_env)


def check_lanes_hold_what_each_emulator_saw(replay, lanes: int) -> list[set[bytes]]:
    """Every stored stack is the synthetic emulator's own: one episode, consecutive steps, the
    first frame repeated before the episode's start (FrameStackObservation's padding); every
    reward is its action and the next frame was made by that action. Returns each lane's tags."""
    tags = []
    for lane in range(lanes):
        slots = np.flatnonzero(replay.has_action[lane])
        stacks = replay.stacks(np.full(len(slots), lane), slots)
        for stack in stacks:
            origins = [frame_origin(f) for f in stack]
            tag, step, _ = origins[-1]
            assert [o[:2] for o in origins] == [(tag, max(0, step - k)) for k in (3, 2, 1, 0)]
        np.testing.assert_array_equal(replay.rewards[lane, slots], replay.actions[lane, slots])
        following = [frame_origin(replay.frames[lane, (s + 1) % replay.per_env]) for s in slots]
        assert [f[2] for f in following] == replay.actions[lane, slots].tolist()
        tags.append({frame_origin(replay.frames[lane, s])[0] for s in range(replay.written[lane])})
    return tags


def test_ray_actors_write_each_emulator_into_its_own_lane_at_the_replay_ratio(ray_session):
    stream = ray_stream(ray_run())
    batches = list(stream)
    stream.close()
    replay = stream.replay
    assert replay.num_envs == 4
    # the last chunk is cut at the budget; an actor's two emulators step together, the actors apart
    steps = replay.has_action.sum(axis=1)
    assert stream.env_steps == steps.sum() == 400 and steps[0] == steps[1] and steps[2] == steps[3]
    # one update per 4 env steps from learning_starts: (400 - 64) / 4 + 1, whatever the chunks
    assert len(batches) == stream.updates == 85
    tags = check_lanes_hold_what_each_emulator_saw(replay, 4)
    assert all(not (tags[a] & tags[b]) for a in range(4) for b in range(a + 1, 4))
    # episodes of 13 steps cut by the time limit, counted once each
    assert replay.truncated.sum(axis=1).tolist() == (steps // 13).tolist()
    assert stream.episodes == len(stream.finished) == sum(steps // 13)
    assert {(e.length, e.x_pos) for e in stream.finished} == {(13, 13)}
    assert sorted(e.env_steps for e in stream.finished)[-1] <= 400


def test_actors_play_with_the_weights_the_learner_sends(ray_session):
    run = ray_run(env_steps=640, max_episode_steps=None, weight_sync_every=64, max_inflight=2)
    run.agent.epsilon_start = run.agent.epsilon_end = 0.0
    stream = ray_stream(run)
    net = stream.policy.q_net

    def prefer(action: int) -> None:
        """Q is highest for ``action`` whatever the frames: zero output layers, one bias up."""
        with torch.no_grad():
            for out in (net.head[-1], net.value[-1]):
                out.weight.zero_()
                out.bias.zero_()
            net.head[-1].bias[action] = 1.0

    prefer(3)
    written = []
    write = stream._write
    stream._write = lambda chunk: (written.append((stream.env_steps, chunk.actions.copy())), write(chunk))
    switched = False
    for batch in stream:
        if batch["env_steps"] >= 160 and not switched:
            prefer(1)
            switched = True
    stream.close()
    played = [(at, set(actions.ravel().tolist())) for at, actions in written if actions.size]
    assert all(actions == {3} for at, actions in played if at < 160)
    # sent at the next multiple of 64 env steps, played once the 2 chunks queued on each actor
    # (16 env steps each) are through: greedy on action 1 from 160 + 64 + 2 * 2 * 16 on
    assert all(actions == {1} for at, actions in played if at >= 160 + 64 + 2 * 2 * 16)
    assert stream.epsilon == 0.0


def test_a_killed_actor_is_restarted_with_new_seeds_and_its_episodes_cut(ray_session, caplog):
    run = ray_run(env_steps=480, max_episode_steps=None)  # 100-step synthetic episodes: no end in 120 steps
    stream = ray_stream(run)
    with caplog.at_level(logging.WARNING, logger="mario_rl.collectors"):
        for batch in stream:
            if stream.collector.restarts == 0 and batch["env_steps"] >= 160 and not hasattr(stream, "_killed"):
                ray.kill(stream.collector.actors[0], no_restart=False)
                stream._killed = True
    stream.close()
    replay = stream.replay
    assert stream.env_steps == 480 and stream.collector.restarts == 1
    assert "ray actor 0 (lanes 0-1) failed at env step" in caplog.text
    assert "Ray restarted it (1 of collector.max_restarts=3)" in caplog.text
    # actor 0's lanes: the episode running at the kill ends as a time-out (100-step synthetic
    # episodes end by termination only) and a new one starts from a new seed
    assert replay.truncated.sum(axis=1).tolist() == [1, 1, 0, 0]
    tags = check_lanes_hold_what_each_emulator_saw(replay, 4)
    assert [len(t) for t in tags[:2]] == [2, 2]


def test_an_actor_that_dies_once_too_often_ends_the_run(ray_session):
    stream = ray_stream(ray_run(env_steps=4000, max_restarts=0))
    with pytest.raises(EnvWorkerError, match=r"ray actor 1 \(lanes 2-3\) failed at env step \d+: .*max_restarts=0"):
        for batch in stream:
            if batch["env_steps"] >= 160:
                ray.kill(stream.collector.actors[1], no_restart=False)
    stream.close()


def test_a_ray_training_run_leaves_checkpoint_metrics_and_replay_and_resumes(ray_session, tmp_path):
    ray_overrides = [
        "debug=default",
        "collector=ray",
        "collector.actors=2",
        "env.num_envs=1",
        "callbacks.eval.every=100000",
    ]
    from mario_rl.training import train

    train(compose_train([*ray_overrides, "env.max_episode_steps=40"], tmp_path))
    ckpts = tmp_path / "checkpoints"
    last = torch.load(ckpts / "last.ckpt", weights_only=False)
    assert last["stream"]["env_steps"] == 400 and last["global_step"] == (400 - 64) // 4 + 1
    assert last["hyper_parameters"]["run"]["collector"]["kind"] == "ray"
    lanes = np.load(ckpts / "replay" / "has_action.npy").sum(axis=1)
    assert len(lanes) == 2 and lanes.sum() == 400 and lanes.min() > 0  # a lane per emulator
    events = EventAccumulator(str(next((tmp_path / "tensorboard").glob("events.*"))))
    events.Reload()
    lengths = events.Scalars("rollout/episode_length")
    assert lengths and 0 < lengths[-1].value <= 40
    assert 380 <= events.Scalars("train/loss")[-1].step <= 400

    resume = [f"ckpt_path={ckpts / 'last.ckpt'}", "env_steps=600"]
    train(compose_train([*ray_overrides, *resume], tmp_path / "again"), overrides=resume)
    resumed = torch.load(ckpts / "last.ckpt", weights_only=False)
    assert resumed["stream"]["env_steps"] == 600 and resumed["global_step"] == (600 - 64) // 4 + 1
    assert resumed["hyper_parameters"]["run"]["env"]["max_episode_steps"] == 40  # the run's config, continued
