"""Sweeps through Hydra's real CLI: multirun, a failed job among good ones, Optuna, submitit; the sweep table."""

import csv
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from mario_rl.config import ConfigError
from mario_rl.errors import StoppedError
from mario_rl.outcome import optimized_value, run_job
from mario_rl.sweep import Job, group, main, markdown, read_sweep, sqlite_url
from tests.conftest import ROOT

# 200 env steps on two emulators, one evaluation at env step ~100: ~10 s a job here.
TINY = [
    "debug=default",
    "env_steps=200",
    "checkpoint_every=100",
    "+trainer.enable_progress_bar=false",
    "~callbacks.progress_bar",
]
EVAL_TAGS = ("eval/x_pos_mean", "eval/clear_rate", "eval/return_mean")


def multirun(sweep_dir: Path, *overrides: str, vector: str = "sync") -> subprocess.CompletedProcess:
    """``train.py -m`` with TINY runs; the emulators in the job's process unless ``vector=async``."""
    proc = subprocess.run(
        [sys.executable, "train.py", "-m", *TINY, f"env.vector={vector}", *overrides, f"hydra.sweep.dir={sweep_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def final_values(job_dir: Path) -> dict[str, float]:
    """The last point of each eval tag, read straight from the event file."""
    events = EventAccumulator(str(next((job_dir / "tensorboard").glob("events.*"))), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: events.Scalars(tag)[-1].value for tag in EVAL_TAGS}


def status(job_dir: Path) -> dict[str, str]:
    return json.loads((job_dir / "status.json").read_text())


def table(sweep_dir: Path, capsys: pytest.CaptureFixture) -> tuple[list[dict[str, str]], str]:
    """``python -m mario_rl.sweep``'s CSV rows and printed text."""
    main([str(sweep_dir)])
    with (sweep_dir / "sweep.csv").open() as f:
        return list(csv.DictReader(f)), capsys.readouterr().out


@pytest.mark.slow
def test_two_seeds_give_two_runs_and_a_table_of_their_final_metrics(tmp_path, capsys):
    multirun(tmp_path, "seed=1,2")
    jobs = [tmp_path / "0", tmp_path / "1"]
    for job, seed in zip(jobs, ("1", "2"), strict=True):
        assert (job / "checkpoints" / "last.ckpt").is_file()
        assert status(job) == {"status": "ok"}
        assert f"seed={seed}" in (job / ".hydra" / "overrides.yaml").read_text()
    rows, out = table(tmp_path, capsys)
    assert [(r["job"], r["status"], r["env_steps"]) for r in rows] == [("0", "ok", "200"), ("1", "ok", "200")]
    assert rows[1]["overrides"].startswith("debug=default env_steps=200 ")
    assert rows[1]["overrides"].endswith(" seed=2")
    finals = [final_values(job) for job in jobs]
    for row, final in zip(rows, finals, strict=True):
        assert {tag: float(row[tag]) for tag in EVAL_TAGS} == pytest.approx(final)
    # one setting, two seeds: the mean of the two final values
    x_mean = sum(f["eval/x_pos_mean"] for f in finals) / 2
    x_std = abs(finals[0]["eval/x_pos_mean"] - finals[1]["eval/x_pos_mean"]) / 2
    settings = out.split("## Settings")[1]
    assert f"| - | 2 ok | {x_mean:.1f} ± {x_std:.1f} |" in settings
    assert (tmp_path / "sweep.md").read_text() in out
    assert f"python -m mario_rl.plot {tmp_path} --metric rollout/x_pos" in out


@pytest.mark.slow
def test_a_job_with_a_bad_value_fails_alone_and_the_table_says_why(tmp_path, capsys):
    proc = multirun(tmp_path, "agent.gamma=0.9,1.5")
    message = "agent.gamma=1.5 is not allowed; it must be in (0, 1]"
    assert f"job failed: {message}" in proc.stdout
    assert (tmp_path / "0" / "checkpoints" / "last.ckpt").is_file() and status(tmp_path / "0")["status"] == "ok"
    assert status(tmp_path / "1") == {"status": "failed", "error": message}
    rows, out = table(tmp_path, capsys)
    assert [(r["status"], r["error"]) for r in rows] == [("ok", ""), ("failed", message)]
    assert float(rows[0]["eval/x_pos_mean"]) == pytest.approx(final_values(tmp_path / "0")["eval/x_pos_mean"])
    assert f"| 1 | agent.gamma=1.5 | failed: {message} |" in out


@pytest.mark.slow
def test_optuna_search_stores_its_study_in_the_sweep_dir_and_continues_it(tmp_path, capsys):
    import optuna

    search = ["hparams_search=optuna", "hydra.sweeper.n_trials=1"]
    multirun(tmp_path, *search)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    (trial,) = optuna.load_study(study_name="mario_rl", storage=storage).trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    (job_dir,) = (p.parent.parent for p in tmp_path.glob("*/.hydra/overrides.yaml"))
    assert trial.value == pytest.approx(final_values(job_dir)["eval/x_pos_mean"])  # the job's final score

    multirun(tmp_path, *search)  # the same command again: one more trial of the same study
    trials = optuna.load_study(study_name="mario_rl", storage=storage).trials
    assert [t.number for t in trials] == [0, 1]
    assert all(t.state == optuna.trial.TrialState.COMPLETE and t.value is not None for t in trials)
    assert trials[1].params["agent.lr"] != trials[0].params["agent.lr"]
    rows, _ = table(tmp_path, capsys)
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}  # no job dir was written over


@pytest.mark.slow
def test_joblib_runs_jobs_with_emulator_worker_processes_side_by_side(tmp_path):
    # loky's start method, inherited by the env workers' forkserver, killed them at start
    multirun(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2", vector="async")
    for job in (tmp_path / "0", tmp_path / "1"):
        assert (job / "checkpoints" / "last.ckpt").is_file() and status(job) == {"status": "ok"}


@pytest.mark.slow
def test_a_submitit_local_job_runs_to_completion(tmp_path):
    multirun(tmp_path, "hydra/launcher=submitit_local", "seed=3", vector="async")
    job = tmp_path / "0"
    assert (job / "checkpoints" / "last.ckpt").is_file() and status(job) == {"status": "ok"}
    (result,) = tmp_path.glob(".submitit/*/*_result.pkl")
    outcome, job_return = pickle.loads(result.read_bytes())
    assert outcome == "success"
    assert job_return.return_value == pytest.approx(final_values(job)["eval/x_pos_mean"])


def job(name: str, overrides: list[str], x_pos: float | None, status: str = "ok") -> Job:
    return Job(name, overrides, status, metrics={} if x_pos is None else {"eval/x_pos_mean": x_pos})


def test_settings_aggregate_across_seeds_by_hand():
    jobs = [
        job("0", ["agent.lr=1e-4", "seed=1"], 100.0),
        job("1", ["agent.lr=1e-4", "seed=2"], 300.0),
        job("2", ["agent.lr=1e-3", "seed=1"], 50.0),
        job("3", ["seed=2", "agent.lr=1e-3"], 80.0),  # the order of overrides does not matter
        job("4", ["agent.lr=1e-3", "seed=3"], 110.0),
        job("5", ["agent.lr=1e-3", "seed=4"], None, "failed"),  # counted, not averaged
    ]
    groups = group(jobs)
    assert [(g.overrides, [j.name for j in g.jobs]) for g in groups] == [
        (["agent.lr=1e-4"], ["0", "1"]),
        (["agent.lr=1e-3"], ["2", "3", "4", "5"]),
    ]
    assert groups[0].stats("eval/x_pos_mean") == (200.0, 100.0)
    mean, std = groups[1].stats("eval/x_pos_mean")
    assert mean == pytest.approx(80.0) and std == pytest.approx(24.494897)  # sqrt((900 + 0 + 900) / 3)
    assert groups[0].stats("eval/clear_rate") is None
    text = markdown(Path("sweep"), jobs)
    assert "| agent.lr=1e-4 | 2 ok | 200.0 ± 100.0 |" in text
    assert "| agent.lr=1e-3 | 3 ok, 1 failed | 80.0 ± 24.5 |" in text
    assert "The jobs share no override." in text


def write_job(job_dir: Path, overrides: list[str], status: dict | None, x_pos: dict[int, float]) -> None:
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if status is not None:
        (job_dir / "status.json").write_text(json.dumps(status))
    writer = SummaryWriter(str(job_dir / "tensorboard"))
    for step, value in x_pos.items():
        writer.add_scalar("eval/x_pos_mean", value, global_step=step)
    writer.close()


def test_read_sweep_finds_jobs_in_order_and_marks_unfinished_ones(tmp_path):
    write_job(tmp_path / "10", ["seed=3"], {"status": "ok"}, {100: 5.0, 200: 7.0})
    write_job(tmp_path / "2", ["seed=2"], None, {100: 4.0})
    jobs = read_sweep(tmp_path)
    assert [(j.name, j.status, j.env_steps, j.metrics) for j in jobs] == [
        ("2", "running or killed", 100, {"eval/x_pos_mean": 4.0}),
        ("10", "ok", 200, {"eval/x_pos_mean": 7.0}),
    ]


@pytest.mark.parametrize("make", [False, True])
def test_no_sweep_is_one_line_and_exit_2(tmp_path, capsys, make):
    root = tmp_path / "sweep"
    if make:
        root.mkdir()
    with pytest.raises(SystemExit) as exit_:
        main([str(root)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"error: no Hydra job dirs (.hydra/overrides.yaml) under {root}" if make else "error: ")


def fail(err: Exception):
    def job() -> dict[str, float]:
        raise err

    return job


def test_in_a_multirun_a_failed_job_is_recorded_and_returns_none(tmp_path):
    assert run_job(fail(RuntimeError("boom. And more")), tmp_path, multirun=True) is None
    assert status(tmp_path) == {"status": "failed", "error": "RuntimeError: boom"}
    assert run_job(lambda: {"eval/x_pos_mean": 3.0}, tmp_path, multirun=True) == {"eval/x_pos_mean": 3.0}
    assert status(tmp_path) == {"status": "ok"}


def test_a_single_run_keeps_its_exit_code_and_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_job(fail(ConfigError("agent.gamma=2 is not allowed")), tmp_path, multirun=False)
    assert exit_.value.code == 2 and capsys.readouterr().err == "error: agent.gamma=2 is not allowed\n"
    with pytest.raises(KeyError):
        run_job(fail(KeyError("x")), tmp_path, multirun=False)
    assert status(tmp_path) == {"status": "failed", "error": "KeyError: 'x'"}


def test_in_a_multirun_a_job_stopped_by_sigterm_ends_the_sweep(tmp_path, capsys):
    # a SIGTERM to a sequential sweep is for the sweep: the next job must not start
    message = "stopped by SIGTERM at env step 1200; saved, resume with ckpt_path=last"
    with pytest.raises(SystemExit) as exit_:
        run_job(fail(StoppedError(message)), tmp_path, multirun=True)
    assert exit_.value.code == 1 and capsys.readouterr().err == f"error: {message}\n"
    assert status(tmp_path) == {"status": "failed", "error": message}


def test_the_optimized_value_is_none_when_the_metric_is_missing():
    assert optimized_value({"eval/x_pos_mean": 312.0}, "eval/x_pos_mean") == 312.0
    assert optimized_value({"train/loss": 1.0}, "eval/x_pos_mean") is None
    assert optimized_value(None, "eval/x_pos_mean") is None


def test_sqlite_url_creates_the_directory_of_the_study(tmp_path):
    db = tmp_path / "multirun" / "day" / "optuna.db"
    assert sqlite_url(str(db)) == f"sqlite:///{db}"
    assert db.parent.is_dir()


def test_a_job_that_continued_a_run_elsewhere_records_its_outcome_in_both_dirs(tmp_path):
    job_dir, run_dir = tmp_path / "job", tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "status.json").write_text(json.dumps({"status": "failed", "error": "stopped by SIGTERM"}))
    assert run_job(lambda: {"eval/x_pos_mean": 3.0}, job_dir, False, run_dir=lambda: run_dir) == {
        "eval/x_pos_mean": 3.0
    }
    assert status(job_dir) == status(run_dir) == {"status": "ok"}
    with pytest.raises(KeyboardInterrupt):
        run_job(fail(KeyboardInterrupt()), job_dir, False, run_dir=lambda: run_dir)
    assert status(job_dir) == status(run_dir) == {"status": "failed", "error": "interrupted (KeyboardInterrupt)"}


def test_a_restarted_job_drops_the_status_of_its_last_start_while_it_runs(tmp_path):
    (tmp_path / "status.json").write_text(json.dumps({"status": "ok"}))

    def job() -> dict[str, float]:
        assert not (tmp_path / "status.json").exists()  # killed now, it would read as running or killed
        return {}

    run_job(job, tmp_path, multirun=False)
    assert status(tmp_path) == {"status": "ok"}
