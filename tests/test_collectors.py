"""Collectors: Ape-X's epsilons, and Ray actors feeding the stream and a real training run.

The Ray tests share one local Ray of 2 CPUs (module fixture): starting Ray costs seconds. Their
actors step the synthetic env (mario_rl/synthetic.py), whose episodes are one fixed sequence of
frame stacks, so every stack the replay rebuilds can be checked against the one the actor saw.
"""

import logging
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mario_rl import collectors
from mario_rl.collectors import actor_seed, ape_x_epsilons
from mario_rl.config import ConfigError, RunConfig, default_run
from mario_rl.data import ExperienceStream
from mario_rl.errors import EnvWorkerError
from mario_rl.nets import NatureCNN
from mario_rl.policy import EpsilonGreedy
from mario_rl.resume import REPLAY_LAYOUT, check_unchanged
from mario_rl.synthetic import SyntheticFrames, make_synthetic_vector_env
from tests.conftest import compose_train

ray = pytest.importorskip("ray")


def test_ape_x_epsilons_spread_from_the_base_down():
    # Horgan et al. 2018: eps_i = 0.4^(1 + 7 i / (N - 1))
    assert ape_x_epsilons(4, 0.4, 7.0).tolist() == pytest.approx([0.4, 0.4 ** (1 + 7 / 3), 0.4 ** (1 + 14 / 3), 0.4**8])
    assert ape_x_epsilons(1, 0.4, 7.0).tolist() == [0.4]
    assert ape_x_epsilons(3, 0.3, 0.0).tolist() == pytest.approx([0.3] * 3)


def test_a_resume_with_a_saved_replay_keeps_its_lanes():
    saved = default_run(env=dict(num_envs=2), collector=dict(kind="ray", actors=2))  # 4 lanes
    local = default_run(env=dict(num_envs=2))  # 2 lanes
    ckpt = Path("run/checkpoints/last.ckpt")
    with pytest.raises(ConfigError, match=r"^collector.actors=1 cannot change on resume: checkpoint .* has collector"):
        check_unchanged(saved, local, ckpt, REPLAY_LAYOUT, "leave it out")
    # one actor of 2 emulators lays the replay out as 2 local workers do
    check_unchanged(
        local, default_run(env=dict(num_envs=2), collector=dict(kind="ray", actors=1)), ckpt, REPLAY_LAYOUT, ""
    )


def test_every_actor_and_restart_gets_its_own_seed():
    seeds = {actor_seed(1, actor, generation) for actor in range(4) for generation in range(3)}
    assert len(seeds) == 12 and actor_seed(1, 2, 1) == actor_seed(1, 2, 1)


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


def ray_run(env_steps=400, max_episode_steps=13, capacity=2000, **collector) -> RunConfig:
    """2 actors of 2 synthetic emulators: 4 replay lanes of ``capacity / 4`` slots; episodes of
    ``max_episode_steps`` (400 when None)."""
    return default_run(
        env=dict(num_envs=2, max_episode_steps=max_episode_steps),
        agent=dict(learning_starts=64, train_every=4, batch_size=8, n_step=3, epsilon_start=0.5),
        replay=dict(capacity=capacity, prioritized=False, save=False),
        collector=dict(kind="ray", actors=2, chunk_steps=4, actor_cpus=0.5, **collector),
        env_steps=env_steps,
    )


def ray_stream(run: RunConfig) -> ExperienceStream:
    policy = EpsilonGreedy(NatureCNN(4, 5, 84, True), 5, seed=0)
    return ExperienceStream(run, policy, make_envs=make_synthetic_vector_env)


def episode_stacks(episode_steps: int) -> np.ndarray:
    """What a synthetic emulator shows at each step of an episode: (episode_steps + 1, 4, 84, 84)."""
    env = SyntheticFrames(frame_stack=4, frame_size=84, actions=5, episode_steps=episode_steps)
    return np.stack([env.reset()[0], *(env.step(0)[0] for _ in range(episode_steps))])


def check_lanes_hold_what_each_emulator_saw(replay, lanes: int, seen: np.ndarray) -> None:
    """Every stored stack is the one its emulator showed at that step of its episode (``seen``), the
    step counted from the lane's last episode start, and the frame stored after it is the next
    step's; every reward is the synthetic env's 1. A lane that took another emulator's steps, or a
    stack that crossed an episode start, fails."""
    for lane in range(lanes):
        slots = np.flatnonzero(replay.has_action[lane])
        starts = np.flatnonzero(replay.first[lane])
        steps = slots - starts[np.searchsorted(starts, slots, side="right") - 1]
        np.testing.assert_array_equal(replay.stacks(np.full(len(slots), lane), slots), seen[steps])
        np.testing.assert_array_equal(replay.frames[lane, slots + 1], seen[steps + 1, -1])
        assert (replay.rewards[lane, slots] == 1).all()


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
    assert batches[0]["obs"].shape == (8, 4, 84, 84) and batches[0]["obs"].dtype == torch.uint8
    check_lanes_hold_what_each_emulator_saw(replay, 4, episode_stacks(13))
    # 13-step episodes, each terminated once in its own lane and counted once
    assert replay.terminated.sum(axis=1).tolist() == (steps // 13).tolist() and not replay.truncated.any()
    assert stream.episodes == len(stream.finished) == sum(steps // 13)
    assert {(e.length, e.x_pos, e.episode_return, e.level) for e in stream.finished} == {(13, 13, 13.0, "1-1")}
    assert max(e.env_steps for e in stream.finished) <= 400


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
    assert {1, 3} <= {a for _, actions in played for a in actions}
    assert stream.epsilon == 0.0


def test_a_killed_actor_is_restarted_and_one_death_too_many_ends_the_run(ray_session, caplog):
    # A kill is seen once the chunks queued before it are through, which on a fast machine is
    # hundreds of env steps later: episodes of 1,500 and lanes of 2,000 slots hold a whole run of
    # 4,000 env steps (1,000 per lane) without an episode end or a wrap.
    run = ray_run(env_steps=4000, max_episode_steps=1500, capacity=8000, max_restarts=1)
    stream = ray_stream(run)
    kills = []
    too_many = r"ray actor 0 \(lanes 0-1\) failed at env step \d+: .*max_restarts=1"
    with caplog.at_level(logging.WARNING, logger="mario_rl.collectors"), pytest.raises(EnvWorkerError, match=too_many):
        for batch in stream:
            restarts = stream.collector.restarts
            if batch["env_steps"] >= 160 * (restarts + 1) and len(kills) == restarts:
                kills.append(stream.env_steps)
                ray.kill(stream.collector.actors[0], no_restart=False)
    stream.close()
    assert len(kills) == 2 and stream.collector.restarts == 1
    assert "ray actor 0 (lanes 0-1) failed at env step" in caplog.text
    assert "Ray restarted it (1 of collector.max_restarts=1)" in caplog.text
    replay = stream.replay
    # actor 0's lanes: the episode running at the kill ends as a time-out and a new one begins;
    # actor 1's lanes run on in their first episode
    assert replay.truncated.sum(axis=1).tolist() == [1, 1, 0, 0] and not replay.terminated.any()
    assert replay.first.sum(axis=1).tolist() == [2, 2, 1, 1]
    check_lanes_hold_what_each_emulator_saw(replay, 4, episode_stacks(1500))


def test_a_stop_noted_while_the_actors_are_silent_ends_the_wait_and_the_save_does_not_hang(
    ray_session, caplog, monkeypatch
):
    # A SIGTERM to the run's process group also ends Ray's GCS and raylet: the actors' answers
    # never come, and a learner blocked in ray.wait was ended by Ray 60 s later, unsaved. Stopped
    # actor processes are as silent. Without the stop, the run would go on to its budget once a
    # watchdog lets them go on, 20 s later.
    monkeypatch.setattr(collectors, "STOP_STATES_WAIT_S", 2.0)  # of STATES_WAIT_S's 60
    stream = ray_stream(ray_run(env_steps=2000, max_episode_steps=None))
    noted: list[BaseException] = []
    stream.noted_stop = lambda: noted[0] if noted else None
    pids: list[int] = []
    watchdog = threading.Timer(20.0, lambda: [os.kill(pid, signal.SIGCONT) for pid in pids])
    try:
        with pytest.raises(SIGTERMException):
            for _ in stream:
                if not pids:
                    pids = ray.get([a.__ray_call__.remote(lambda actor: os.getpid()) for a in stream.collector.actors])
                    for pid in pids:
                        os.kill(pid, signal.SIGSTOP)
                    watchdog.start()
                    threading.Timer(1.0, lambda: noted.append(SIGTERMException())).start()
                    stopped_at = time.monotonic()
        raised_after = time.monotonic() - stopped_at
        assert raised_after < 1.0 + 2 * collectors.WAIT_SLICE_S + 1.0
        # the save's ask for the start states waits STOP_STATES_WAIT_S, not STATES_WAIT_S,
        # and a cluster that did not answer in a stop is not asked again
        with caplog.at_level(logging.WARNING, logger="mario_rl.collectors"):
            asked = time.monotonic()
            assert stream.worker_states() is None
            waited = time.monotonic() - asked
            again = time.monotonic()
            assert stream.worker_states() is None
            assert time.monotonic() - again < 0.5
        assert collectors.STOP_STATES_WAIT_S <= waited < collectors.STOP_STATES_WAIT_S + 3
        assert "ray: the actors' start states are not saved: no answer within the wait" in caplog.text
    finally:
        watchdog.cancel()
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        stream.close()


def test_a_ray_training_run_on_two_levels_checkpoints_logs_each_level_and_resumes(ray_session, tmp_path):
    from mario_rl.training import train

    ray_overrides = [
        "debug=default",
        "collector=ray",
        "collector.actors=2",
        "collector.actor_cpus=0.5",
        "env.num_envs=1",
        "env.levels=[1-1,1-2]",
        "callbacks.eval.every=100000",
    ]
    train(compose_train([*ray_overrides, "env.max_episode_steps=40"], tmp_path))
    ckpts = tmp_path / "checkpoints"
    last = torch.load(ckpts / "last.ckpt", weights_only=False)
    assert last["stream"]["env_steps"] == 400 and last["global_step"] == (400 - 64) // 4 + 1
    assert last["hyper_parameters"]["run"]["collector"]["kind"] == "ray"
    # checkpoint_every=200 env steps: saved after the chunk (16 env steps) that crosses each multiple
    periodic = sorted(int(p.stem.removeprefix("env_steps_")) for p in ckpts.glob("env_steps_*.ckpt"))
    assert len(periodic) == 2 and 200 <= periodic[0] < 216 and periodic[1] == 400
    lanes = np.load(ckpts / "replay" / "has_action.npy").sum(axis=1)
    assert len(lanes) == 2 and lanes.sum() == 400 and lanes.min() > 0  # a lane per emulator
    # the actors' emulators play the run's levels and keep their outcomes, which the checkpoint holds
    workers = last["stream"]["workers"]
    assert len(workers) == 2 and all(set(w["outcomes"]) == {"1-1", "1-2"} for w in workers)
    events = EventAccumulator(str(next((tmp_path / "tensorboard").glob("events.*"))))
    events.Reload()
    lengths = events.Scalars("rollout/episode_length")
    assert lengths and 0 < lengths[-1].value <= 40
    played = {level: events.Scalars(f"rollout/{level}/episodes")[-1].value for level in ("1-1", "1-2")}
    assert min(played.values()) >= 1
    assert 380 <= events.Scalars("train/loss")[-1].step <= 400

    resume = [f"ckpt_path={ckpts / 'last.ckpt'}", "env_steps=600"]
    train(compose_train([*ray_overrides, *resume], tmp_path / "again"), overrides=resume)
    resumed = torch.load(ckpts / "last.ckpt", weights_only=False)
    assert resumed["stream"]["env_steps"] == 600 and resumed["global_step"] == (600 - 64) // 4 + 1
    assert resumed["hyper_parameters"]["run"]["env"]["max_episode_steps"] == 40  # the run's config, continued
