"""Defaults live in one place, the YAML in conf/: the dataclasses are their schema only."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from mario_rl import config
from mario_rl.config import (
    AgentConfig,
    EnvConfig,
    EvaluateConfig,
    EvaluateLevels,
    ReplayConfig,
    RunConfig,
    run_config_from,
    run_dict,
)
from tests.conftest import CONF, compose_train


@pytest.mark.parametrize("schema", [EnvConfig, AgentConfig, ReplayConfig, RunConfig, EvaluateConfig, EvaluateLevels])
def test_the_schema_holds_no_default_of_its_own(schema: type):
    with_default = [
        f.name
        for f in dataclasses.fields(schema)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    ]
    assert with_default == []


def test_the_default_run_is_the_composed_config(tmp_path: Path):
    assert config.default_run() == config.load(compose_train([], tmp_path))


def test_a_default_changed_in_yaml_is_the_default_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    agent_yaml = conf / "agent" / "ddqn.yaml"
    agent_yaml.write_text(agent_yaml.read_text().replace("target_sync: 8_000", "target_sync: 2_000"))
    saved = run_dict(config.default_run())
    del saved["agent"]["target_sync"]  # a checkpoint from before the key existed
    monkeypatch.setattr(config, "CONF", conf)
    assert config.default_run().agent.target_sync == 2_000
    assert run_config_from({"run": saved}).agent.target_sync == 2_000
