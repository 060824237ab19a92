"""A sweep's table: every job, how it ended and its final metrics, then the mean over seeds.

    python -m mario_rl.sweep outputs/multirun/<date>/<time>/

Each job's ``status.json`` (mario_rl/outcome.py) says how it ended. The table
has one row per job (a Hydra job dir holds ``.hydra/overrides.yaml``) with the last value of
each metric in its TensorBoard events, then one row per setting: the jobs whose overrides
differ only in ``seed``, with the mean and spread across their seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mario_rl.errors import UserError, user_errors_exit
from mario_rl.outcome import STATUS_FILE
from mario_rl.plot import EVENTS_GLOB, load_events, points

log = logging.getLogger(__name__)

OVERRIDES_FILE = ".hydra/overrides.yaml"
FINISHED_FILE = "throughput.json"  # written by the throughput callback when training ends
UNFINISHED = "running or killed"
METRICS = {  # the final value of each in the tables, and its format there
    "eval/x_pos_mean": "{:.1f}",
    "eval/clear_rate": "{:.0%}",
    "eval/return_mean": "{:.1f}",
    "rollout/x_pos": "{:.1f}",
}


class SweepError(UserError):
    """No sweep to tabulate; the message says why in one line."""


def sqlite_url(path: str) -> str:
    """The SQLAlchemy URL of a sqlite file, creating its directory.

    The Optuna sweeper opens its study before any job has created the sweep dir, and sqlite does
    not create directories (``unable to open database file``).
    """
    db = Path(path)
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


@dataclass
class Job:
    """One job of a sweep: its overrides, how it ended, how far it got and its final metrics."""

    name: str
    overrides: list[str]
    status: str
    error: str = ""
    env_steps: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Group:
    """The jobs of one setting: the same overrides apart from ``seed``."""

    overrides: list[str]
    jobs: list[Job]

    def stats(self, metric: str) -> tuple[float, float] | None:
        """Mean and population std (as mario_rl.plot's band) of ``metric`` over the ok jobs."""
        values = [j.metrics[metric] for j in self.jobs if j.status == "ok" and metric in j.metrics]
        return (statistics.fmean(values), statistics.pstdev(values)) if values else None


def _natural(name: str) -> list[int | str]:
    """Sort key that puts job 2 before job 10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def job_dirs(root: Path) -> list[Path]:
    """Every Hydra job dir under ``root`` (or ``root`` itself), in job order."""
    dirs = {p.parent.parent for p in root.rglob(OVERRIDES_FILE)}
    return sorted(dirs, key=lambda d: _natural(d.relative_to(root).as_posix()))


def read_job(root: Path, job_dir: Path) -> Job:
    """A job's overrides and outcome, and the last point of each METRICS tag in its events.

    A job without a status file is still running, or was killed before it could write one.
    """
    name = job_dir.relative_to(root).as_posix() if job_dir != root else job_dir.name
    overrides = [str(o) for o in yaml.safe_load((job_dir / OVERRIDES_FILE).read_text()) or []]
    status_path = job_dir / STATUS_FILE
    record = json.loads(status_path.read_text()) if status_path.exists() else {"status": UNFINISHED}
    job = Job(name, overrides, record["status"], record.get("error", ""))
    events_dirs = sorted({p.parent for p in job_dir.rglob(EVENTS_GLOB)})
    for events_dir in events_dirs:
        events = load_events(events_dir)
        for tag in events.Tags()["scalars"]:
            steps, values = points(events, tag)
            job.env_steps = max(job.env_steps or 0, int(steps[-1]))
            if tag in METRICS:
                job.metrics[tag] = float(values[-1])
    finished = job_dir / FINISHED_FILE
    if finished.exists():  # the env steps spent; the events end at the last logged update
        job.env_steps = int(json.loads(finished.read_text())["env_steps"])
    return job


def read_sweep(root: Path) -> list[Job]:
    """Every job under ``root``; a SweepError when there is none."""
    if not root.is_dir():
        raise SweepError(f"{root} is not a directory")
    dirs = job_dirs(root)
    if not dirs:
        raise SweepError(f"no Hydra job dirs ({OVERRIDES_FILE}) under {root}")
    return [read_job(root, d) for d in dirs]


def _is_seed(override: str) -> bool:
    return override.split("=", 1)[0].lstrip("+~") == "seed"


def group(jobs: Iterable[Job]) -> list[Group]:
    """Jobs whose overrides are the same apart from ``seed``, in order of their first job."""
    groups: dict[tuple[str, ...], Group] = {}
    for job in jobs:
        settings = [o for o in job.overrides if not _is_seed(o)]
        groups.setdefault(tuple(sorted(settings)), Group(settings, [])).jobs.append(job)
    return list(groups.values())


def common_overrides(jobs: list[Job]) -> list[str]:
    """The overrides every job shares, in the first job's order; the tables show only the rest."""
    shared = set.intersection(*(set(j.overrides) for j in jobs))
    return [o for o in jobs[0].overrides if o in shared]


def _cell(text: str) -> str:
    return text.replace("|", "\\|") or "-"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def _varying(overrides: list[str], common: list[str]) -> str:
    return " ".join(o for o in overrides if o not in common)


def markdown(root: Path, jobs: list[Job]) -> str:
    """The jobs table and the settings table (mean ± std across seeds), as markdown."""
    common = common_overrides(jobs)
    job_rows = []
    for job in jobs:
        status = f"{job.status}: {job.error}" if job.error else job.status
        steps = "" if job.env_steps is None else str(job.env_steps)
        values = [fmt.format(job.metrics[m]) if m in job.metrics else "" for m, fmt in METRICS.items()]
        job_rows.append([job.name, _varying(job.overrides, common), status, steps, *values])
    group_rows = []
    for g in group(jobs):
        counts = ", ".join(f"{n} {status}" for status, n in Counter(j.status for j in g.jobs).items())
        cells = []
        for metric, fmt in METRICS.items():
            stats = g.stats(metric)
            cells.append("" if stats is None else f"{fmt.format(stats[0])} ± {fmt.format(stats[1])}")
        group_rows.append([_varying(g.overrides, common), counts, *cells])
    lines = [
        f"# Sweep {root}",
        "",
        f"Every job: `{' '.join(common)}`." if common else "The jobs share no override.",
        "Metrics: the last value in each job's TensorBoard events. Spread: population std across seeds.",
        "",
        "## Jobs",
        "",
        *_table(["job", "overrides", "status", "env steps", *METRICS], job_rows),
        "",
        "## Settings (mean ± std across seeds)",
        "",
        *_table(["overrides", "jobs", *METRICS], group_rows),
    ]
    return "\n".join(lines) + "\n"


def write_csv(jobs: list[Job], path: Path) -> None:
    """One row per job: every override, status, error, env steps and the final metrics unformatted."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["job", "overrides", "status", "error", "env_steps", *METRICS])
        for job in jobs:
            values = [job.metrics.get(m, "") for m in METRICS]
            steps = "" if job.env_steps is None else job.env_steps
            writer.writerow([job.name, " ".join(job.overrides), job.status, job.error, steps, *values])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mario_rl.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="a multirun dir (outputs/multirun/<date>/<time>/)")
    args = parser.parse_args(argv)
    with user_errors_exit():
        jobs = read_sweep(args.root)
    text = markdown(args.root, jobs)
    (args.root / "sweep.md").write_text(text)
    write_csv(jobs, args.root / "sweep.csv")
    print(text)
    print(f"wrote {args.root / 'sweep.md'} and {args.root / 'sweep.csv'}")
    print(f"learning curves: python -m mario_rl.plot {args.root} --metric rollout/x_pos")


if __name__ == "__main__":
    main()
