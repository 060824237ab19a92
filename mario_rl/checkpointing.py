"""Checkpoint files: written atomically on every filesystem, on an env-step cadence, loaded safely.

Saving: ``SafeCheckpointIO`` (the Trainer's checkpoint plugin, conf/trainer) writes every
checkpoint, whatever its name, to a temporary file beside its target, flushes it to disk and
renames it over the target (mario_rl/atomic.py), so a kill at any moment leaves the previous
file whole. Lightning's own save writes the temporary file in the system's temp dir and moves
it, which across filesystems (a run dir on a scratch disk, NFS or a Docker volume) is a copy
into the target: a kill during it left last.ckpt truncated.

When: ``PeriodicCheckpoint`` saves env_steps_<N>.ckpt and last.ckpt each time the env-step
counter crosses a multiple of its period, counted from 0 (also in the warm-up, before the
first update), and ``BestCheckpoint`` keeps the weights of the best evaluation. Ctrl-C,
SIGTERM and a dead env worker save last.ckpt on the way out (``SaveOnInterrupt``).

Loading is weights-only (a checkpoint is data, never code), and a missing, truncated, foreign
or code-carrying file is one ConfigError naming it. What a resume does with a checkpoint is
mario_rl/resume.py.
"""

from __future__ import annotations

import logging
import math
import pickle
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Checkpoint
from submitit.core.utils import UncompletedJobError

from mario_rl import atomic
from mario_rl.config import ConfigError
from mario_rl.errors import EnvWorkerError, one_line

log = logging.getLogger(__name__)

LAST = "last.ckpt"
BEST = "best.ckpt"


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a mario-rl checkpoint with torch's weights-only unpickler."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path}: no such file")
    try:
        with warnings.catch_warnings():  # torch warns about legacy (non-zip) files before failing on them
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower():
            raise ConfigError(
                f"checkpoint {path}: refused: it needs to unpickle objects other than tensors and plain data"
            ) from None
        raise ConfigError(f"checkpoint {path}: corrupt or truncated ({one_line(err)})") from None
    except Exception as err:  # torch.load fails in many ways on a damaged or foreign file
        raise ConfigError(f"checkpoint {path}: corrupt or truncated ({one_line(err)})") from None
    if not isinstance(ckpt, dict) or "run" not in (ckpt.get("hyper_parameters") or {}):
        raise ConfigError(f"checkpoint {path}: not a mario-rl training checkpoint (no run config inside)")
    return ckpt


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, saving atomically beside the target and loading through load_checkpoint."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options, got {storage_options!r}")
        atomic.write_with(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint(path, map_location or "cpu")


def crossed(before: int, after: int, every: int) -> bool:
    """Whether the env-step counter passed a multiple of ``every`` going from ``before`` to ``after``."""
    return after // every > before // every


class PeriodicCheckpoint(Checkpoint):
    """Saves ``env_steps_<N>.ckpt`` and ``last.ckpt`` (the same file) each time the env-step
    counter crosses a multiple of ``every``, counted from 0: a run killed at 30,000 env steps
    with ``every`` 25,000 resumes from 25,000.

    It saves from inside the stream, right after the vector step that crossed (the stream's
    ``on_steps``), so the saved counters, random states and replay are exactly that step's,
    also during the warm-up when no batch flows.
    """

    def __init__(self, dirpath: str | Path, every: int):
        if every < 1:
            raise ConfigError(f"callbacks.model_checkpoint.every={every!r} is not allowed; it must be an integer >= 1")
        self.dirpath = Path(dirpath)
        self.every = every

    def on_env_steps(self, trainer: pl.Trainer, pl_module: pl.LightningModule, before: int, after: int) -> None:
        if crossed(before, after, self.every):
            path = self.dirpath / f"env_steps_{after}.ckpt"
            trainer.save_checkpoint(path, weights_only=False)
            atomic.link_or_copy(path, self.dirpath / LAST)

    def save_last(self, trainer: pl.Trainer) -> Path:
        """Write last.ckpt now: the full state, weights, optimizer, counters, replay."""
        path = self.dirpath / LAST
        trainer.save_checkpoint(path, weights_only=False)
        return path


class BestCheckpoint(Checkpoint):
    """``best.ckpt``: the weights (only) of the evaluation with the best ``monitor`` value.

    Checked where the evaluation runs, each time the env-step counter crosses a multiple of
    ``every`` (the evaluation's period), after the evaluation callback has published the new
    value in ``trainer.callback_metrics``. The best score rides in last.ckpt, so a resumed run
    replaces best.ckpt only with better weights.
    """

    def __init__(self, dirpath: str | Path, every: int, monitor: str = "eval/x_pos_mean", mode: str = "max"):
        if mode not in ("max", "min"):
            raise ConfigError(f"callbacks.best_checkpoint.mode={mode!r} is not allowed; choose one of: max, min")
        self.path = Path(dirpath) / BEST
        self.every = every
        self.monitor = monitor
        self.mode = mode
        self.best: float | None = None

    def on_env_steps(self, trainer: pl.Trainer, pl_module: pl.LightningModule, before: int, after: int) -> None:
        if not crossed(before, after, self.every) or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if math.isnan(value):
            return
        if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
            self.best = value
            trainer.save_checkpoint(self.path, weights_only=True)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "monitor": self.monitor}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("monitor") == self.monitor:
            self.best = state_dict.get("best")


def save_last(trainer: pl.Trainer) -> Path | None:
    """Write last.ckpt where the periodic checkpoints go; periodic saves miss the end of a run."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, PeriodicCheckpoint):
            return callback.save_last(trainer)
    return None


class SaveOnInterrupt(pl.Callback):
    """Saves last.ckpt when the run is stopped from outside or loses an env worker.

    From outside: Ctrl-C, SIGTERM (Lightning's SIGTERMException is a SystemExit), and a Slurm
    job run through submitit, whose signal handler raises UncompletedJobError in the training
    thread at the time limit and requeues a pre-empted job with sys.exit. Not on a non-finite
    loss: the point of stopping there is to keep the last good file. Not before the run is whole
    (``DQN.whole``: a resume still reading its checkpoint or replay back), whose files on disk
    are then the run.
    """

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt | SystemExit | UncompletedJobError | EnvWorkerError):
            if not getattr(pl_module, "whole", True):
                log.warning("%s before the run was restored or began: nothing saved", type(exception).__name__)
                return
            path = save_last(trainer)
            log.warning("%s: saved %s before exiting", type(exception).__name__, path)
