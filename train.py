"""Train a Double-DQN Mario agent: ``python train.py [overrides]`` (see conf/train.yaml)."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mario_rl.config import check_level_overrides, load_train
from mario_rl.outcome import optimized_value, run_job
from mario_rl.stopping import taking_stops


def train_job(cfg: DictConfig) -> dict[str, float]:
    """Validate, then train; the metrics of the finished run."""
    overrides = HydraConfig.get().overrides.task
    check_level_overrides(overrides)
    # Fail on a bad value in a second, before torch is even imported. A resume's config is the
    # checkpoint's run merged with this command line: mario_rl/resume.py validates that one.
    run = None if cfg.get("ckpt_path") else load_train(cfg)
    # Imported here, not at the top: env worker processes import this file as their
    # __main__ and must not pay torch's ~700 MB of resident memory each.
    from mario_rl.training import train

    return train(cfg, run, overrides)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """One run, or one job of a multirun; returns ``optimized_metric`` for sweepers (None if the job failed)."""
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    # A resume trains in the run's own dir (cfg.paths.output_dir once resumed): its outcome goes there too.
    metrics = run_job(
        lambda: train_job(cfg), Path(hydra_cfg.runtime.output_dir), multirun, lambda: Path(cfg.paths.output_dir)
    )
    return optimized_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    with taking_stops():  # from the first moment: a stop while Hydra composes the config is noted too
        main()
