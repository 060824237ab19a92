"""train(cfg): the whole training run as a plain function, testable without the CLI."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.utilities.exceptions import SIGTERMException

from mario_rl.checkpointing import save_last
from mario_rl.config import RunConfig, load_train, run_dict
from mario_rl.errors import EnvWorkerError, StoppedError
from mario_rl.levels import pool_nbytes
from mario_rl.module import DQN
from mario_rl.replay import replay_nbytes
from mario_rl.resume import prepare
from mario_rl.stopping import raise_if_stopped_while_starting, sigterm_noted, taking_stops, terminated_by

log = logging.getLogger(__name__)


def train(cfg: DictConfig, run: RunConfig | None = None, overrides: Sequence[str] = ()) -> dict[str, float]:
    """Validate the config (unless ``run`` is its validated form), build module, callbacks,
    loggers and Trainer, and fit.

    A resume (``ckpt_path``, mario_rl/resume.py) continues the checkpoint's run config in the
    run's own dir; of this invocation only the keys named in ``overrides`` (the command line's)
    apply. Returns the last logged value of every metric, for sweepers and tests.
    """
    raise_if_stopped_while_starting()  # Ctrl-C or SIGTERM while torch was imported
    resume = prepare(cfg, overrides)
    if resume is None:
        run = run or load_train(cfg)
    else:
        run = resume.run
        log.info("resuming %s in %s", resume.ckpt_path, resume.run_dir)
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
    if run.env.start_states != "off":
        levels = len(run.env.training_levels)
        log.info(
            "start states: at most %d per level and worker, %d levels x %d workers = %.2f GB of RAM when full",
            run.env.start_state_pool,
            levels,
            run.env.num_envs,
            pool_nbytes(levels, run.env.start_state_pool, run.env.num_envs) / 1e9,
        )
    module = DQN(run_dict(run), replay_dir=str(out / "checkpoints" / "replay"))
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    raise_if_stopped_while_starting()  # nothing written yet: the run's files are as they were
    try:
        with taking_stops():
            trainer.fit(module, ckpt_path=resume and resume.ckpt_path, weights_only=True)
    except (SIGTERMException, EnvWorkerError) as err:
        # SIGTERMException is a SystemExit(0) in Lightning: a pre-empted run has not finished. A
        # SIGTERM sent to the whole process group can end the env workers before the learner's
        # next env step notes it; then a worker's death is the SIGTERM's doing, and said as such.
        if isinstance(err, EnvWorkerError) and not sigterm_noted(trainer):
            raise
        steps = module.stream.env_steps if module.stream else 0
        raise StoppedError(
            f"stopped by {terminated_by()} at env step {steps}; saved, resume with ckpt_path=last"
        ) from None
    finally:
        if module.stream is not None:  # however fit ended: the workers go with it
            module.stream.close()
    save_last(trainer)
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
