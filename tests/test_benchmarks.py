"""The benchmark scripts run end to end and print the figures the docs quote.

Their numbers are measurements, not assertions: only what is exact (the replay's bytes per
transition) and what the script derives (the ratios) is checked here.
"""

import argparse
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_throughput_script_prints_every_figure():
    cmd = [
        sys.executable,
        "benchmarks/throughput.py",
        "--seconds=1",
        "--notebook-steps=140",
        "--warmup=64",
        "--train-steps=192",  # seed_notebook runs a third of it: past its 32-step warm-up
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    # one uint8 84x84 frame (7,056) + uint8 action + float32 reward + 4 bool flags
    assert figures["bytes_per_transition"] == 7056 + 1 + 4 + 4
    # the notebook keeps two float32 4x84x84 stacks per transition, plus its scalars
    assert figures["notebook_bytes_per_transition"] >= 2 * 4 * 84 * 84 * 4
    for key in ("env_only_steps_per_s", "learner_only_updates_per_s", "notebook_steps_per_s", "peak_rss_mb"):
        assert figures[key] > 0, key
    for run in ("default", "seed_notebook"):
        ratio = figures[f"train_steps_per_s_{run}"] / figures["notebook_steps_per_s"]
        assert figures[f"speedup_{run}"] == pytest.approx(ratio, abs=2e-3), run


def test_learner_benchmark_measures_each_variant_with_the_threads_asked():
    import torch

    from benchmarks import learner

    try:
        assert learner.updates_per_s(0.2, 2, "32-true") > 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)  # as tests/conftest.py sets it for the rest of the suite
    assert learner.updates_per_s(0.2, 1, "32-true", fused_adam=False, dueling=False) > 0
    assert torch.get_num_threads() == 1


def test_train_variants_reads_a_name_and_its_overrides():
    from benchmarks.train_variants import parse_variant

    assert parse_variant("base=") == ("base", [])
    assert parse_variant("plain=agent.dueling=false,torch_threads=1") == (
        "plain",
        ["agent.dueling=false", "torch_threads=1"],
    )
    for bad in ("plain", "=agent.dueling=false"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"a variant is name=override\[,override\.\.\.\], got"):
            parse_variant(bad)


def test_levels_script_prints_the_cost_of_a_level_switch_and_of_start_states():
    cmd = [sys.executable, "benchmarks/levels.py", "--resets=5", "--snapshots=20", "--prefix-frames=120"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["switch_over_same"] == pytest.approx(
        figures["reset_switch_level_ms"] / figures["reset_same_level_ms"], rel=0.05, abs=0.01
    )
    assert figures["first_build_of_a_level_ms"] > figures["reset_switch_level_ms"] > 0
    assert figures["prefix_replay_nes_frames_per_s"] > 0 and figures["snapshot_bytes"] > 0


@pytest.mark.slow
def test_collector_script_prints_ray_against_local_and_the_learner_ceiling():
    cmd = [
        sys.executable,
        "benchmarks/collector.py",
        "--emulators=2",
        "--actors=1",
        "--env-steps=200",
        "--train-env-steps=400",
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("local", "ray", "ray_synthetic", "learner_ceiling"):
        assert figures[f"{key}_env_steps_per_s"] > 0, key
    assert figures["ray_over_local"] == pytest.approx(
        figures["ray_env_steps_per_s"] / figures["local_env_steps_per_s"], abs=2e-3
    )
    assert figures["actors_per_learner"] == pytest.approx(
        figures["learner_ceiling_env_steps_per_s"] / figures["ray_env_steps_per_s"], rel=0.01
    )
