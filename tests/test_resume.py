"""A resume resumes, or says in one line why it cannot, before any emulator starts (mario_rl/resume.py)."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mario_rl import training
from mario_rl.checkpointing import load_checkpoint
from mario_rl.config import ConfigError
from mario_rl.data import ExperienceStream
from mario_rl.export import export
from mario_rl.module import DQN
from mario_rl.outcome import run_job
from mario_rl.replay import ReplayBuffer
from mario_rl.resume import continue_in, prepare, resumed_run
from mario_rl.training import train
from tests.conftest import ROOT, compose_train

# trained_run's own settings (conftest), which a resume takes from its checkpoint anyway
TINY = ["debug=default", "env.vector=sync", "env.max_episode_steps=20"]


def copy_run(trained_run: Path, to: Path, replay: bool = True) -> Path:
    """A run dir holding trained_run's last.ckpt (400 env steps, 85 updates) [and its replay]."""
    (to / "checkpoints").mkdir(parents=True)
    shutil.copy(trained_run / "checkpoints" / "last.ckpt", to / "checkpoints" / "last.ckpt")
    if replay:
        shutil.copytree(trained_run / "checkpoints" / "replay", to / "checkpoints" / "replay")
    return to


def test_a_resume_whose_replay_is_gone_refills_it_then_trains(trained_run, tmp_path, caplog):
    run = copy_run(trained_run, tmp_path / "run", replay=False)  # replay.save=false, or deleted to free disk
    resume = ["ckpt_path=last", "env_steps=520"]
    with caplog.at_level(logging.WARNING, logger="mario_rl.resume"):
        train(compose_train([*TINY, *resume], run), overrides=resume)
    # debug's learning_starts is 64: the same warm-up again, from the checkpoint's 400 env steps
    assert "collecting 64 env steps, to env step 464, before updates resume" in caplog.text
    last = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert last["stream"]["env_steps"] == 520
    # 85 updates before; then one per 4 env steps from env step 464 on, none before
    assert last["global_step"] == last["stream"]["updates"] == 85 + (520 - 464) // 4 + 1
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    # the first batch is drawn while the vector step that reaches 464 is in flight (2 workers)
    assert events.Scalars("train/loss")[0].step == 462


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("env.frame_stack=2", "env.frame_stack=2 cannot change on resume: checkpoint {ckpt} has env.frame_stack=4"),
        ("env.frame_size=64", "env.frame_size=64 cannot change on resume: checkpoint {ckpt} has env.frame_size=84"),
        (
            "env.actions=simple",
            "env.actions='simple' cannot change on resume: checkpoint {ckpt} has env.actions='right_only'",
        ),
        (
            "agent.dueling=false",
            "agent.dueling=False cannot change on resume: checkpoint {ckpt} has agent.dueling=True",
        ),
        (
            "env.num_envs=4",
            "env.num_envs=4 cannot change on resume: checkpoint {ckpt} has env.num_envs=2 (the saved replay",
        ),
        (
            "replay.capacity=4000",
            "replay.capacity=4000 cannot change on resume: checkpoint {ckpt} has replay.capacity=2000",
        ),
    ],
)
def test_a_key_that_cannot_change_on_resume_is_one_line_before_any_emulator_starts(
    trained_run, monkeypatch, override, message
):
    def no_emulator(self):
        raise AssertionError("an emulator started")

    monkeypatch.setattr(ExperienceStream, "_open", no_emulator)
    resume = ["ckpt_path=last", "env_steps=480", override]
    with pytest.raises(ConfigError) as err:
        train(compose_train([*TINY, *resume], trained_run), overrides=resume)
    assert str(err.value).startswith(message.format(ckpt=trained_run / "checkpoints" / "last.ckpt"))
    assert "\n" not in str(err.value)


def test_the_replay_layout_may_change_once_the_saved_replay_is_gone(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run", replay=False)
    resume = ["ckpt_path=last", "env_steps=480", "env.num_envs=4", "replay.capacity=4000"]
    resumed = prepare(compose_train([*TINY, *resume], run), resume)
    assert resumed.replay is None and (resumed.run.env.num_envs, resumed.run.replay.capacity) == (4, 4000)


def test_a_resume_by_path_from_another_hydra_dir_records_the_outcome_in_the_runs_own_dir(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    (run / "status.json").write_text(json.dumps({"status": "failed", "error": "stopped by SIGTERM"}))
    other = tmp_path / "other"
    ckpt = run / "checkpoints" / "last.ckpt"
    done = subprocess.run(
        [sys.executable, "train.py", *TINY, f"ckpt_path={ckpt}", "env_steps=440", f"hydra.run.dir={other}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert load_checkpoint(ckpt)["stream"]["env_steps"] == 440  # it trained in the run's dir
    assert json.loads((run / "status.json").read_text()) == {"status": "ok"}
    assert json.loads((other / "status.json").read_text()) == {"status": "ok"}


def truncated(trained_run: Path, tmp_path: Path) -> Path:
    path = tmp_path / "cut.ckpt"
    path.write_bytes((trained_run / "checkpoints" / "last.ckpt").read_bytes()[:5000])
    return path


def empty(trained_run: Path, tmp_path: Path) -> Path:
    path = tmp_path / "empty.ckpt"
    path.touch()
    return path


def foreign(trained_run: Path, tmp_path: Path) -> Path:
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    return path


def exported(trained_run: Path, tmp_path: Path) -> Path:
    return export(trained_run / "checkpoints" / "last.ckpt", tmp_path / "agent.bin.safetensors")


def renamed_export(trained_run: Path, tmp_path: Path) -> Path:
    """An export whose name says nothing: told by its content."""
    return exported(trained_run, tmp_path).rename(tmp_path / "agent.ckpt")


def empty_dir(trained_run: Path, tmp_path: Path) -> Path:
    (tmp_path / "nothing").mkdir()
    return tmp_path / "nothing"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda run, tmp: run / "checkpoints" / "best.ckpt", r"best\.ckpt: weights only .* resume from last\.ckpt"),
        (exported, r"agent\.bin\.safetensors: an exported model .* evaluate\.py plays it"),
        (renamed_export, r"agent\.ckpt: an exported model"),
        (foreign, r"other\.ckpt: not a mario-rl training checkpoint"),
        (truncated, r"cut\.ckpt: corrupt or truncated \(\w+Error"),
        (empty, r"empty\.ckpt: the file is empty"),
        (empty_dir, r"^ckpt_path=.*nothing: a directory without checkpoints/last\.ckpt or last\.ckpt"),
        (lambda run, tmp: tmp / "nope.ckpt", r"^ckpt_path=.*nope\.ckpt: no such file$"),
    ],
    ids=["best", "safetensors", "renamed-safetensors", "foreign", "truncated", "empty", "empty-dir", "missing"],
)
def test_every_kind_of_file_that_cannot_resume_says_why_in_one_line(trained_run, tmp_path, make, message):
    path = make(trained_run, tmp_path)
    resume = [f"ckpt_path={path}", "env_steps=480"]
    with pytest.raises(ConfigError, match=message) as err:
        prepare(compose_train([*TINY, *resume], tmp_path / "new"), resume)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("given", ["run", "checkpoints"])
def test_a_run_dir_stands_for_its_last_checkpoint(trained_run, tmp_path, given):
    run = copy_run(trained_run, tmp_path / "run")
    resume = [f"ckpt_path={run if given == 'run' else run / 'checkpoints'}", "env_steps=480"]
    resumed = prepare(compose_train([*TINY, *resume], tmp_path / "new"), resume)
    assert resumed.ckpt_path == run / "checkpoints" / "last.ckpt" and resumed.run_dir == run


def test_a_budget_with_nothing_left_is_refused(trained_run, tmp_path):
    resume = ["ckpt_path=last", "env_steps=400"]
    with pytest.raises(ConfigError, match=r"^env_steps=400: checkpoint .* is already at 400 env steps"):
        prepare(compose_train([*TINY, *resume], trained_run), resume)
    run = copy_run(trained_run, tmp_path / "run", replay=False)
    resume = ["ckpt_path=last", "env_steps=450"]
    with pytest.raises(ConfigError, match=r"no saved replay in .*, so the run refills it until env step 464"):
        prepare(compose_train([*TINY, *resume], run), resume)


def test_the_evaluation_follows_the_run_unless_the_command_names_it(trained_run):
    ckpt = load_checkpoint(trained_run / "checkpoints" / "last.ckpt")
    path = trained_run / "checkpoints" / "last.ckpt"
    # the run evaluated on debug's settings: 1 episode capped at 30 steps, every 200 env steps
    assert ckpt["callbacks"]["Evaluation"] | {"seed": 0} == {
        "every": 200,
        "episodes": 1,
        "epsilon": 0.05,
        "levels": None,
        "max_episode_steps": 30,
        "stuck_patience": 250,
        "video": True,
        "seed": 0,
    }
    plain = ["ckpt_path=last"]  # a resume without debug=default: the defaults would say 10 episodes, no cap
    cfg = compose_train(plain, trained_run)
    continue_in(cfg, resumed_run(ckpt, cfg, plain, path), ckpt, plain)
    assert (cfg.callbacks.eval.episodes, cfg.callbacks.eval.max_episode_steps, cfg.callbacks.eval.every) == (1, 30, 200)
    named = ["ckpt_path=last", "callbacks.eval.epsilon=0.2", "callbacks.eval.episodes=3", "checkpoint_every=500"]
    cfg = compose_train(named, trained_run)
    continue_in(cfg, resumed_run(ckpt, cfg, named, path), ckpt, named)
    assert (cfg.callbacks.eval.epsilon, cfg.callbacks.eval.episodes) == (0.2, 3)
    assert cfg.callbacks.eval.every == 500 and cfg.callbacks.eval.max_episode_steps == 30  # every follows the cadence


def checkpoint_files(run: Path) -> dict[str, bytes]:
    """Every file under the run's checkpoints dir (last.ckpt, the replay), by path."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted((run / "checkpoints").rglob("*")) if p.is_file()}


def interrupt(*args: object) -> None:
    raise KeyboardInterrupt  # what a second Ctrl-C raises, wherever the learner is


@pytest.mark.parametrize("where", [(DQN, "on_load_checkpoint"), (ReplayBuffer, "load")], ids=["checkpoint", "replay"])
def test_a_stop_while_a_resume_restores_its_run_leaves_the_run_as_it_was(trained_run, tmp_path, monkeypatch, where):
    # A save there would write a half-restored run (fresh counters, an empty replay) over the whole one.
    run = copy_run(trained_run, tmp_path / "run")
    before = checkpoint_files(run)
    monkeypatch.setattr(*where, interrupt)
    resume = ["ckpt_path=last", "env_steps=480"]
    with pytest.raises(SystemExit):  # Lightning ends a KeyboardInterrupt with sys.exit(1)
        train(compose_train([*TINY, *resume], run), overrides=resume)
    assert checkpoint_files(run) == before


def sigterm_then(function):
    def sent(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return function(*args, **kwargs)

    return sent


@pytest.mark.parametrize(
    ("where", "message", "saved_at"),
    [
        # while the checkpoint is read: stopped before training begins, nothing written
        ((training, "prepare"), "stopped by SIGTERM before training began; its files are as they were", None),
        # before the Trainer's own handler is in place, or while the replay is read back: the
        # first vector step (2 envs) stops the whole run, saved
        ((DQN, "on_load_checkpoint"), "stopped by SIGTERM at env step 402; saved, resume with ckpt_path=last", 402),
        ((ReplayBuffer, "load"), "stopped by SIGTERM at env step 402; saved, resume with ckpt_path=last", 402),
    ],
    ids=["build", "checkpoint", "replay"],
)
def test_a_sigterm_while_a_resume_starts_stops_it_with_its_status_and_the_run_intact(
    trained_run, tmp_path, monkeypatch, where, message, saved_at
):
    run = copy_run(trained_run, tmp_path / "run")
    before = checkpoint_files(run)
    monkeypatch.setattr(*where, sigterm_then(getattr(*where)))
    resume = ["ckpt_path=last", "env_steps=480"]
    with pytest.raises(SystemExit) as exit_:
        run_job(lambda: train(compose_train([*TINY, *resume], run), overrides=resume), run, multirun=False)
    assert exit_.value.code == 1
    assert json.loads((run / "status.json").read_text()) == {"status": "failed", "error": message}
    if saved_at is None:
        assert checkpoint_files(run) == before
    else:
        last = load_checkpoint(run / "checkpoints" / "last.ckpt")
        assert last["stream"]["env_steps"] == saved_at and last["global_step"] == 85
