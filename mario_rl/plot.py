"""Learning curves from TensorBoard event files: one run, or the mean and spread of every run of a sweep.

    python -m mario_rl.plot outputs/multirun/<date>/<time>/ --metric rollout/x_pos [--out curves.png]
    python -m mario_rl.plot RUN_A RUN_B --label default --label seed_notebook --metric eval/x_pos_mean \
        --max-steps 200000 --csv curves.csv
    python -m mario_rl.plot RUN --metric eval/clear_rate --per-level   # eval/<level>/clear_rate, a curve per level

The event files' step is the env step (module.py logs it as Lightning's "step"), so runs with
different numbers of workers or update rates line up on the axis that compares them.
``--csv`` writes the drawn points as a small text file, and such a file can stand in for a run
dir: a curve kept in git outlives the machine that held the event files. A CSV of several
labels draws one curve per label again.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # a bare Figure draws with Agg: no display, no pyplot state
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mario_rl import atomic
from mario_rl.errors import UserError, user_errors_exit

EVENTS_GLOB = "events.out.tfevents.*"
LOGGER_DIR = "tensorboard"  # conf/logger/tensorboard.yaml's name: the event files' dir inside a run dir
CSV_HEADER = ("label", "run", "metric", "env_step", "value")


class PlotError(UserError):
    """Nothing to plot; the message says why in one line."""


@dataclass
class Curves:
    """Each run's points, and their mean and standard deviation on the union of their steps."""

    runs: dict[str, tuple[np.ndarray, np.ndarray]]
    steps: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray
    metric: str = ""


def run_dirs(root: Path) -> list[Path]:
    """Every directory under ``root`` (or ``root`` itself) holding event files: one per run."""
    return sorted({p.parent for p in root.rglob(EVENTS_GLOB)})


def run_name(events_dir: Path, root: Path) -> str:
    """The run an event dir belongs to, named as the user knows it: its Hydra run dir, relative
    to ``root`` inside a sweep (``3``), by its own name otherwise (``notebook-1-1``), never
    the logger's ``tensorboard`` that every run shares."""
    run = events_dir.parent if events_dir.name == LOGGER_DIR else events_dir
    return str(run.relative_to(root)) if run.is_relative_to(root) and run != root else run.name


def load_events(run_dir: Path) -> EventAccumulator:
    """Every scalar point of a run (a resumed run appends event files to the same dir)."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    return events


def up_to(values_by_step: dict[float, float], max_steps: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) in step order, cut at ``max_steps``."""
    steps = sorted(s for s in values_by_step if max_steps is None or s <= max_steps)
    return np.array(steps, dtype=np.float64), np.array([values_by_step[s] for s in steps], dtype=np.float64)


def points(events: EventAccumulator, metric: str, max_steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one metric up to ``max_steps``; where two points share a step, the
    later-written one wins."""
    return up_to({e.step: e.value for e in sorted(events.Scalars(metric), key=lambda e: e.wall_time)}, max_steps)


def event_runs(root: Path, metric: str, max_steps: int | None) -> tuple[dict, set[str]]:
    """Each run dir's (steps, values) of ``metric`` under ``root``, and every metric they logged."""
    dirs = run_dirs(root)
    if not dirs:
        raise PlotError(f"no TensorBoard event files ({EVENTS_GLOB}) under {root}")
    runs = {}
    logged: set[str] = set()
    for d in dirs:
        events = load_events(d)
        tags = events.Tags()["scalars"]
        logged.update(tags)
        if metric in tags:
            runs[run_name(d, root)] = points(events, metric, max_steps)
    return runs, logged


def csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a ``--csv`` file, after checking its header."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != CSV_HEADER:
            raise PlotError(f"{path} is not a curves CSV: its header must be {','.join(CSV_HEADER)}")
        return list(reader)


def csv_runs(path: Path, metric: str, max_steps: int | None, label: str | None = None) -> tuple[dict, set[str]]:
    """The runs a ``--csv`` file holds under ``label`` (default: all), as ``event_runs`` gives
    them; with points of several labels taken together, a run's name is ``label/run`` so no
    two runs merge."""
    rows = csv_rows(path)
    several_labels = label is None and len({row["label"] for row in rows}) > 1
    by_run: dict[str, dict[float, float]] = {}
    for line, row in enumerate(rows, start=2):
        if row["metric"] == metric and label in (None, row["label"]):
            name = f"{row['label']}/{row['run']}" if several_labels else row["run"]
            try:
                by_run.setdefault(name, {})[float(row["env_step"])] = float(row["value"])
            except (TypeError, ValueError):
                raise PlotError(f"{path}, line {line}: env_step and value must be numbers") from None
    return {name: up_to(pts, max_steps) for name, pts in by_run.items()}, {row["metric"] for row in rows}


def curves(root: Path, metric: str, max_steps: int | None = None, label: str | None = None) -> Curves:
    """Every run's ``metric`` under ``root`` (a run dir, a sweep dir or a ``--csv`` file, of
    which only the points of ``label`` if given) up to ``max_steps`` (a long run cut to a short
    one's span compares them over the same budget), and their mean and std against env steps.

    Runs are linearly interpolated onto the union of their steps (runs of one sweep log at the
    same env steps, so nothing is interpolated there); a run counts only within its own span.
    """
    if root.is_file():
        runs, logged = csv_runs(root, metric, max_steps, label)
    else:
        runs, logged = event_runs(root, metric, max_steps)
    if not runs:
        raise PlotError(f"no run under {root} logged {metric!r}; logged metrics: {', '.join(sorted(logged))}")
    runs = {name: run for name, run in runs.items() if len(run[0])}
    if not runs:
        raise PlotError(f"no run under {root} logged {metric!r} at or before env step {max_steps}")
    steps = np.unique(np.concatenate([s for s, _ in runs.values()]))
    stack = np.stack([np.interp(steps, s, v, left=np.nan, right=np.nan) for s, v in runs.values()])
    present = ~np.isnan(stack)
    count = present.sum(axis=0)
    filled = np.where(present, stack, 0.0)
    mean = filled.sum(axis=0) / count
    std = np.sqrt(np.where(present, (filled - mean) ** 2, 0.0).sum(axis=0) / count)
    return Curves(runs, steps, mean, std, count, metric)


def logged_metrics(root: Path) -> set[str]:
    """Every scalar tag the runs under ``root`` (or the ``--csv`` file ``root``) logged."""
    if root.is_file():
        return {row["metric"] for row in csv_rows(root)}
    dirs = run_dirs(root)
    if not dirs:
        raise PlotError(f"no TensorBoard event files ({EVENTS_GLOB}) under {root}")
    return {tag for d in dirs for tag in load_events(d).Tags()["scalars"]}


def per_level_metrics(root: Path, metric: str) -> dict[str, str]:
    """Level -> tag of ``metric`` logged per level: eval/x_pos_mean -> {'1-1': 'eval/1-1/x_pos_mean', ...}."""
    prefix, _, name = metric.rpartition("/")
    logged = logged_metrics(root)
    found = {}
    for tag in sorted(logged):
        head, _, tail = tag.rpartition("/")
        group, _, level = head.rpartition("/")
        if tail == name and group == prefix and level:
            found[level] = tag
    if not found:
        raise PlotError(f"no run under {root} logged {metric!r} per level ({prefix}/<level>/{name})")
    return found


def sources(root: Path, label: str | None, tag: str | None = None) -> list[tuple[str, str | None]]:
    """(legend label, the CSV label to keep) of each curve ``root`` draws: a run or sweep dir is
    one curve, named ``label`` or the dir; a CSV is one curve per label it was written with
    that holds metric ``tag`` (all its labels when none does, or no tag is given), so two
    configs kept in one file come back side by side, not averaged together, and a file that
    keeps a run's per-level curves beside its whole-run ones draws either."""
    if not root.is_file():
        return [(label or root.name, None)]
    rows = csv_rows(root)
    kept = sorted({row["label"] for row in rows if row["metric"] == tag}) or sorted({row["label"] for row in rows})
    if len(kept) <= 1:
        return [(label or (kept[0] if kept else root.stem), None)]
    return [(f"{label}/{k}" if label else k, k) for k in kept]


def curve_name(name: str, level: str, alone: bool) -> str:
    """The legend entry of source ``name``'s curve of ``level`` ("" for a whole-run metric): the
    level alone when nothing else is drawn beside it, else the source and the level (once: a
    CSV written with --per-level beside other sources already names each as "<source> <level>")."""
    if not level:
        return name
    if alone:
        return level
    return name if name == level or name.endswith(f" {level}") else f"{name} {level}"


COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def plot(
    roots: list[Path],
    metric: str,
    out: Path,
    labels: list[str] | None = None,
    max_steps: int | None = None,
    per_level: bool = False,
) -> dict[str, Curves]:
    """Draw each curve's runs faintly, their mean boldly and mean +- std shaded, one colour per
    curve (see ``sources``), to a PNG at ``out``: one root is a run or a sweep, several are
    configs side by side. ``per_level`` draws ``metric``'s per-level form (``eval/<level>/...``),
    a curve per level and source."""
    labels = labels or [None] * len(roots)
    if len(labels) != len(roots):
        raise PlotError(f"{len(labels)} --label for {len(roots)} run dirs; give one per dir or none")
    if max_steps is not None and max_steps <= 0:
        raise PlotError(f"--max-steps must be a positive number of env steps, got {max_steps}")
    groups: dict[str, Curves] = {}
    for root, label in zip(roots, labels, strict=True):
        tags = per_level_metrics(root, metric) if per_level else {"": metric}
        for level, tag in tags.items():
            # A CSV written with --per-level keeps each level under its own label.
            named = sources(root, label, tag)
            for name, kept in named:
                curve = curve_name(name, level, alone=len(roots) == 1 and len(named) == 1)
                if curve in groups:
                    raise PlotError(f"two curves are named {curve!r}; give each dir a --label")
                groups[curve] = curves(root, tag, max_steps, kept)
    fig = Figure(figsize=(8, 4.5), dpi=120)
    ax = fig.add_subplot()
    for (label, data), color in zip(groups.items(), itertools.cycle(COLORS)):
        for steps, values in data.runs.values():
            ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
        n = len(data.runs)
        runs = f"{n} run{'s' * (n > 1)}"
        ax.plot(data.steps, data.mean, color=color, linewidth=2, label=f"{label}: mean of {runs}" if n > 1 else label)
        if n > 1:
            ax.fill_between(data.steps, data.mean - data.std, data.mean + data.std, color=color, alpha=0.2)
    title = f"{metric}: {roots[0]}" if len(roots) == 1 else metric
    ax.set(xlabel="env steps", ylabel=metric, title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return groups


def write_csv(groups: dict[str, Curves], metric: str, path: Path) -> int:
    """Every drawn point, one row each (``CSV_HEADER``), so ``path`` can later be plotted in
    place of the event files; returns the number of points."""
    rows = [
        (label, run, data.metric or metric, f"{step:.0f}", repr(float(value)))
        for label, data in groups.items()
        for run, (steps, values) in data.runs.items()
        for step, value in zip(steps, values, strict=True)
    ]
    text = io.StringIO(newline="")
    csv.writer(text).writerows([CSV_HEADER, *rows])
    atomic.write_text(path, text.getvalue())  # a later plot reads it in place of the event files
    return len(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mario_rl.plot", description=__doc__.splitlines()[0])
    parser.add_argument(
        "roots", type=Path, nargs="+", help="run dirs, multirun dirs or --csv files; several are drawn side by side"
    )
    parser.add_argument("--metric", default="rollout/x_pos", help="a scalar tag (default: rollout/x_pos)")
    parser.add_argument("--label", action="append", help="legend name of each dir, in order (default: its name)")
    parser.add_argument(
        "--out", type=Path, help="the PNG to write (default: <metric>.png in the first dir, or beside the first CSV)"
    )
    parser.add_argument("--max-steps", type=int, help="draw only points at or before this env step (default: all)")
    parser.add_argument("--csv", type=Path, help="also write the drawn points to this CSV, which can be plotted later")
    parser.add_argument(
        "--per-level", action="store_true", help="a curve per level of the metric's per-level form (eval/<level>/...)"
    )
    args = parser.parse_args(argv)
    first = args.roots[0]
    out = args.out or (first.parent if first.is_file() else first) / f"{args.metric.replace('/', '_')}.png"
    with user_errors_exit():
        groups = plot(args.roots, args.metric, out, args.label, args.max_steps, args.per_level)
    drawn = "; ".join(
        f"{label}: {len(data.runs)} run(s), env steps {data.steps[0]:.0f}..{data.steps[-1]:.0f}"
        for label, data in groups.items()
    )
    print(f"wrote {out}: {args.metric} of {drawn}")
    if args.csv:
        print(f"wrote {args.csv}: {write_csv(groups, args.metric, args.csv)} points")


if __name__ == "__main__":
    main()
