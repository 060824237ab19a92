"""train(cfg): the whole training run as a plain function, testable without the CLI."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint

from mario_rl.config import RunConfig, load
from mario_rl.module import DQN, run_dict
from mario_rl.replay import replay_nbytes

log = logging.getLogger(__name__)


def train(cfg: DictConfig, run: RunConfig | None = None) -> dict[str, float]:
    """Validate the config (unless ``run`` is its validated form), build module, callbacks,
    loggers and Trainer, and fit.

    Returns the last logged value of every metric, for sweepers and tests.
    """
    run = run or load(cfg)
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    pl.seed_everything(run.seed, workers=True, verbose=False)
    out = Path(cfg.paths.output_dir)
    frame = run.env.frame_size
    log.info(
        "replay: %d transitions x %d bytes = %.2f GB of RAM once full",
        run.replay.capacity,
        replay_nbytes(1, (frame, frame)),
        replay_nbytes(run.replay.capacity, (frame, frame)) / 1e9,
    )
    module = DQN(run_dict(run), replay_dir=str(out / "checkpoints" / "replay"))
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    trainer.fit(module, ckpt_path=cfg.get("ckpt_path"))
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.save_last and cb.dirpath:
            # Periodic saves count updates; the end of the budget falls between two of them.
            trainer.save_checkpoint(Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}")
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
