"""Evaluation during training, its video and the network-input image in TensorBoard, the best checkpoint."""

import io
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from pytorch_lightning.utilities.exceptions import SIGTERMException
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mario_rl import evaluation as evaluation_module
from mario_rl.callbacks import Evaluation, side_by_side
from mario_rl.config import ConfigError, RunConfig, default_run, run_dict
from mario_rl.evaluation import play_episode
from mario_rl.module import DQN
from tests.conftest import compose_train


@pytest.fixture(scope="module")
def events(trained_run: Path) -> EventAccumulator:
    acc = EventAccumulator(str(trained_run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_the_event_file_holds_the_evaluation_video_as_an_animated_gif(events):
    # debug: eval each time the env-step counter crosses a multiple of 200, counted from 0
    videos = events.Images("eval/video")
    assert [v.step for v in videos] == [200, 400]
    video = videos[0]
    assert (video.width, video.height) == (256, 240)
    gif = Image.open(io.BytesIO(video.encoded_image_string))
    assert gif.format == "GIF" and gif.size == (256, 240) and gif.n_frames > 10
    # the debug eval runs 30 agent steps at most: 1 + 4 * 30 NES frames, every 2nd kept
    assert gif.n_frames <= 61


def test_evaluation_scalars_are_logged_against_env_steps(events):
    for name in ("eval/return_mean", "eval/x_pos_mean", "eval/clear_rate", "eval/length_mean"):
        assert [p.step for p in events.Scalars(name)] == [200, 400]
    for x_pos, length in zip(events.Scalars("eval/x_pos_mean"), events.Scalars("eval/length_mean"), strict=True):
        assert x_pos.value > 40 and 1 <= length.value <= 30  # Mario starts at x 40; debug eval cap is 30 steps


def test_tensorboard_shows_the_stacked_frames_the_network_sees(events):
    [image] = events.Images("input/stacked_frames")
    assert (image.width, image.height) == (4 * 84 + 3 * 2, 84)
    pixels = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))
    assert (pixels[:, 84:86] == 255).all() and pixels[:, :84].std() > 5  # a white bar between real frames


def test_the_best_checkpoint_holds_the_weights_of_the_best_evaluation(trained_run, events):
    best = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)
    scores = {p.step: p.value for p in events.Scalars("eval/x_pos_mean")}
    step = max(scores, key=lambda s: (scores[s], -s))  # the first of the best: a tie does not replace it
    assert "optimizer_states" not in best and best["stream"]["env_steps"] == step  # weights only, at the evaluation
    periodic = torch.load(trained_run / "checkpoints" / f"env_steps_{step}.ckpt", weights_only=True)
    assert all(torch.equal(best["state_dict"][k], v) for k, v in periodic["state_dict"].items())
    last = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["callbacks"]["BestCheckpoint"] == {"best": scores[step], "monitor": "eval/x_pos_mean"}


def test_side_by_side_puts_the_frames_in_a_row_oldest_first():
    stack = np.stack([np.full((3, 2), 10 * (i + 1), np.uint8) for i in range(4)])
    row = side_by_side(stack, gap=1)
    assert row.shape == (3, 4 * 2 + 3)
    assert row[0].tolist() == [10, 10, 255, 20, 20, 255, 30, 30, 255, 40, 40]


def tiny_run() -> RunConfig:
    return default_run(
        env=dict(num_envs=1, vector="sync", max_episode_steps=15),
        agent=dict(learning_starts=16, batch_size=4, epsilon_decay_steps=100),
        replay=dict(capacity=200, save=False),
        env_steps=1_000,
    )


def evaluation(tmp_path: Path, **settings: object) -> Evaluation:
    """The eval callback with conf/callbacks/default.yaml's settings, ``settings`` on top."""
    defaults = OmegaConf.to_container(compose_train([], tmp_path).callbacks.eval, resolve=True)
    del defaults["_target_"]
    return Evaluation(**(defaults | settings))


def started(run: RunConfig) -> tuple[DQN, object]:
    torch.manual_seed(0)
    module = DQN(run_dict(run))
    module.train_dataloader()
    batches = iter(module.stream)
    for _ in range(10):
        next(batches)
    return module, batches


def test_evaluation_leaves_the_training_stream_exactly_as_it_was(tmp_path):
    run = tiny_run()
    control, control_batches = started(run)
    module, batches = started(run)
    before = (np.random.get_state()[1].copy(), torch.get_rng_state(), random.getstate(), torch.get_num_threads())
    metrics, best = evaluation(tmp_path, episodes=2, epsilon=0.5, levels=["1-2"]).play(module.run, module.online)
    after = (np.random.get_state()[1], torch.get_rng_state(), random.getstate(), torch.get_num_threads())
    assert (before[0] == after[0]).all() and torch.equal(before[1], after[1]) and before[2:] == after[2:]
    assert set(metrics) >= {"eval/x_pos_mean", "eval/1-1/x_pos_mean", "eval/1-2/x_pos_mean"}
    assert metrics["eval/x_pos_mean"] == pytest.approx(
        (metrics["eval/1-1/x_pos_mean"] + metrics["eval/1-2/x_pos_mean"]) / 2
    )
    assert best.length <= 15
    for _ in range(5):  # training goes on as if no evaluation had run: same actions, replay, batches
        a, b = next(batches), next(control_batches)
        assert a["env_steps"] == b["env_steps"] and a["epsilon"] == b["epsilon"]
        assert all(torch.equal(a[k], b[k]) for k in ("obs", "actions", "returns", "next_obs"))
    assert module.stream.state_dict()["policy_rng"] == control.stream.state_dict()["policy_rng"]
    module.stream.close()
    control.stream.close()


def test_a_sigterm_during_an_evaluation_ends_it_after_the_episode_in_play(tmp_path, monkeypatch):
    # An evaluation of several levels plays for a minute or more; a pre-empted job that waited
    # for all of it was killed before it could save.
    module = DQN(run_dict(tiny_run()))
    trainer = SimpleNamespace(received_sigterm=False, loggers=[], callback_metrics={})
    played = []

    sigterm = [True]

    def play_then_get_a_sigterm(*args):
        played.append(args)
        trainer.received_sigterm = sigterm[0]  # as Lightning notes the signal
        return play_episode(*args)

    monkeypatch.setattr(evaluation_module, "play_episode", play_then_get_a_sigterm)
    callback = evaluation(tmp_path, episodes=3, levels=["1-2"])
    with pytest.raises(SIGTERMException):
        callback.on_env_steps(trainer, module, 0, callback.every)
    assert len(played) == 1 and trainer.callback_metrics == {}
    sigterm[0] = trainer.received_sigterm = False
    played.clear()
    callback.on_env_steps(trainer, module, 0, callback.every)  # without the signal, every episode
    assert len(played) == 2 * 3 and trainer.callback_metrics["eval/x_pos_mean"] > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every": 0}, r"callbacks.eval.every=0 is not allowed"),
        ({"episodes": 0}, r"callbacks.eval.episodes=0 is not allowed"),
        ({"epsilon": 1.5}, r"callbacks.eval.epsilon=1.5 is not allowed"),
    ],
)
def test_bad_evaluation_settings_are_refused(kwargs, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        evaluation(tmp_path, **kwargs)


def test_an_unknown_evaluation_level_names_the_allowed_ones(tmp_path):
    module = DQN(run_dict(tiny_run()))
    with pytest.raises(ConfigError, match=r"callbacks.eval.levels='9-9' is not a level of smb; use W-S with W in 1..8"):
        evaluation(tmp_path, levels=["9-9"]).setup(None, module, "fit")


def losses(out: Path) -> list[tuple[int, float]]:
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars("train/loss")]


def test_a_run_with_frequent_evaluations_trains_exactly_like_one_without(tiny_overrides, tmp_path):
    from mario_rl.training import train

    common = [*tiny_overrides, "env_steps=300", "env.max_episode_steps=40"]
    train(compose_train([*common, "~callbacks.eval", "~callbacks.best_checkpoint"], tmp_path / "without"))
    train(compose_train([*common, "callbacks.eval.every=40", "callbacks.eval.episodes=2"], tmp_path / "with"))
    with_eval = EventAccumulator(str(tmp_path / "with" / "tensorboard"))
    with_eval.Reload()
    # every multiple of 40 env steps the counter crossed, from 0, the warm-up's (before step 64) included
    assert [e.step for e in with_eval.Scalars("eval/x_pos_mean")] == [40, 80, 120, 160, 200, 240, 280]
    assert losses(tmp_path / "with") == losses(tmp_path / "without") and len(losses(tmp_path / "without")) > 50
