"""A real training run through the Hydra config: emulator, replay, Lightning, TensorBoard."""

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mario_rl.training import train
from tests.conftest import compose_train

METRICS = {
    "train/loss",
    "train/q_mean",
    "train/epsilon",
    "train/updates",
    "rollout/episode_return",
    "rollout/episode_length",
    "rollout/x_pos",
    "rollout/clear_rate",
    "time/env_steps_per_s",
    "time/updates_per_s",
    "replay/size",
}


def test_short_run_leaves_checkpoints_and_tensorboard_metrics(tmp_path, tiny_overrides):
    cfg = compose_train([*tiny_overrides, "env.max_episode_steps=60"], tmp_path)
    metrics = train(cfg)
    ckpts = tmp_path / "checkpoints"
    # checkpoint_every 200 (debug), counted in env steps from 0
    assert sorted(p.name for p in ckpts.glob("env_steps_*.ckpt")) == ["env_steps_200.ckpt", "env_steps_400.ckpt"]
    periodic = torch.load(ckpts / "env_steps_200.ckpt", weights_only=True)
    assert periodic["stream"]["env_steps"] == 200 and periodic["global_step"] == (200 - 64) // 4  # one batch in flight
    last = torch.load(ckpts / "last.ckpt", weights_only=False)
    assert last["stream"]["env_steps"] == 400
    # updates from env step 64 (learning_starts) to 400, one per 4 env steps
    assert last["global_step"] == last["stream"]["updates"] == (400 - 64) // 4 + 1
    assert (ckpts / "replay" / "meta.json").is_file()

    events = EventAccumulator(str(next((tmp_path / "tensorboard").glob("events.*"))))
    events.Reload()
    assert set(events.Tags()["scalars"]) >= METRICS
    # the x-axis is env steps: the last loss point sits near the 400-step budget
    assert 380 <= events.Scalars("train/loss")[-1].step <= 400
    assert 0 < events.Scalars("rollout/episode_length")[-1].value <= 60  # the time limit holds
    assert metrics["train/epsilon"] < 1.0
    hparams = (tmp_path / "tensorboard" / "hparams.yaml").read_text()
    assert "level: 1-1" in hparams and "gamma: 0.9" in hparams


def test_metrics_written_every_n_updates_are_placed_at_env_steps(tmp_path, tiny_overrides):
    # a throughput window far shorter than a batch logs the live speed on every update, whatever the machine's speed
    overrides = ["trainer.log_every_n_steps=7", "callbacks.eval.every=100000", "callbacks.throughput.window_s=1e-6"]
    train(compose_train([*tiny_overrides, *overrides], tmp_path))
    events = EventAccumulator(str(next((tmp_path / "tensorboard").glob("events.*"))))
    events.Reload()
    updates = events.Scalars("train/updates")
    # 85 updates (env steps 64..400, one per 4), written on every 7th
    assert [int(e.value) for e in updates] == list(range(7, 86, 7))
    for point in updates:
        # the update count u was trained on about 64 + 4 (u - 1) env steps, one vector step of 2 either way
        assert abs(point.step - (64 + 4 * (point.value - 1))) <= 2
    # the throughput callback's metrics, logged on every update, are written on the same env-step points only
    assert {e.step for e in events.Scalars("time/env_steps_per_s")} == {e.step for e in updates}


def test_prioritized_run_leaves_a_checkpoint_its_priorities_and_the_beta_curve(tmp_path, tiny_overrides):
    cfg = compose_train([*tiny_overrides, "env.max_episode_steps=60", "replay.prioritized=true"], tmp_path)
    train(cfg)
    ckpts = tmp_path / "checkpoints"
    last = torch.load(ckpts / "last.ckpt", weights_only=False)
    assert last["stream"]["env_steps"] == 400 and last["hyper_parameters"]["run"]["replay"]["prioritized"] is True
    # 85 updates of 32 draws each gave most of the ~400 stored transitions a TD error of their own
    stored = np.load(ckpts / "replay" / "has_action.npy")
    priorities = np.load(ckpts / "replay" / "priorities.npy")
    assert (priorities[stored] != 1.0).mean() > 0.5
    events = EventAccumulator(str(next((tmp_path / "tensorboard").glob("events.*"))))
    events.Reload()
    beta = events.Scalars("replay/priority_beta")
    # 0.4 at env step 0, linear to 1 at the 400-step budget
    assert [p.value for p in beta] == pytest.approx([0.4 + 0.6 * p.step / 400 for p in beta])
    assert 380 <= beta[-1].step <= 400
