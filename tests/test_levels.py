"""Several training levels and start states: real emulators where it matters."""

from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from nes_py.nes_env import OBSERVATION_MODE_GRAYSCALE

from mario_rl.checkpointing import load_checkpoint
from mario_rl.config import ConfigError, EnvConfig, check_level_overrides, default_run, load, run_config_from
from mario_rl.data import ExperienceStream
from mario_rl.envs import make_env, make_vector_env
from mario_rl.levels import LevelSampler, LevelSet, StartState, StartStatePool, env_id, flag_fraction, level_tag
from mario_rl.plot import per_level_metrics
from mario_rl.policy import EpsilonGreedy
from mario_rl.training import train
from tests.conftest import compose_train

RIGHT_JUMP = 0b10000011  # right + A + B, as a controller byte


def play(env: LevelSet, buttons: list[int]) -> list[tuple[np.ndarray, np.ndarray, dict]]:
    """Gray screen, RAM and info after each NES frame of ``buttons``."""
    seen = []
    for button in buttons:
        _, _, terminated, _, info = env.step(button)
        assert not terminated
        gray = env.observation(OBSERVATION_MODE_GRAYSCALE, output=np.zeros((240, 256), np.uint8))
        seen.append((gray.copy(), env.ram.copy(), {k: info[k] for k in ("x_pos", "y_pos", "time", "score")}))
    return seen


def same(a: list, b: list) -> bool:
    return all(
        (g1 == g2).all() and (r1 == r2).all() and i1 == i2 for (g1, r1, i1), (g2, r2, i2) in zip(a, b, strict=True)
    )


def test_a_restored_state_replays_the_original_trajectory_from_its_snapshot_and_from_its_prefix():
    rng = np.random.default_rng(0)
    prefix = [int(b) for b in rng.choice([0b10000000, RIGHT_JUMP, 0b10000010], size=200)]
    after = [int(b) for b in rng.choice([0b10000000, RIGHT_JUMP, 0], size=120)]
    env = LevelSet("smb", ["1-1"])
    env.reset(seed=0)
    play(env, prefix)
    snapshot = env.nes.dump_state()
    x_there = env.nes._x_position
    original = play(env, after)
    assert len({info["x_pos"] for _, _, info in original}) > 10  # Mario moves on: the comparison means something

    env.reset(seed=1)
    env.pool.add("1-1", StartState(x_there, np.asarray(prefix, np.uint8), snapshot))
    env._restore(env.pool.draw("1-1", rng))
    assert same(play(env, after), original)

    # A checkpoint keeps no snapshot, only the prefix: rebuilt, the state plays the same frames.
    other = LevelSet("smb", ["1-1"])
    other.reset(seed=2)
    rebuilt = StartState(x_there, np.asarray(prefix, np.uint8))
    other._restore(rebuilt)
    assert rebuilt.snapshot is not None
    assert same(play(other, after), original)


def test_a_vector_env_over_four_levels_plays_each_of_them_without_new_workers():
    cfg = default_run(env=dict(levels=["1-1", "1-2", "1-3", "1-4"], num_envs=2, vector="sync", stuck_patience=10)).env
    envs = make_vector_env(cfg)
    try:
        envs.reset(seed=0)
        emulators = [id(e.unwrapped) for e in envs.envs]
        played = Counter()
        rng = np.random.default_rng(0)
        for _ in range(300):
            _, _, terminated, truncated, info = envs.step(rng.integers(5, size=2))
            for i in np.flatnonzero(terminated | truncated):
                final = info["final_info"]
                world, stage, level = final["world"][i], final["stage"][i], final["level"][i]
                assert f"{world}-{stage}" == level  # the emulator really played the level it reports
                played[level] += 1
        assert set(played) == {"1-1", "1-2", "1-3", "1-4"}
        assert [id(e.unwrapped) for e in envs.envs] == emulators  # same LevelSet per worker throughout
    finally:
        envs.close()


def test_adaptive_sampling_draws_a_failing_level_more_often_than_a_cleared_one():
    sampler = LevelSampler(["1-1", "1-2", "1-3"], "adaptive", window=10, floor=0.1)
    for _ in range(10):
        sampler.record("1-1", cleared=True)  # never fails: the floor's weight, 0.1
    for cleared in [True] * 5 + [False] * 5:
        sampler.record("1-2", cleared)  # fails half the time: 0.5
    # 1-3 has no episode yet: weight 1, as a level that always fails
    np.testing.assert_allclose(sampler.weights(), np.array([0.1, 0.5, 1.0]) / 1.6)
    rng = np.random.default_rng(0)
    counts = Counter(sampler.draw(rng) for _ in range(16_000))
    assert counts["1-1"] < counts["1-2"] < counts["1-3"]
    assert counts["1-1"] / 16_000 == pytest.approx(0.1 / 1.6, abs=0.01)
    # only the last `window` episodes count: ten failures of 1-1 push out its ten clears
    for _ in range(10):
        sampler.record("1-1", cleared=False)
    assert sampler.weights()[0] == pytest.approx(1.0 / 2.5)
    uniform = LevelSampler(["1-1", "1-2"], "uniform", window=10, floor=0.1)
    uniform.record("1-1", cleared=False)
    np.testing.assert_allclose(uniform.weights(), [0.5, 0.5])


def test_the_pool_keeps_the_newest_states_per_level_and_round_trips_as_plain_data():
    pool = StartStatePool(["1-1", "1-2"], size=2)
    for x in (10, 20, 30):
        pool.add("1-1", StartState(x, np.full(x, 1, np.uint8), snapshot=object()))
    pool.add("2-1", StartState(5, np.zeros(5, np.uint8)))  # not a level of this pool: ignored
    assert [s.x_pos for s in pool.entries["1-1"]] == [20, 30] and len(pool) == 2
    back = StartStatePool(["1-1", "1-2"], size=2)
    back.load_state_dict(pool.state_dict())
    assert [(s.x_pos, s.prefix.tolist(), s.snapshot) for s in back.entries["1-1"]] == [
        (20, [1] * 20, None),
        (30, [1] * 30, None),
    ]


def frontier_config(**changes) -> EnvConfig:
    cfg = default_run(
        env=dict(
            levels=["1-1", "1-2"],
            start_states="frontier",
            start_state_prob=1.0,
            start_state_lead=4,
            stuck_patience=12,
            num_envs=2,
            vector="sync",
        )
    ).env
    return replace(cfg, **changes)


def test_evaluation_envs_start_every_episode_at_the_level_start():
    """make_env with a level (what evaluation and videos use) never draws a start state."""
    cfg = frontier_config()
    env = make_env(cfg, "1-1")
    base = env.unwrapped
    assert not base.frontier
    base.pool.add("1-1", StartState(900, np.zeros(1, np.uint8), snapshot=base.nes.dump_state()))
    for seed in range(5):
        _, info = env.reset(seed=seed)
        assert (info["x_pos"], info["restored"], info["level"]) == (40, False, "1-1")
    env.close()


def test_the_replay_never_stacks_or_bootstraps_across_a_restored_start():
    run = load(compose_train(["debug=default", "env.vector=sync", "agent.n_step=3"], Path("/tmp")))
    run = replace(run, env=frontier_config())
    stream = ExperienceStream(run, EpsilonGreedy(torch.nn.Identity(), 5, seed=0))
    stream._open()
    try:
        for _ in range(400):
            stream.collector.launch(1.0, stream.env_steps)  # random actions: the network is never asked
            stream._write(stream.collector.receive(stream.env_steps))
        episodes = list(stream.finished)
    finally:
        stream.close()
    assert any(e.restored for e in episodes), "no episode began from a start state; the test checks nothing"
    replay = stream.replay
    for env in range(replay.num_envs):
        n = int(min(replay.written[env], replay.per_env))
        firsts = np.flatnonzero(replay.first[env, :n])
        assert len(firsts) > 3
        for slot in firsts:
            stack = replay.stacks(np.array([env]), np.array([slot]))[0]
            # a stack at an episode start repeats its first frame, as FrameStackObservation's reset padding does
            assert (stack == replay.frames[env, slot]).all()
            if slot >= 1 and replay.has_action[env, slot - 1]:
                # the slot before a start is an episode's last transition: its window ends there
                pytest.fail("a transition runs into the next episode's first frame")
        valid = np.flatnonzero(replay._valid(np.full(n, env), np.arange(n)))
        _, _, bootstrap = replay.n_step_targets(np.full(len(valid), env), valid)
        for slot, boot in zip(valid, bootstrap, strict=True):
            between = np.arange(slot + 1, boot + 1) % replay.per_env
            assert not replay.first[env, between].any(), f"slot {slot} bootstraps across an episode start"


def test_levels_are_validated_before_any_emulator_starts(tmp_path):
    for overrides, message in [
        (["env.levels=[1-1,9-9]"], "env.levels='9-9' is not a level of smb"),
        (["env.levels=[1-1,1-2,1-1]"], "lists 1-1 more than once"),
        (["env.levels=[]"], "env.levels=[] is not allowed; it must be a non-empty list of levels"),
        (["env.levels=[1-1,mario3:1-1]"], "names no game"),
        (["env.level_sampling=greedy"], "env.level_sampling='greedy' is not allowed; choose one of: uniform, adaptive"),
        (["env.start_states=random"], "env.start_states='random' is not allowed; choose one of: off, frontier"),
        (["env.start_state_prob=1.5"], "env.start_state_prob=1.5 is not allowed; it must be in [0, 1]"),
        (["env.start_state_pool=0"], "env.start_state_pool=0 is not allowed; it must be an integer >= 1"),
        (["env.level_floor=0"], "env.level_floor=0.0 is not allowed; it must be in (0, 1]"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
            load(compose_train(overrides, tmp_path))
    with pytest.raises(ConfigError, match=r"env\.level and env\.levels are both set"):
        check_level_overrides(["env.level=1-2", "env.levels=[1-1]"])
    run = load(compose_train(["env.levels=[1-3,lost_levels:1-1]"], tmp_path))
    assert (run.env.level, run.env.training_levels) == ("1-3", ["1-3", "lost_levels:1-1"])
    assert (
        env_id("smb", "lost_levels:1-1") == "SuperMarioBros2-1-1-v0"
        and level_tag("lost_levels:1-1") == "lost_levels-1-1"
    )


def test_a_checkpoint_from_before_levels_loads_as_a_one_level_run():
    hparams = {"run": {"env": {"level": "1-3", "release_jump": True}, "agent": {}, "replay": {}}}
    run = run_config_from(hparams)
    assert (run.env.training_levels, run.env.start_states) == (["1-3"], "off")


def test_flag_fraction_is_known_where_the_flag_was_measured():
    assert flag_fraction("1-1", 3161 / 2) == pytest.approx(0.5)
    assert flag_fraction("1-1", 4000) == 1.0
    assert flag_fraction("5-3", 100) is None


@pytest.mark.slow
def test_a_two_level_frontier_run_logs_per_level_and_resumes_with_its_start_states(tmp_path):
    overrides = [
        "debug=default",
        "env.vector=sync",
        "env.levels=[1-1,1-2]",
        "env.start_states=frontier",
        "env.start_state_lead=4",
        "env.stuck_patience=12",
        "env_steps=600",
    ]
    train(compose_train(overrides, tmp_path))
    per_level = per_level_metrics(tmp_path, "rollout/x_pos")
    assert set(per_level) == {"1-1", "1-2"}
    tags = set(per_level_metrics(tmp_path, "eval/x_pos_mean")) | set(per_level_metrics(tmp_path, "rollout/episodes"))
    assert tags == {"1-1", "1-2"}
    first = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    workers = first["stream"]["workers"]
    saved = {(level, e["prefix"]) for w in workers for level, entries in w["pool"].items() for e in entries}
    assert saved, "the run kept no start state; the resume checks nothing"
    assert {level for level, _ in saved} <= {"1-1", "1-2"}

    resume = ["ckpt_path=last", "env_steps=700"]
    train(compose_train([*overrides[:2], *resume], tmp_path), overrides=resume)
    last = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert last["stream"]["env_steps"] == 700
    kept = {
        (level, e["prefix"]) for w in last["stream"]["workers"] for level, entries in w["pool"].items() for e in entries
    }
    # the pool came back into the workers (16 per level: none has been pushed out by new states yet)
    assert saved <= kept
    assert sum(last["level_counts"].values()) >= sum(first["level_counts"].values())
