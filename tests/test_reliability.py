"""Runs that are killed, interrupted or lose a worker: real processes, real signals."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
from gymnasium.vector import SyncVectorEnv
from pytorch_lightning.utilities.exceptions import SIGTERMException
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mario_rl import collectors
from mario_rl.checkpointing import load_checkpoint
from mario_rl.collectors import LocalCollector
from mario_rl.config import ConfigError, default_run
from mario_rl.data import ExperienceStream
from mario_rl.envs import make_vector_env, worker_processes
from mario_rl.errors import EnvWorkerError, RunError, StoppedError
from mario_rl.stopping import (
    keeping_stops_to_this_process,
    noted_stop,
    raise_if_stopped,
    raise_if_stopped_while_starting,
    taking_stops,
)
from mario_rl.training import train
from tests.conftest import ROOT, compose_train
from tests.corridor import PATH, Corridor

RUN = [
    "debug=default",
    "env_steps=1200",
    "checkpoint_every=200",
    "+trainer.enable_progress_bar=false",
    "~callbacks.progress_bar",
]


def start(out: Path, *extra: str) -> subprocess.Popen:
    """train.py in its own process group, its output in ``out/stdout.log``.

    A file, not a pipe: a pipe's reader waits for every process holding it (forkserver, env
    workers), so a leftover worker would look like a hang of train.py itself.
    """
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "stdout.log", "w") as log:
        return subprocess.Popen(
            [sys.executable, "train.py", *RUN, f"hydra.run.dir={out}", *extra],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the kill reaches the env workers too
        )


def output(out: Path) -> str:
    return (out / "stdout.log").read_text()[-3000:]


def wait_for(
    ready: Callable[[], bool], what: str, proc: subprocess.Popen, out: Path, timeout: float = 600, every: float = 0.5
) -> None:
    """Poll ``ready`` every ``every`` s while train.py runs. The timeout is generous: on a loaded
    2-core machine a start-up took minutes, and a fixed sleep there signalled a run that had not
    trained yet."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, output(out)
        assert time.time() < deadline, f"{what} never happened\n{output(out)}"
        time.sleep(every)


def has_trained(out: Path) -> bool:
    """True once the run's TensorBoard file holds a train/loss value: at least one update was made."""
    files = list((out / "tensorboard").glob("events.*"))
    if not files:
        return False
    events = EventAccumulator(str(files[0]))
    events.Reload()
    return "train/loss" in events.Tags()["scalars"]


def group_processes(pgid: int) -> list[tuple[int, str, str]]:
    """(pid, name, command line) of the live (not zombie) processes in process group ``pgid``."""
    processes = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, rest = stat.read_text().split("(", 1)[1].rsplit(")", 1)
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:  # exited while we looked
            continue
        fields = rest.split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            processes.append((int(stat.parent.name), name, cmdline.replace(b"\0", b" ").decode(errors="replace")[:200]))
    return processes


def group_members(pgid: int) -> list[str]:
    """Command lines of the live (not zombie) processes in process group ``pgid``."""
    return [cmdline for _, _, cmdline in group_processes(pgid)]


def group_pids(pgid: int, name: str) -> list[int]:
    """Pids of the live processes named ``name`` (as /proc/PID/stat has it) in process group ``pgid``."""
    return [pid for pid, named, _ in group_processes(pgid) if named == name]


@pytest.mark.slow
def test_sigkill_mid_run_resumes_from_the_last_checkpoint_and_reaches_the_budget(tmp_path):
    proc = start(tmp_path)
    last = tmp_path / "checkpoints" / "last.ckpt"
    wait_for(last.exists, f"{last} written", proc, tmp_path)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = load_checkpoint(last)
    saved_steps = saved["stream"]["env_steps"]
    assert 0 < saved_steps < 1200
    budget = saved_steps + 200  # a resume may name a budget of its own; a short one keeps the test short
    resumed = subprocess.run(
        [sys.executable, "train.py", *RUN, f"hydra.run.dir={tmp_path}", "ckpt_path=last", f"env_steps={budget}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    done = load_checkpoint(last)
    assert done["stream"]["env_steps"] == budget
    assert done["global_step"] == (budget - 64) // 4 + 1  # every owed update happened exactly once
    assert sum(done["replay_written"]) > sum(saved["replay_written"])  # the replay came back and grew
    # the learning curve continues: the resumed process logged from the checkpoint's env step on
    files = sorted((tmp_path / "tensorboard").glob("events.*"), key=lambda p: p.stat().st_mtime)
    events = EventAccumulator(str(files[-1]))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert saved_steps - 8 <= steps[0] <= saved_steps + 100 and steps[-1] >= budget - 20


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "to_group"),
    [
        (signal.SIGTERM, False),
        (signal.SIGINT, False),
        (signal.SIGINT, True),
        (signal.SIGTERM, True),
        (signal.SIGHUP, True),
    ],
    ids=["sigterm", "sigint", "ctrl-c-in-a-terminal", "sigterm-to-the-group", "a-closed-terminal"],
)
def test_ctrl_c_sigterm_and_sighup_save_a_checkpoint_before_exiting(tmp_path, sig, to_group):
    stop_and_check_the_save(tmp_path, sig, to_group)


@pytest.mark.slow
def test_sigterm_to_the_group_of_a_run_with_ray_actors_saves_before_exiting(tmp_path):
    # ray.init installs a SIGTERM handler of its own in the learner, which exited without saving;
    # and when the group's SIGTERM ended the raylet first, Ray's core worker in the learner ended
    # it at once on finding the object store gone. The raylet is sent it first here, so that order
    # is tested every time, not by chance.
    pytest.importorskip("ray")
    stop_and_check_the_save(tmp_path, signal.SIGTERM, True, "collector=ray", "collector.actors=1", first="raylet")


@pytest.mark.slow
def test_sigterm_while_ray_starts_stops_the_run_and_says_so(tmp_path):
    # ray.init's handler, in place until the driver connects, is sys.exit(15): the run ended as
    # "interrupted (SystemExit: 15)". Sent once Ray's GCS runs, the signal lands inside ray.init.
    pytest.importorskip("ray")
    proc = start(tmp_path, "checkpoint_every=100000", "env_steps=100000", "collector=ray", "collector.actors=1")
    wait_for(lambda: bool(group_pids(proc.pid, "gcs_server")), "Ray's GCS started", proc, tmp_path, every=0.02)
    os.kill(proc.pid, signal.SIGTERM)
    wait_for_the_stop(proc, signal.SIGTERM, tmp_path)
    status = json.loads((tmp_path / "status.json").read_text())
    said = "stopped by SIGTERM at env step 0; saved, resume with ckpt_path=last"
    assert status == {"status": "failed", "error": said}
    assert f"error: {said}" in output(tmp_path)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["stream"]["env_steps"] == 0
    assert_nothing_left(proc, signal.SIGTERM, tmp_path)


def wait_for_the_stop(proc: subprocess.Popen, sig: signal.Signals, out: Path) -> None:
    """Wait up to 120 s for train.py to exit after ``sig``; it must exit with an error status."""
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"train.py still running 120 s after {sig.name}:\n{output(out)}")
    assert proc.returncode != 0, output(out)


def assert_nothing_left(proc: subprocess.Popen, sig: signal.Signals, out: Path) -> None:
    """No process of train.py's group may outlive it by more than 30 s (killed if one does)."""
    deadline = time.time() + 30
    while (left := group_members(proc.pid)) and time.time() < deadline:
        time.sleep(0.5)
    if left:
        os.killpg(proc.pid, signal.SIGKILL)
    assert not left, f"left running after {sig.name}: {left}\n{output(out)}"


def stop_and_check_the_save(
    tmp_path: Path, sig: signal.Signals, to_group: bool, *extra: str, first: str | None = None
) -> None:
    """Stop a training run with ``sig`` (to its process group if ``to_group``) once it has trained;
    it must save last.ckpt, say why it stopped and leave no process behind. ``first``: the name
    of a process in the run's group that is sent ``sig`` alone, 3 s before the rest."""
    # no periodic checkpoint and a long budget: only the signal can write last.ckpt
    proc = start(tmp_path, "checkpoint_every=100000", "env_steps=100000", *extra)
    wait_for(lambda: has_trained(tmp_path), "a first update", proc, tmp_path)
    # A terminal's Ctrl-C, or a SIGTERM to the group (systemd, scancel, kill -TERM -PGID), reaches
    # the env workers too: they ignore both, and the learner reads their start states into
    # last.ckpt and closes them after it saves, so every one of these stops is the same clean one.
    if first is not None:
        (pid,) = group_pids(proc.pid, first)
        os.kill(pid, sig)
        time.sleep(3)
        assert proc.poll() is None, f"train.py ended when its {first} was sent {sig.name}:\n{output(tmp_path)}"
    (os.killpg if to_group else os.kill)(proc.pid, sig)
    wait_for_the_stop(proc, sig, tmp_path)
    said = output(tmp_path)
    assert "error: an env worker" not in said
    if sig != signal.SIGINT:
        assert f"error: stopped by {sig.name} at env step" in said
    # nothing lost: the workers' (or Ray actors') start states were read too
    assert "env worker" not in said and "start states are not saved" not in said
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert 64 < saved["stream"]["env_steps"] < 100000
    assert len(saved["stream"]["workers"]) == 2 and all("pool" in w for w in saved["stream"]["workers"])
    # and it leaves nothing behind: the env workers and the forkserver are gone with it
    assert_nothing_left(proc, sig, tmp_path)


@pytest.mark.slow
def test_sigterm_in_the_warm_up_saves_and_stops_at_once(tmp_path):
    # no update for 100,000 env steps: Lightning, which looks for SIGTERM between batches, never would
    proc = start(tmp_path, "agent.learning_starts=100000", "env_steps=200000", "checkpoint_every=100")
    warm_up = tmp_path / "checkpoints" / "env_steps_100.ckpt"
    wait_for(warm_up.exists, f"{warm_up} written", proc, tmp_path)
    saved = load_checkpoint(warm_up)  # counted in env steps from 0, written before any update
    assert saved["stream"]["env_steps"] == 100 and saved["global_step"] == 0
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"train.py still running 60 s after SIGTERM in the warm-up:\n{output(tmp_path)}")
    assert proc.returncode == 1 and "stopped by SIGTERM at env step" in output(tmp_path)
    last = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert 100 <= last["stream"]["env_steps"] < 100000 and last["global_step"] == 0


@pytest.mark.parametrize(
    ("sig", "name"), [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "Ctrl-C"), (signal.SIGHUP, "SIGHUP")]
)
def test_a_stop_while_a_run_starts_is_noted_then_raised_where_the_run_checks(sig, name):
    before = signal.getsignal(sig)
    with taking_stops():
        raise_if_stopped_while_starting()  # none yet
        assert noted_stop() is None
        # Python's default would end the process (SIGTERM, SIGHUP) or raise inside whatever runs (Ctrl-C)
        os.kill(os.getpid(), sig)
        with pytest.raises(StoppedError, match=rf"^stopped by {name} before training began; its files are as they"):
            raise_if_stopped_while_starting()
        # once training began, the first env step stops it
        assert isinstance(noted_stop(), KeyboardInterrupt if sig == signal.SIGINT else SIGTERMException)
    assert signal.getsignal(sig) is before
    raise_if_stopped_while_starting()  # the note goes with the run
    assert noted_stop() is None


def test_a_run_started_with_nohup_keeps_ignoring_sighup():
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with taking_stops():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)
            assert noted_stop() is None
    finally:
        signal.signal(signal.SIGHUP, before)


def sigterm_blocked_in(pid: int) -> bool:
    """Whether process ``pid``'s main thread blocks SIGTERM (the SigBlk mask in /proc/PID/status)."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    (mask,) = [line.split()[1] for line in status if line.startswith("SigBlk")]
    return bool(int(mask, 16) >> (signal.SIGTERM - 1) & 1)


def test_keeping_stops_to_this_process_puts_handlers_back_and_shields_the_processes_started_inside():
    def ours(signum, frame):
        raise AssertionError("not called")

    def theirs(signum, frame):  # what ray.init installs in the learner
        raise AssertionError("not called")

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    inside = after = None
    try:
        signal.signal(signal.SIGTERM, ours)
        signal.signal(signal.SIGINT, ours)
        with keeping_stops_to_this_process():
            signal.signal(signal.SIGTERM, theirs)
            signal.signal(signal.SIGINT, theirs)
            assert signal.getsignal(signal.SIGTERM) is theirs
            inside = subprocess.Popen(sleeper)  # what ray.init starts: GCS, raylet
        assert signal.getsignal(signal.SIGTERM) is ours and signal.getsignal(signal.SIGINT) is ours
        assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, set())
        after = subprocess.Popen(sleeper)
        assert sigterm_blocked_in(inside.pid) and not sigterm_blocked_in(after.pid)
        inside.terminate()
        after.terminate()
        assert after.wait(timeout=10) == -signal.SIGTERM
        with pytest.raises(subprocess.TimeoutExpired):
            inside.wait(timeout=1)  # the group's SIGTERM does not end it: the learner does, later
    finally:
        for child in (inside, after):
            if child is not None:
                child.kill()
                child.wait()
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_a_sigterm_that_ray_init_turns_into_system_exit_goes_to_the_handler_put_back():
    noted = []
    before = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, lambda signum, frame: noted.append(signum))
        with keeping_stops_to_this_process():
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # ray.init's, until it connects
            raise SystemExit(signal.SIGTERM)  # what that handler raises when the signal comes
        assert noted == [signal.SIGTERM]
        with pytest.raises(SystemExit, match=r"^3$"), keeping_stops_to_this_process():  # any other exit goes through
            sys.exit(3)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # no handler of the run's to give it to: Ray's exit stands
        with pytest.raises(SystemExit, match=r"^15$"), keeping_stops_to_this_process():
            raise SystemExit(signal.SIGTERM)
        assert noted == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, before)


def started_local_collector() -> tuple[LocalCollector, list]:
    """A LocalCollector with two Mario env workers, started; and the workers' processes."""
    run = default_run(env={"num_envs": 2}, replay={"capacity": 100, "save": False})
    collector = LocalCollector(run, RandomPolicy(), make_vector_env)
    collector.start(seed=0, env_steps=0)
    return collector, list(collector.envs.processes)


def test_workers_killed_during_a_step_let_a_save_through_then_fail_the_step_and_close(tmp_path, caplog):
    # Workers killed with a step in flight (SIGKILL: the OOM killer, a kill of their pids): the
    # learner saves before or after it receives that step. The save goes on without the
    # workers' states; receiving the step is the one error; closing neither reads the dead
    # pipes again (Gymnasium's close does, even with terminate=True) nor leaves a process.
    collector, processes = started_local_collector()
    collector.launch(epsilon=1.0, env_steps=0)
    for process in processes:
        os.kill(process.pid, signal.SIGKILL)
        process.join(timeout=10)
    assert collector.worker_states() is None
    assert "start states could not be read (EnvWorkerError: an env worker (smb 1-1) stopped" in caplog.text
    with pytest.raises(EnvWorkerError, match=r"^an env worker \(smb 1-1\) stopped at env step 0: "):
        collector.receive(env_steps=2)
    collector.close()
    assert collector.envs is None and not any(p.is_alive() for p in processes)


def test_env_workers_outlive_a_sigterm_and_a_stuck_one_is_killed_on_close(caplog):
    # A SIGTERM to the group reaches the workers: they ignore it, so their start states can still
    # be read for last.ckpt. Closing cannot end them with SIGTERM then: a worker that does not
    # answer within the close's timeout is killed, and so are the workers of a forced close.
    collector, processes = started_local_collector()
    for process in processes:
        os.kill(process.pid, signal.SIGTERM)
    collector.launch(epsilon=1.0, env_steps=0)
    collector.receive(env_steps=2)
    assert all(p.is_alive() for p in processes)
    assert len(collector.worker_states()) == 2
    collector.launch(epsilon=1.0, env_steps=2)
    os.kill(processes[1].pid, signal.SIGSTOP)  # stuck with a step in flight
    started = time.monotonic()
    collector.close(timeout_s=1.0)
    assert time.monotonic() - started < 15
    assert collector.envs is None and collector.worker_states() is None
    assert not any(p.is_alive() for p in processes)
    assert "the env workers did not close (EnvWorkerError: an env worker (smb 1-1) stopped at env step 2" in caplog.text

    envs = make_vector_env(collector.run.env)
    processes = list(envs.processes)
    envs.close(terminate=True)  # Gymnasium's forced close joins without a timeout: SIGTERM would hang it
    assert not any(p.is_alive() for p in processes)


def test_a_stuck_worker_lets_the_save_through_in_the_wait_then_ends_the_run_and_is_killed(caplog, monkeypatch):
    # A worker stuck between steps (stopped, hung in the emulator) never answers for its states:
    # the save a SIGTERM waits on hung until Slurm's SIGKILL, and last.ckpt was never written.
    monkeypatch.setattr(collectors, "WORKER_WAIT_S", 1.0)
    collector, processes = started_local_collector()
    os.kill(processes[1].pid, signal.SIGSTOP)
    unstick = threading.Timer(60, os.kill, (processes[1].pid, signal.SIGKILL))  # a failure, not a hang
    unstick.start()
    try:
        started = time.monotonic()
        assert collector.worker_states() is None
        assert time.monotonic() - started < 15
        assert "start states could not be read (TimeoutError: The call to `call_wait` has timed out" in caplog.text
        with pytest.raises(EnvWorkerError, match=r"^an env worker \(smb 1-1\) stopped at env step 0: TimeoutError: "):
            collector.launch(epsilon=1.0, env_steps=0)
        collector.close(timeout_s=1.0)
        assert time.monotonic() - started < 30
    finally:
        unstick.cancel()
    assert collector.envs is None and not any(p.is_alive() for p in processes)


class DiesAtReset(SyncVectorEnv):
    """Corridors whose first reset fails as that of workers that died while they started."""

    def reset(self, **kwargs):
        raise ConnectionResetError(104, "Connection reset by peer")


def test_workers_that_die_as_they_start_end_the_run_in_one_line_and_the_resumed_states_stay():
    run = default_run(env={"num_envs": 2}, replay={"capacity": 100, "save": False})
    collector = LocalCollector(run, RandomPolicy(), lambda cfg: DiesAtReset([Corridor] * 2))
    resumed = [{"pool": ["state 1"]}, {"pool": ["state 2"]}]
    collector.restore_worker_states(resumed)
    said = r"^an env worker \(smb 1-1\) stopped at env step 400: ConnectionResetError: \[Errno 104\] Connection reset"
    with pytest.raises(EnvWorkerError, match=said):
        collector.start(seed=0, env_steps=400)
    assert collector.worker_states() == resumed  # what the checkpoint written on the error keeps
    collector.close()
    assert collector.envs is None and collector.worker_states() == resumed

    def bad_level(cfg):
        raise ConfigError("env.level='9-9' is not a level")

    with pytest.raises(ConfigError, match=r"^env.level='9-9' is not a level$"):  # the user's, not a worker's
        LocalCollector(run, RandomPolicy(), bad_level).start(seed=0, env_steps=0)


class ArrivesSlowly:
    """A corridor env factory that takes ``delay_s`` to unpickle: a worker that is sent it spends
    that long, as a Mario worker importing its emulator does, before its env factory runs."""

    def __init__(self, delay_s: float):
        self.delay_s = delay_s

    def __setstate__(self, state: dict) -> None:
        time.sleep(state["delay_s"])
        self.__dict__.update(state)

    def __call__(self) -> Corridor:
        return Corridor()


def children(pid: int) -> set[int]:
    """Pids of the live (not zombie) child processes of ``pid``."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited while we looked
            continue
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def test_env_workers_outlive_ctrl_c_and_sigterm_that_come_before_their_env_factory_runs():
    # A stop to the run's group while its workers start (Slurm pre-empting a job that has just
    # started or resumed) reached each worker while it still unpickled its env factory, before it
    # could ignore the stop: the worker died and the run ended on a ConnectionResetError.
    servers = children(os.getpid())  # the forkserver, if an earlier test started it, and others
    before = {worker for server in servers for worker in children(server)}
    stopped: list[int] = []

    def stop_each_worker_as_it_appears() -> None:
        deadline = time.monotonic() + 60
        while len(stopped) < 2 and time.monotonic() < deadline:
            for worker in {w for server in children(os.getpid()) for w in children(server)} - before:
                if worker not in stopped:
                    os.kill(worker, signal.SIGINT)
                    os.kill(worker, signal.SIGTERM)
                    stopped.append(worker)
            time.sleep(0.005)

    stopper = threading.Thread(target=stop_each_worker_as_it_appears)
    stopper.start()
    envs = worker_processes([ArrivesSlowly(delay_s=2.0)] * 2)
    stopper.join()
    try:
        assert sorted(stopped) == sorted(p.pid for p in envs.processes)
        envs.reset(seed=0)
        envs.step(np.array([PATH[0], PATH[0]]))
        assert all(p.is_alive() for p in envs.processes)
    finally:
        envs.close(terminate=True)


def test_a_worker_death_after_a_sigterm_is_reported_as_the_sigterm(tmp_path, monkeypatch, tiny_overrides):
    # The group's SIGTERM can end the workers before the learner's next env step notes the signal.
    def fit_stopped_by(sigterm: bool):
        def fit(self, *args, **kwargs):
            self._signal_connector.received_sigterm = sigterm
            raise EnvWorkerError("an env worker (smb 1-1) stopped at env step 96: ConnectionResetError: reset")

        return fit

    monkeypatch.setattr(pl.Trainer, "fit", fit_stopped_by(True))
    with pytest.raises(RunError, match=r"^stopped by SIGTERM at env step 0; saved, resume with ckpt_path=last$"):
        train(compose_train(tiny_overrides, tmp_path / "sigterm"))
    monkeypatch.setattr(pl.Trainer, "fit", fit_stopped_by(False))
    with pytest.raises(EnvWorkerError, match=r"^an env worker \(smb 1-1\) stopped at env step 96"):
        train(compose_train(tiny_overrides, tmp_path / "worker"))


class RandomPolicy:
    def __init__(self):
        self.rng = np.random.default_rng(0)

    def __call__(self, obs, eps):
        return self.rng.integers(5, size=obs.shape[0])


def test_ctrl_c_during_a_vector_step_stops_at_the_next_step_and_the_envs_close(tmp_path):
    run = default_run(
        env={"num_envs": 2, "vector": "async", "max_episode_steps": 50},
        agent={"learning_starts": 100_000},  # no batch: the stream runs until stopped
        replay={"capacity": 1000, "save": False},
        env_steps=200_000,
    )
    stream = ExperienceStream(run, RandomPolicy())
    stream.on_steps = lambda before, after: raise_if_stopped()

    def interrupt_while_the_main_thread_waits_for_a_worker():
        while stream.env_steps < 20:
            time.sleep(0.05)
        slow = stream.collector.worker_pids()[1]
        os.kill(slow, signal.SIGSTOP)  # a worker descheduled under load: the step waits for it
        time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGINT)  # the other worker's answer is read, this one's is not
        time.sleep(1.0)
        os.kill(slow, signal.SIGCONT)

    helper = threading.Thread(target=interrupt_while_the_main_thread_waits_for_a_worker, daemon=True)
    try:
        with taking_stops(), pytest.raises(KeyboardInterrupt):
            helper.start()
            next(iter(stream))
        assert not stream.collector._result and stream.collector.envs._state.name == "DEFAULT"  # no step half collected
        closing = threading.Thread(target=stream.close, daemon=True)
        closing.start()
        closing.join(timeout=30)
        assert not closing.is_alive(), "closing the envs waits for a step that was half read"
    finally:
        helper.join()
        if stream.collector.envs is not None:
            stream.collector.envs.close(terminate=True)


class KillWorkerAt(pl.Callback):
    """Kills one env worker with SIGKILL at a given update."""

    def __init__(self, update: int):
        self.update = update

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.update:
            os.kill(pl_module.stream.collector.worker_pids()[1], signal.SIGKILL)


@pytest.mark.slow
def test_a_dead_env_worker_is_reported_with_level_and_step_and_the_run_is_saved(tmp_path):
    cfg = compose_train(
        [
            "debug=default",
            "env.level=1-2",
            "+callbacks.kill._target_=tests.test_reliability.KillWorkerAt",
            "+callbacks.kill.update=10",
        ],
        tmp_path,
    )
    with pytest.raises(
        EnvWorkerError,
        match=r"an env worker \(smb 1-2\) stopped at env step \d+: (EOFError|ConnectionResetError|BrokenPipeError)",
    ):
        train(cfg)
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert saved["global_step"] >= 10


def losses_and_returns(out: Path) -> tuple[list[float], list[float]]:
    events = EventAccumulator(str(next((out / "tensorboard").glob("events.*"))), size_guidance={"scalars": 0})
    events.Reload()
    losses = [e.value for e in events.Scalars("train/loss")]
    returns = [e.value for e in events.Scalars("rollout/episode_return")]
    return losses, returns


@pytest.mark.slow
def test_same_seed_same_first_100_losses_and_returns(tmp_path):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        train(compose_train(["debug=default", "env_steps=480", "seed=5", "env.max_episode_steps=40"], out))
        runs.append(losses_and_returns(out))
    (losses_a, returns_a), (losses_b, returns_b) = runs
    assert len(losses_a) >= 100 and len(returns_a) > 10
    assert losses_a[:100] == losses_b[:100]
    assert returns_a == returns_b
