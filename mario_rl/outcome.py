"""How a job ended: ``run_job`` runs every train.py run and writes ``status.json`` into its dir.

The status is ok, or failed with the one error line. In a multirun a failed job returns
instead of raising, so Hydra's launchers go on with the other jobs and Optuna marks the trial
failed; a job stopped from outside ends the sweep. ``python -m mario_rl.sweep`` gathers the
statuses into one table. This module imports neither torch nor TensorBoard, so train.py takes
a SIGTERM as a stop, with its status, from the moment Hydra has composed the config.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
from collections.abc import Callable
from pathlib import Path

from mario_rl import atomic
from mario_rl.errors import RunError, StoppedError, UserError, exit_with, one_line
from mario_rl.stopping import taking_stops

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"


def write_status(job_dir: Path, status: str, error: str = "") -> None:
    """Record how a job ended, for the sweep table: ``ok``, or ``failed`` and its one error line."""
    record = {"status": status, "error": error} if error else {"status": status}
    atomic.write_text(job_dir / STATUS_FILE, json.dumps(record) + "\n")


def standard_start_method() -> None:
    """Give a job run in a joblib worker the standard multiprocessing start method back.

    loky sets its workers' start method to its own, "loky"; the env workers' forkserver children
    are then told to use it, cannot find it and die at start (ConnectionResetError in the job).
    """
    if multiprocessing.get_start_method(allow_none=True) == "loky":
        multiprocessing.set_start_method(None, force=True)


def run_job(
    job: Callable[[], dict[str, float]],
    job_dir: Path,
    multirun: bool,
    run_dir: Callable[[], Path] | None = None,
) -> dict[str, float] | None:
    """Run ``job``, record its outcome, and return its metrics (None when it failed).

    The outcome goes to ``job_dir`` (the Hydra job dir, which the sweep table reads) and to the
    run's own dir, ``run_dir()`` after the job, when that is another one: a resume continues its
    run in the run's dir. A status left by an earlier start is removed first, so a job killed
    outright reads as running or killed, not as how the earlier start ended.

    A single run keeps the command line's contract: a ConfigError or RunError prints one line
    to stderr and exits 2 or 1, any other exception keeps its traceback. In a multirun every
    failure is logged (with the traceback for an unexpected one) and the job returns None, so
    one bad job does not end the sweep; Optuna records None as a failed trial. Ctrl-C, SIGTERM
    (StoppedError) and exits are recorded, then end the sweep too.
    """

    def record(status: str, error: str = "") -> None:
        dirs = {job_dir.resolve()} | ({run_dir().resolve()} if run_dir is not None else set())
        for directory in dirs:
            write_status(directory, status, error)

    standard_start_method()
    (job_dir / STATUS_FILE).unlink(missing_ok=True)
    try:
        with taking_stops():
            metrics = job()
    except (UserError, RunError) as err:
        message, code = str(err), 2 if isinstance(err, UserError) else 1
        ends_sweep = isinstance(err, StoppedError)
    except Exception as err:
        record("failed", one_line(err))
        if not multirun:
            raise
        log.exception("job failed")
        return None
    except (KeyboardInterrupt, SystemExit) as err:  # Lightning ends a Ctrl-C with sys.exit(1)
        record("failed", f"interrupted ({one_line(err)})")
        raise
    else:
        record("ok")
        return metrics
    record("failed", message)
    if not multirun or ends_sweep:
        exit_with(message, code)
    log.error("job failed: %s", message)
    return None


def optimized_value(metrics: dict[str, float] | None, name: str | None) -> float | None:
    """The value a sweeper optimizes, ``metrics[name]``; None when the job failed or never logged it.

    Optuna records None as a failed trial and the search goes on. NaN would end it:
    hydra-optuna-sweeper 1.3 tells the study NaN, which optuna refuses, then tells it a failure
    with the NaN still attached, which optuna refuses again, uncaught.
    """
    if metrics is None or not name:
        return None
    if name not in metrics:
        log.warning(
            "optimized_metric %s was not logged (a run shorter than callbacks.eval.every?); returning None, "
            "which Optuna records as a failed trial",
            name,
        )
        return None
    return metrics[name]
