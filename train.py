"""Train a Double-DQN Mario agent: ``python train.py [overrides]`` (see conf/train.yaml)."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mario_rl.config import check_level_overrides, load


def train_job(cfg: DictConfig) -> dict[str, float]:
    """Validate, then train; the metrics of the finished run."""
    overrides = HydraConfig.get().overrides.task
    check_level_overrides(overrides)
    run = load(cfg)  # fail on a bad value in a second, before torch is even imported
    # Imported here, not at the top: env worker processes import this file as their
    # __main__ and must not pay torch's ~700 MB of resident memory each.
    from mario_rl.training import train

    return train(cfg, run, overrides)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """One run, or one job of a multirun; returns ``optimized_metric`` for sweepers (None if the job failed)."""
    from mario_rl.sweep import optimized_value, run_job  # TensorBoard's reader: not for the env workers either

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    metrics = run_job(lambda: train_job(cfg), Path(hydra_cfg.runtime.output_dir), multirun)
    return optimized_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
