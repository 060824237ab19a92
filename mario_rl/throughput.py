"""Speed of a run: env steps and gradient updates per second, live and for the whole run.

Live figures go to the logger and progress bar every ``window_s`` seconds; at the end the
steady-state figures (from the first gradient update on, so the random-play warm-up does
not flatter them), the peak resident memory and, on a GPU, the peak memory torch allocated
there are written to ``throughput.json`` in the run dir, where benchmarks and sweeps read them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from mario_rl import atomic


def peak_rss_mb(pid: int | str = "self") -> float:
    """Peak resident memory (VmHWM) of a process, in MB.

    Read from /proc rather than getrusage: ru_maxrss survives fork + exec, so a subprocess
    would report its parent's peak.
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


# In the run dir; benchmarks and sweeps read it by this name.
FILENAME = "throughput.json"


class ThroughputMonitor(pl.Callback):
    """Logs time/env_steps_per_s and time/updates_per_s every ``window_s`` seconds (``callbacks.throughput.window_s``,
    default in conf/callbacks/default.yaml); writes throughput.json at the end."""

    def __init__(self, window_s: float):
        self.window_s = window_s
        self._first: tuple[float, int, int] | None = None
        self._window: tuple[float, int, int] | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        now, env_steps, updates = time.perf_counter(), int(batch["env_steps"]), trainer.global_step
        if self._first is None:
            self._first = self._window = (now, env_steps, updates)
            return
        started, steps0, updates0 = self._window
        if now - started >= self.window_s:
            seconds = now - started
            pl_module.log("time/env_steps_per_s", (env_steps - steps0) / seconds, prog_bar=True)
            pl_module.log("time/updates_per_s", (updates - updates0) / seconds)
            self._window = (now, env_steps, updates)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stream = getattr(pl_module, "stream", None)
        if self._first is None or stream is None:
            return
        started, steps0, updates0 = self._first
        seconds = time.perf_counter() - started
        summary = {
            "env_steps": stream.env_steps,
            "updates": trainer.global_step,
            "seconds": seconds,
            "env_steps_per_s": (stream.env_steps - steps0) / seconds,
            "updates_per_s": (trainer.global_step - updates0) / seconds,
            "peak_rss_mb": peak_rss_mb(),
            "peak_rss_worker_mb": [peak_rss_mb(pid) for pid in stream.collector.worker_pids()],
        }
        if pl_module.device.type == "cuda":
            summary["peak_gpu_mb"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**20
        atomic.write_text(Path(trainer.default_root_dir, FILENAME), json.dumps(summary, indent=2))
