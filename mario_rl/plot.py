"""Learning curves from TensorBoard event files: one run, or the mean and spread of every run of a sweep.

    python -m mario_rl.plot outputs/multirun/<date>/<time>/ --metric rollout/x_pos [--out curves.png]
    python -m mario_rl.plot RUN_A RUN_B --label default --label seed_notebook --metric eval/x_pos_mean \
        --max-steps 200000

The event files' step is the env step (module.py logs it as Lightning's "step"), so runs with
different numbers of workers or update rates line up on the axis that compares them.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # a bare Figure draws with Agg: no display, no pyplot state
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

EVENTS_GLOB = "events.out.tfevents.*"


class PlotError(ValueError):
    """Nothing to plot; the message says why in one line."""


@dataclass
class Curves:
    """Each run's points, and their mean and standard deviation on the union of their steps."""

    runs: dict[str, tuple[np.ndarray, np.ndarray]]
    steps: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray


def run_dirs(root: Path) -> list[Path]:
    """Every directory under ``root`` (or ``root`` itself) holding event files: one per run."""
    return sorted({p.parent for p in root.rglob(EVENTS_GLOB)})


def load_events(run_dir: Path) -> EventAccumulator:
    """Every scalar point of a run (a resumed run appends event files to the same dir)."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    return events


def points(events: EventAccumulator, metric: str, max_steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one metric up to ``max_steps``; where two points share a step, the
    later-written one wins."""
    latest = {e.step: e.value for e in sorted(events.Scalars(metric), key=lambda e: e.wall_time)}
    steps = sorted(s for s in latest if max_steps is None or s <= max_steps)
    return np.array(steps, dtype=np.float64), np.array([latest[s] for s in steps], dtype=np.float64)


def curves(root: Path, metric: str, max_steps: int | None = None) -> Curves:
    """Every run's ``metric`` under ``root`` up to ``max_steps`` (a long run cut to a short
    one's span compares them over the same budget), and their mean and std against env steps.

    Runs are linearly interpolated onto the union of their steps (runs of one sweep log at the
    same env steps, so nothing is interpolated there); a run counts only within its own span.
    """
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
            runs[str(d.relative_to(root)) if d != root else d.name] = points(events, metric, max_steps)
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
    return Curves(runs, steps, mean, std, count)


COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def plot(
    roots: list[Path], metric: str, out: Path, labels: list[str] | None = None, max_steps: int | None = None
) -> dict[str, Curves]:
    """Draw each root's runs faintly, their mean boldly and mean +- std shaded, one colour per
    root, to a PNG at ``out``: one root is a run or a sweep, several are configs side by side."""
    labels = labels or [root.name for root in roots]
    if len(labels) != len(roots):
        raise PlotError(f"{len(labels)} --label for {len(roots)} run dirs; give one per dir or none")
    if max_steps is not None and max_steps <= 0:
        raise PlotError(f"--max-steps must be a positive number of env steps, got {max_steps}")
    groups = {label: curves(root, metric, max_steps) for label, root in zip(labels, roots, strict=True)}
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mario_rl.plot", description=__doc__.splitlines()[0])
    parser.add_argument("roots", type=Path, nargs="+", help="run dirs or multirun dirs; several are drawn side by side")
    parser.add_argument("--metric", default="rollout/x_pos", help="a scalar tag (default: rollout/x_pos)")
    parser.add_argument("--label", action="append", help="legend name of each dir, in order (default: its name)")
    parser.add_argument("--out", type=Path, help="the PNG to write (default: <first dir>/<metric>.png)")
    parser.add_argument("--max-steps", type=int, help="draw only points at or before this env step (default: all)")
    args = parser.parse_args(argv)
    out = args.out or args.roots[0] / f"{args.metric.replace('/', '_')}.png"
    try:
        groups = plot(args.roots, args.metric, out, args.label, args.max_steps)
    except PlotError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    drawn = "; ".join(
        f"{label}: {len(data.runs)} run(s), env steps {data.steps[0]:.0f}..{data.steps[-1]:.0f}"
        for label, data in groups.items()
    )
    print(f"wrote {out}: {args.metric} of {drawn}")


if __name__ == "__main__":
    main()
