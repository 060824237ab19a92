"""Checkpoints: safe to load, written atomically, found again for a resume.

Every checkpoint, whatever its name, is written to a temporary file beside its target, flushed
to disk and renamed over it (mario_rl/atomic.py), so a kill at any moment leaves the previous
file whole. Lightning's own save writes the temporary file in the system's temp dir and moves
it, which across filesystems (a run dir on a scratch disk, NFS or a Docker volume) is a copy
into the target: a kill during it left last.ckpt truncated. Loading is weights-only (a
checkpoint is data, never code), a missing, truncated, foreign or code-carrying file is one
ConfigError naming it, ``ckpt_path=last`` finds the newest run, and an interrupted run
(Ctrl-C, SIGTERM, a dead env worker) saves ``last.ckpt`` on its way out.
"""

from __future__ import annotations

import logging
import pickle
import warnings
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import ModelCheckpoint
from submitit.core.utils import UncompletedJobError

from mario_rl import atomic
from mario_rl.config import ConfigError, RunConfig, load
from mario_rl.errors import EnvWorkerError, one_line
from mario_rl.module import run_dict

log = logging.getLogger(__name__)

LAST = "last.ckpt"
_RUN_KEYS = {f.name for f in fields(RunConfig)}
_UNSET = object()


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


def resolve_ckpt_path(value: str | None, run_dir: Path, outputs: Path = Path("outputs")) -> Path | None:
    """``ckpt_path`` as given: null, a path, or ``last``.

    ``last`` is this run dir's last.ckpt when there is one (``hydra.run.dir=<old run>``),
    else the newest last.ckpt under outputs/.
    """
    if value is None:
        return None
    if value == "last":
        own = run_dir / "checkpoints" / LAST
        if own.is_file():
            return own
        found = sorted(outputs.glob(f"**/checkpoints/{LAST}"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ConfigError(f"ckpt_path=last: no checkpoints/{LAST} in {run_dir} or under {outputs}/ to resume from")
        return found[-1]
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={value}: no such file")
    return path


def resumed_run(ckpt: dict[str, Any], cfg: DictConfig, overrides: Sequence[str]) -> RunConfig:
    """The run config a resume continues with: the checkpoint's, plus what this command line set.

    So ``python train.py ckpt_path=last`` continues the run as it was configured, and
    ``ckpt_path=last env_steps=2000000`` only extends its budget.
    """
    saved = OmegaConf.create(ckpt["hyper_parameters"]["run"])
    keys = set()
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        value = OmegaConf.select(cfg, key, default=_UNSET)
        if key.split(".")[0] in _RUN_KEYS and value is not _UNSET:  # null is a value: agent.grad_clip_norm=null
            OmegaConf.update(saved, key, value, force_add=True)
            keys.add(key)
    if "env.level" in keys and "env.levels" not in keys:  # one level now replaces the run's list
        OmegaConf.update(saved, "env.levels", None, force_add=True)
    return load(saved)


def continue_in(cfg: DictConfig, run: RunConfig) -> None:
    """Write the resumed run's config into ``cfg``, so what interpolates it (the checkpoint and
    evaluation cadence in ``conf/callbacks``) follows the run, not this command's defaults: a
    resumed ``experiment=seed_notebook`` run saves every 10,000 env steps as configured, where
    it used to save every 6,250 (the defaults' 25,000 over their train_every of 4)."""
    with open_dict(cfg):
        for key, value in run_dict(run).items():
            cfg[key] = value


def run_dir_of(ckpt: Path) -> Path | None:
    """The run directory a checkpoint belongs to (…/<run>/checkpoints/x.ckpt), if it has one."""
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None


def save_last(trainer: pl.Trainer) -> Path | None:
    """Write last.ckpt where the checkpoint callback keeps it; periodic saves miss the end of a run."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
            path = Path(callback.dirpath) / LAST
            trainer.save_checkpoint(path, weights_only=False)  # the full state: weights, optimizer, loops
            return path
    return None


class SaveOnInterrupt(pl.Callback):
    """Saves last.ckpt when the run is stopped from outside or loses an env worker.

    From outside: Ctrl-C, SIGTERM (Lightning's SIGTERMException is a SystemExit), and a Slurm
    job run through submitit, whose signal handler raises UncompletedJobError in the training
    thread at the time limit and requeues a pre-empted job with sys.exit. Not on a non-finite
    loss: the point of stopping there is to keep the last good file.
    """

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt | SystemExit | UncompletedJobError | EnvWorkerError):
            path = save_last(trainer)
            log.warning("%s: saved %s before exiting", type(exception).__name__, path)
