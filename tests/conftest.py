"""Shared helpers: compose the real Hydra config, shrunk, for tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

# One learner thread, as the default config has it: on 2 cores, two OpenMP threads beside
# env workers or another job stall each other at every barrier.
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def compose_train(overrides: list[str], output_dir: Path) -> DictConfig:
    """The train config as Hydra builds it, writing under ``output_dir``."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[*overrides, f"paths.output_dir={output_dir}"])


@pytest.fixture
def tiny_overrides() -> list[str]:
    """A real run of a few hundred env steps: two workers, a small replay, early learning."""
    return ["debug=default", "env.vector=sync"]
