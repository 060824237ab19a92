"""The benchmark scripts run end to end and print the figures the docs quote.

Their numbers are measurements, not assertions: only what is exact (the replay's bytes per
transition) and what the script derives (the ratios) is checked here.
"""

import argparse
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, compose_train


@pytest.mark.slow
def test_throughput_script_prints_every_figure():
    cmd = [
        sys.executable,
        "benchmarks/throughput.py",
        "--seconds=1",
        "--notebook-steps=60",
        "--notebook-warmup=40",
        "--resident-slots=100000",  # a tenth of the 7 GB the default fills
        "--warmup=64",
        "--train-steps=192",  # seed_notebook runs a third of it: past its 32-step warm-up
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    # one uint8 84x84 frame (7,056) + uint8 action + float32 reward + 4 bool flags
    assert figures["bytes_per_transition"] == 7056 + 1 + 4 + 4
    # every slot's bytes are resident once written, and little else is
    assert figures["replay_1m_resident_gb"] == pytest.approx(figures["bytes_per_transition"] * 1e6 / 1e9, rel=0.02)
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


def test_peers_times_mario_rl_at_sb3s_work_and_with_the_double_dqn_target(tmp_path):
    from benchmarks.peers import MARIO_RL_SYSTEMS
    from mario_rl.config import load

    works = {}
    for system, overrides in MARIO_RL_SYSTEMS.items():
        agent, replay = (run := load(compose_train(overrides, tmp_path))).agent, run.replay
        works[system] = (agent.dueling, agent.n_step, replay.prioritized, agent.double_q)
    # SB3's DQN: plain head, 1-step targets, uniform replay, the max over its target net
    assert works == {"mario_rl": (False, 1, False, False), "mario_rl_double_q": (False, 1, False, True)}


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


def test_train_variants_starts_the_copies_of_a_run_together_and_prints_a_line_for_each(monkeypatch, capsys):
    import threading
    import time

    from benchmarks import train_variants

    spans, lock = [], threading.Lock()

    def fake_run(overrides: list[str]) -> dict[str, float]:
        started = time.perf_counter()
        time.sleep(0.2)
        with lock:
            spans.append((started, time.perf_counter(), overrides))
        return {"env_steps_per_s": 10.0 * len(spans), "updates_per_s": 2.5 * len(spans)}

    monkeypatch.setattr(train_variants, "train_run", fake_run)
    argv = ["train_variants.py", "--warmup=5", "--train-steps=7", "--copies=1,2", "base=", "one=torch_threads=1"]
    monkeypatch.setattr(sys, "argv", argv)
    train_variants.main()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(x["variant"], x["copies"], x["copy"]) for x in lines] == [
        ("base", 1, 0),
        ("base", 2, 0),
        ("base", 2, 1),
        ("one", 1, 0),
        ("one", 2, 0),
        ("one", 2, 1),
    ]
    budget = ["agent.learning_starts=5", "env_steps=12"]
    assert [o for _, _, o in spans] == [budget] * 3 + [[*budget, "torch_threads=1"]] * 3
    for pair in (spans[1:3], spans[4:6]):  # the two copies ran at the same time
        assert max(start for start, _, _ in pair) < min(end for _, end, _ in pair)
    assert spans[1][0] >= spans[0][1]  # and the lone run before them alone
    assert all(x["updates_per_s"] * 4 == x["env_steps_per_s"] for x in lines)


@pytest.mark.parametrize("bad", ["0", "1,x", ""])
def test_train_variants_refuses_a_count_of_copies_below_one(monkeypatch, capsys, bad):
    from benchmarks import train_variants

    monkeypatch.setattr(sys, "argv", ["train_variants.py", f"--copies={bad}", "base="])
    with pytest.raises(SystemExit):
        train_variants.main()
    line = capsys.readouterr().err.splitlines()[-1]
    assert line.endswith(f"argument --copies: counts of runs of at least 1, separated by commas, got {bad!r}")


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
def test_peers_script_prints_every_system_and_figures_that_add_up(tmp_path):
    cmd = [sys.executable, "benchmarks/peers.py", "--seconds=1", "--warmup=40", "--train-steps=48", "--threads=1"]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    # SB3's default logger would leave an empty SB3-<time> folder in the temp dir each run
    assert list(tmp_path.glob("SB3-*")) == []
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    frame = 84 * 84
    # one uint8 frame + uint8 action + float32 reward + 4 bool flags
    assert figures["mario_rl_bytes_per_transition"] == frame + 1 + 4 + 4
    # SB3 with optimize_memory_usage: one uint8 4x84x84 stack + int64 action + float32 reward, done, timeout
    assert figures["sb3_bytes_per_transition"] == 4 * frame + 8 + 4 + 4 + 4
    # the notebook: two float32 4x84x84 stacks + int64 action + float32 done and reward
    assert figures["notebook_bytes_per_transition"] == 2 * 4 * frame * 4 + 8 + 4 + 4
    for system in ("mario_rl", "sb3", "notebook"):
        for unit in ("env_steps_per_s", "updates_per_s", "peak_rss_mb"):
            assert figures[f"{system}_{unit}"] > 0, (system, unit)
    # the notebook updates once per env step; the two DQNs once per 4
    assert figures["notebook_updates_per_s"] == pytest.approx(figures["notebook_env_steps_per_s"], rel=0.05)
    for system in ("mario_rl", "sb3"):
        assert figures[f"{system}_updates_per_s"] * 4 == pytest.approx(figures[f"{system}_env_steps_per_s"], rel=0.25)
    ratio = figures["mario_rl_env_steps_per_s"] / figures["sb3_env_steps_per_s"]
    assert figures["mario_rl_over_sb3_env_steps_per_s"] == pytest.approx(ratio, abs=2e-3)
    env, learner = figures["env_alone_env_steps_per_s"], figures["learner_alone_updates_per_s"]
    assert figures["limit_env_steps_per_s"] == pytest.approx(1 / (1 / env + 1 / (4 * learner)), rel=1e-3)
    assert figures["cores"] >= 1 and isinstance(figures["avx512_bf16"], bool)


@pytest.mark.slow
def test_pipeline_ceiling_script_prints_both_systems_and_where_mario_rls_time_went():
    cmd = [sys.executable, "benchmarks/pipeline_ceiling.py", "--num-envs=2", "--warmup=64", "--train-steps=600"]
    cmd += ["--profile=4"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    for system in ("mario_rl", "sb3"):
        # one update per 4 env steps in both
        rates = figures[f"{system}_env_steps_per_s"], figures[f"{system}_updates_per_s"]
        assert rates[0] > 0 and rates[1] * 4 == pytest.approx(rates[0], rel=0.25), system
    shares = {k: v for k, v in figures.items() if k.startswith("mario_rl_time_")}
    assert set(shares) == {f"mario_rl_time_{p}" for p in ("env_wait", "actor", "replay_add", "replay_sample")} | {
        f"mario_rl_time_{p}" for p in ("forward_loss", "backward_step", "loop")
    }
    assert all(0 <= v <= 1 for v in shares.values()) and sum(shares.values()) == pytest.approx(1, abs=0.01)
    ratio = figures["mario_rl_env_steps_per_s"] / figures["sb3_env_steps_per_s"]
    assert figures["mario_rl_over_sb3_env_steps_per_s"] == pytest.approx(ratio, abs=2e-3)
    assert figures["mario_rl_ms_per_update"] == pytest.approx(1000 / figures["mario_rl_updates_per_s"], rel=0.01)
    # the update alone, and the env steps/s it allows at one update per 4 env steps
    alone = figures["mario_rl_learner_alone_updates_per_s"]
    assert alone > 0 and figures["mario_rl_learner_bound_env_steps_per_s"] == pytest.approx(4 * alone, rel=1e-3)
    ops = figures["mario_rl_profile_self_cpu_ms_per_update"]
    assert len(ops) == 13 and ops["all ops"] >= sum(v for k, v in ops.items() if k != "all ops") - 1e-2
    assert any("convolution" in op for op in ops) and figures["accelerator"] == "cpu"


def test_update_profile_times_every_phase_and_they_add_up_to_the_update():
    from benchmarks.update_profile import PHASES, phase_times

    times = phase_times(2, threads=1, channels_last=True)
    assert set(times) == set(PHASES) and all(len(spans) == 2 for spans in times.values())
    for i in range(2):
        parts = sum(times[phase][i] for phase in PHASES if phase != "update")
        assert parts == pytest.approx(times["update"][i], rel=1e-6)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what happens without CUDA")
@pytest.mark.parametrize("script", ["gpu_check.sh", "gpu_curves.sh"])
def test_the_gpu_scripts_say_so_and_exit_2_without_cuda(script, tmp_path):
    out = subprocess.run(
        ["bash", f"benchmarks/{script}", str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
    )
    assert out.returncode == 2, out.stderr
    what = "check" if script == "gpu_check.sh" else "run"
    assert out.stderr.strip() == f"{script.removesuffix('.sh')}: no CUDA device visible to torch; nothing to {what}"


def test_gpu_curves_names_an_unknown_variant_and_the_allowed_ones(tmp_path):
    out = subprocess.run(
        ["bash", "benchmarks/gpu_curves.sh", str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "VARIANTS": "bf16 fp16"},
    )
    assert out.returncode == 1
    line = out.stderr.strip()
    assert line.startswith("gpu_curves: VARIANTS: unknown variant 'fp16'; allowed: ")
    assert set(line.split("allowed: ")[1].split()) == {"bf16", "fp32", "fp32-huber10"}


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
    # actors_per_learner is printed to 2 decimals: 0.45 stands for 0.445-0.455
    assert figures["actors_per_learner"] == pytest.approx(
        figures["learner_ceiling_env_steps_per_s"] / figures["ray_env_steps_per_s"], rel=0.01, abs=0.0051
    )
