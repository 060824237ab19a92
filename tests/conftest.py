"""Shared helpers: compose the real Hydra config, shrunk, for tests."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

# One learner thread: on 2 cores, two OpenMP threads beside env workers or another job stall
# each other at every barrier (docs/BENCHMARKS.md, sharing the cores).
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# The suite's tiny runs peak at about 0.8 GB of temporary files at once; with less free space
# they fail midway with errors that do not say why.
FREE_DISK_NEEDED_GB = 2.0


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop before the first test when the temporary directory's disk cannot hold the suite."""
    root = Path(session.config.option.basetemp or tempfile.gettempdir()).absolute()
    while not root.exists():
        root = root.parent
    free_gb = shutil.disk_usage(root).free / 1e9
    if free_gb < FREE_DISK_NEEDED_GB:
        pytest.exit(
            f"{free_gb:.1f} GB free under {root}; the suite needs {FREE_DISK_NEEDED_GB:.0f} GB. "
            "Free some space (old pytest-of-* dirs in the temp dir?) or pass --basetemp elsewhere.",
            returncode=1,
        )


def compose_config(name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """The config ``name`` (train, evaluate) as Hydra builds it, writing under ``output_dir``."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(name, overrides=[*overrides, f"paths.output_dir={output_dir}"])


def compose_train(overrides: list[str], output_dir: Path) -> DictConfig:
    """The train config as Hydra builds it, writing under ``output_dir``."""
    return compose_config("train", overrides, output_dir)


@pytest.fixture(scope="session")
def tiny_overrides() -> list[str]:
    """A real run of a few hundred env steps: two workers, a small replay, early learning."""
    return ["debug=default", "env.vector=sync"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, tiny_overrides: list[str]) -> Path:
    """The run dir of one tiny real training, shared by the evaluation, callback and plot tests.

    Episodes are cut at 20 agent steps (80 NES frames): too short for Mario to reach the first
    goomba, so every episode ends by the time limit and its length is known in advance.
    """
    from mario_rl.training import train  # torch and Lightning only for the tests that need them

    out = tmp_path_factory.mktemp("trained")
    train(compose_train([*tiny_overrides, "env.max_episode_steps=20"], out))
    return out
