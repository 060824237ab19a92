"""Resident memory of a training run that goes on well past a full replay buffer.

    python benchmarks/soak.py                       # 20,000-slot replay, 50,000 steps past full
    python benchmarks/soak.py --capacity 100000 --past-full 100000

Prints one JSON line: the learner process's resident memory (VmRSS) when the buffer is
first full and at 25%, 50% and 100% of the run, and the growth from full to the end (the
target is under 5%). The replay is preallocated but its pages are only touched as it
fills, so memory climbs until the buffer is full; after that it must stay flat.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

ROOT = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    """Current resident memory of this process, MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class RssProbe(pl.Callback):
    """Records VmRSS when the env-step counter first passes each mark; writes rss.json at the end."""

    def __init__(self, marks: dict[str, int]):
        self.marks = dict(sorted(marks.items(), key=lambda kv: kv[1]))
        self.seen: dict[str, Any] = {}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, idx) -> None:
        for name, step in self.marks.items():
            if name not in self.seen and batch["env_steps"] >= step:
                self.seen[name] = {"env_steps": int(batch["env_steps"]), "rss_mb": round(rss_mb(), 1)}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seen["end"] = {"env_steps": pl_module.stream.env_steps, "rss_mb": round(rss_mb(), 1)}
        Path(trainer.default_root_dir, "rss.json").write_text(json.dumps(self.seen))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capacity", type=int, default=20_000, help="replay capacity (transitions)")
    parser.add_argument("--past-full", type=int, default=50_000, help="env steps to run after the buffer is full")
    args = parser.parse_args()
    # a slot per env step plus one per episode end: the buffer is full a little before `capacity` steps
    full = args.capacity
    budget = full + args.past_full
    marks = {"buffer_full": full, "at_25pct": budget // 4, "at_50pct": budget // 2, "at_100pct": budget - 8}
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            sys.executable,
            "train.py",
            f"replay.capacity={args.capacity}",
            f"env_steps={budget}",
            "agent.learning_starts=2000",
            "replay.save=false",
            "checkpoint_every=1000000",
            "+callbacks.rss._target_=benchmarks.soak.RssProbe",
            "+callbacks.rss.marks={" + ",".join(f"{k}:{v}" for k, v in marks.items()) + "}",
            f"hydra.run.dir={out}",
        ]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"training failed:\n{proc.stderr[-3000:]}")
        seen = json.loads((Path(out) / "rss.json").read_text())
    growth = (seen["end"]["rss_mb"] - seen["buffer_full"]["rss_mb"]) / seen["buffer_full"]["rss_mb"]
    print(json.dumps({"capacity": args.capacity, "env_steps": budget, **seen, "growth_after_full": round(growth, 4)}))


if __name__ == "__main__":
    main()
