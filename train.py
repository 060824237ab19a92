"""Train a Double-DQN Mario agent: ``python train.py [overrides]`` (see conf/train.yaml)."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mario_rl.config import ConfigError, load
from mario_rl.errors import RunError


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        run = load(cfg)  # fail on a bad value in a second, before torch is even imported
        # Imported here, not at the top: env worker processes import this file as their
        # __main__ and must not pay torch's ~700 MB of resident memory each.
        from mario_rl.training import train

        metrics = train(cfg, run, HydraConfig.get().overrides.task)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    return metrics.get(cfg.get("optimized_metric") or "", None)


if __name__ == "__main__":
    main()
