"""Checkpoints load weights-only, fail in one line, survive a failed save, and resume runs."""

import os
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from pytorch_lightning.utilities.exceptions import SIGTERMException
from submitit.core.utils import UncompletedJobError

from mario_rl.checkpointing import SafeCheckpointIO, SaveOnInterrupt, load_checkpoint
from mario_rl.config import ConfigError, default_run, run_dict
from mario_rl.errors import NonFiniteLossError
from mario_rl.module import DQN
from mario_rl.resume import continue_in, resolve_ckpt_path, resumed_run
from mario_rl.training import train
from tests.conftest import compose_train


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A real 400-step run (sync workers) and its output dir; it ends before its first periodic checkpoint."""
    out = tmp_path_factory.mktemp("run")
    train(compose_train(["debug=default", "env.vector=sync", "agent.dueling=true", "checkpoint_every=1000"], out))
    return out


def test_a_finished_run_resumes_to_a_larger_budget_in_its_own_dir(finished_run, tmp_path):
    first = load_checkpoint(finished_run / "checkpoints" / "last.ckpt")
    assert first["stream"]["env_steps"] == 400
    # the run was trained with agent.dueling=true; the resume's command line does not repeat it
    resume = ["env_steps=640", "ckpt_path=last", "checkpoint_every=200"]
    cfg = compose_train(["debug=default", "env.vector=sync", *resume], finished_run)
    train(cfg, overrides=resume)
    last = load_checkpoint(finished_run / "checkpoints" / "last.ckpt")
    assert last["stream"]["env_steps"] == 640
    assert last["hyper_parameters"]["run"]["agent"]["dueling"] is True
    assert any(k.startswith("online.value.") for k in last["state_dict"])
    # the update count continues: (640 - 64) // 4 + 1, not a fresh run's count
    assert last["global_step"] == last["stream"]["updates"] == 145
    assert last["stream"]["episodes"] >= first["stream"]["episodes"]
    # the rollout/* window (20 episodes) goes on from the episodes before the stop
    window = (first["recent_episodes"] + [e for e in last["recent_episodes"] if e["env_steps"] > 400])[-20:]
    assert first["recent_episodes"] and last["recent_episodes"] == window
    # the replay came back and grew by the 240 new steps (2 workers x 120 slots each), the 2
    # reset frames of the resume, and one reset frame per episode that ended after it
    ended = last["stream"]["episodes"] - first["stream"]["episodes"]
    assert sum(last["replay_written"]) == sum(first["replay_written"]) + 240 + 2 + ended
    assert len(list((finished_run / "tensorboard").glob("events.*"))) == 2  # one file per process, one dir
    # The resume's periodic save (at env step 600, the multiple of 200 it crossed) went to
    # last.ckpt too, which ckpt_path=last reads; the first part ended before its first save at 1000.
    names = sorted(p.name for p in (finished_run / "checkpoints").glob("*.ckpt"))
    assert names == ["best.ckpt", "env_steps_600.ckpt", "last.ckpt"]
    assert load_checkpoint(finished_run / "checkpoints" / "env_steps_600.ckpt")["stream"]["env_steps"] == 600


def test_a_resume_saves_and_evaluates_on_the_runs_cadence_not_this_commands(finished_run):
    ckpt = load_checkpoint(finished_run / "checkpoints" / "last.ckpt")
    ckpt["hyper_parameters"]["run"].update(checkpoint_every=1000)  # the run's; this command's is 200
    ckpt["hyper_parameters"]["run"]["agent"].update(train_every=2)
    del ckpt["callbacks"]["Evaluation"]  # as a checkpoint written before the evaluation kept its settings
    cfg = compose_train(["debug=default", "env.vector=sync", "ckpt_path=last"], finished_run)
    assert cfg.callbacks.eval.every == 200 and cfg.callbacks.model_checkpoint.every == 200
    path = finished_run / "checkpoints" / "last.ckpt"
    continue_in(cfg, resumed_run(ckpt, cfg, ["ckpt_path=last"], path), ckpt, ["ckpt_path=last"])
    assert cfg.callbacks.eval.every == 1000 and cfg.checkpoint_every == 1000
    assert cfg.callbacks.model_checkpoint.every == cfg.callbacks.best_checkpoint.every == 1000  # env steps


def test_a_resume_clips_gradients_as_the_run_did_not_as_this_commands_trainer(finished_run):
    ckpt = load_checkpoint(finished_run / "checkpoints" / "last.ckpt")
    ckpt["hyper_parameters"]["run"]["agent"].update(grad_clip_norm=None)  # a seed_notebook run: no clipping
    cfg = compose_train(["debug=default", "env.vector=sync", "ckpt_path=last"], finished_run)
    assert cfg.trainer.gradient_clip_val == 10.0  # conf/trainer/cpu.yaml through the default agent
    continue_in(cfg, resumed_run(ckpt, cfg, ["ckpt_path=last"], Path("last.ckpt")), ckpt, ["ckpt_path=last"])
    trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert trainer.gradient_clip_val is None


def test_a_resume_takes_a_null_from_the_command_line(finished_run):
    ckpt = load_checkpoint(finished_run / "checkpoints" / "last.ckpt")
    overrides = ["ckpt_path=last", "agent.grad_clip_norm=null", "env.stuck_patience=null"]
    cfg = compose_train(["debug=default", "env.vector=sync", *overrides], finished_run)
    run = resumed_run(ckpt, cfg, overrides, Path("last.ckpt"))
    assert (run.agent.grad_clip_norm, run.env.stuck_patience) == (None, None)  # the run had 10.0 and 150


def test_truncated_checkpoint_is_named_in_one_line(finished_run, tmp_path):
    bad = tmp_path / "cut.ckpt"
    bad.write_bytes((finished_run / "checkpoints" / "last.ckpt").read_bytes()[:5000])
    with pytest.raises(ConfigError, match=rf"^checkpoint {bad}: corrupt or truncated \(.*\)$"):
        load_checkpoint(bad)


def test_foreign_and_missing_files_are_refused(tmp_path):
    foreign = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(ConfigError, match="not a mario-rl training checkpoint"):
        load_checkpoint(foreign)
    text = tmp_path / "notes.ckpt"
    text.write_text("hello")
    with pytest.raises(ConfigError, match=rf"^checkpoint {text}: corrupt or truncated \(\w+Error: .*\)$"):
        load_checkpoint(text)
    with pytest.raises(ConfigError, match=r"nope.ckpt: no such file"):
        load_checkpoint(tmp_path / "nope.ckpt")
    with pytest.raises(ConfigError, match=r"^ckpt_path=.*nope.ckpt: no such file$"):
        resolve_ckpt_path(str(tmp_path / "nope.ckpt"), tmp_path)


class Payload:
    """Unpickling this runs code: exactly what a checkpoint must never do."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_crafted_pickle_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.ckpt"
    torch.save({"hyper_parameters": {"run": {}}, "x": Payload()}, evil)
    with pytest.raises(ConfigError, match=r"refused: it needs to unpickle objects other than tensors"):
        load_checkpoint(evil)
    assert not (tmp_path / "pwned").exists()
    assert b"system" in evil.read_bytes()  # the file really is a pickle that would run code


def test_a_save_that_dies_half_way_leaves_the_previous_checkpoint_usable(finished_run, monkeypatch, tmp_path):
    target = tmp_path / "last.ckpt"
    target.write_bytes((finished_run / "checkpoints" / "last.ckpt").read_bytes())
    before = load_checkpoint(target)["global_step"]
    real_save = torch.save

    def save_half_then_fail(obj, f):
        real_save(obj, f)
        f.truncate(f.tell() // 2)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        SafeCheckpointIO().save_checkpoint({"global_step": 999, "junk": torch.zeros(10_000)}, target)
    monkeypatch.undo()
    assert load_checkpoint(target)["global_step"] == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no half-written leftovers


def test_ckpt_path_last_prefers_the_run_dir_then_the_newest(tmp_path):
    outputs = tmp_path / "outputs"
    old, new, mine = (outputs / d / "checkpoints" for d in ("a", "b", "c"))
    for i, d in enumerate((old, new)):
        d.mkdir(parents=True)
        (d / "last.ckpt").write_bytes(b"x")
        os.utime(d / "last.ckpt", (1000 + i, 1000 + i))
    assert resolve_ckpt_path("last", outputs / "fresh", outputs) == new / "last.ckpt"
    mine.mkdir(parents=True)
    (mine / "last.ckpt").write_bytes(b"x")
    os.utime(mine / "last.ckpt", (10, 10))
    assert resolve_ckpt_path("last", outputs / "c", outputs) == mine / "last.ckpt"
    with pytest.raises(ConfigError, match=r"ckpt_path=last: no checkpoints/last\.ckpt"):
        resolve_ckpt_path("last", tmp_path / "x", tmp_path / "empty")


def test_non_finite_loss_stops_with_the_step_and_is_not_saved_over():
    module = DQN(run_dict(default_run(agent=dict(batch_size=2))))
    batch = {
        "obs": torch.zeros(2, 4, 84, 84, dtype=torch.uint8),
        "next_obs": torch.zeros(2, 4, 84, 84, dtype=torch.uint8),
        "actions": torch.tensor([0, 1]),
        "returns": torch.tensor([float("nan"), 1.0]),
        "discounts": torch.tensor([0.99, 0.99]),
        "env_steps": 12_345,
        "epsilon": 0.1,
    }
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at env step 12345 \(update 0\)"):
        module.training_step(batch, 0)

    class Trainer:
        @property
        def checkpoint_callbacks(self):
            raise AssertionError("tried to save a checkpoint after a non-finite loss")

    SaveOnInterrupt().on_exception(Trainer(), module, NonFiniteLossError("x"))


@pytest.mark.parametrize(
    "exception",
    [SIGTERMException(), UncompletedJobError("Job not requeued because: timed-out"), SystemExit(-1)],
    ids=["sigterm", "slurm-time-limit", "slurm-preemption-requeue"],
)
def test_a_stop_from_outside_saves_last_ckpt(exception):
    asked = []

    class Trainer:
        @property
        def checkpoint_callbacks(self):
            asked.append(type(exception).__name__)
            return []

    SaveOnInterrupt().on_exception(Trainer(), None, exception)
    assert asked == [type(exception).__name__]
