import importlib.util
import subprocess
import sys

import pytest

from mario_rl.config import ConfigError, lanes, load, load_train
from tests.conftest import ROOT, compose_train


def test_defaults_validate(tmp_path):
    run = load(compose_train([], tmp_path))
    assert (run.env.level, run.env.num_envs, run.agent.train_every, run.env_steps) == ("1-1", 4, 4, 1_000_000)
    replay = run.replay
    assert (replay.prioritized, replay.priority_alpha, replay.priority_beta_start, replay.priority_eps) == (
        True,
        0.6,
        0.4,
        1e-6,
    )


def test_seed_notebook_resolves_to_the_notebooks_values(tmp_path):
    cfg = compose_train(["experiment=seed_notebook"], tmp_path)
    run = load(cfg)
    # DQNAgent(seed=42, lr=0.00025, capacity=20_000, batch_size=32, gamma=0.9, sync_every=5_000,
    #          burnin=1, learn_every=1, epsilon_start=1, epsilon_min=0.02, epsilon_decay=0.9999)
    assert run.agent.lr == 2.5e-4 and run.agent.gamma == 0.9 and run.agent.batch_size == 32
    assert run.replay.capacity == 20_000 and run.agent.target_sync == 5_000 and run.agent.train_every == 1
    assert run.replay.prioritized is False  # the notebook's deque was sampled uniformly
    assert run.agent.learning_starts == 32  # burnin 1, but learn() waits for a full batch
    assert (run.agent.epsilon_schedule, run.agent.epsilon_start, run.agent.epsilon_end, run.agent.epsilon_decay) == (
        "exponential",
        1.0,
        0.02,
        0.9999,
    )
    assert (run.agent.n_step, run.agent.dueling, run.agent.random_shift, run.agent.adam_eps) == (1, False, 0, 1e-8)
    assert (run.env.actions, run.env.crop, run.env.frame_skip, run.env.frame_stack, run.env.num_envs) == (
        "simple",
        True,
        4,
        4,
        1,
    )
    assert run.env.reward == "classic"  # the 7.x package the notebook ran
    assert run.env.release_jump is False  # its agent held A through landings like ours did
    assert (run.env.max_episode_steps, run.env.stuck_patience) == (None, None)  # episodes end on death or flag
    assert run.agent.grad_clip_norm is None and cfg.trainer.gradient_clip_val is None  # the notebook did not clip
    assert run.agent.huber_delta == 1.0  # its nn.SmoothL1Loss() switches to linear at 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("agent.gamma=1.5", "agent.gamma=1.5 is not allowed; it must be in (0, 1]"),
        ("env.level=9-9", "env.level='9-9' is not a level of smb"),
        ("env.actions=jump", "env.actions='jump' is not allowed; choose one of: right_only, simple, complex"),
        ("env.reward=score", "env.reward='score' is not allowed; choose one of: classic, package"),
        ("env.game=smb3", "env.game='smb3' is not allowed; choose one of: smb, lost_levels"),
        ("env.frame_stack=0", "env.frame_stack=0 is not allowed; it must be an integer >= 1"),
        ("env_steps=-5", "env_steps=-5 is not allowed; it must be an integer >= 1"),
        ("agent.grad_clip_norm=0", "agent.grad_clip_norm=0.0 is not allowed; it must be null (no clipping) or > 0"),
        ("agent.huber_delta=0", "agent.huber_delta=0.0 is not allowed; it must be > 0 (reward units)"),
        ("agent.random_shift=42", "agent.random_shift=42 is not allowed; it must be an integer in [0, 42)"),
        (
            "agent.batch_size=5000 replay.capacity=4000",
            "agent.batch_size=5000 is not allowed; it must be <= replay.capacity (4000)",
        ),
        ("agent.gamma=abc", "agent.gamma: Value 'abc' of type 'str' could not be converted to Float"),
        ("replay.priority_alpha=1.5", "replay.priority_alpha=1.5 is not allowed; it must be in [0, 1]"),
        ("replay.priority_beta_start=-0.1", "replay.priority_beta_start=-0.1 is not allowed; it must be in [0, 1]"),
        ("replay.priority_beta_start=2", "replay.priority_beta_start=2.0 is not allowed; it must be in [0, 1]"),
        ("replay.priority_eps=0", "replay.priority_eps=0.0 is not allowed; it must be > 0"),
        ("replay.prioritized=maybe", "replay.prioritized: Value 'maybe' is not a valid bool"),
        ("seed=-1", "seed=-1 is not allowed; it must be an integer in [0, 4294967295]"),
        ("seed=4294967296", "seed=4294967296 is not allowed; it must be an integer in [0, 4294967295]"),
        ("env_steps=3000", "env_steps=3000 is not allowed; it must be > 10000, the env step of the first update"),
        ("agent.learning_starts=0 agent.batch_size=64 env_steps=64", "env_steps=64 is not allowed; it must be > 64"),
        ("torch_threads=0", "torch_threads=0 is not allowed; it must be null or an integer >= 1"),
        ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0 is not allowed; it must be an integer >= 1"),
        ("callbacks.eval.episodes=0", "callbacks.eval.episodes=0 is not allowed; it must be an integer >= 1"),
        ("callbacks.eval.epsilon=2", "callbacks.eval.epsilon=2 is not allowed; it must be in [0, 1]"),
        ("callbacks.eval.seed=-1", "callbacks.eval.seed=-1 is not allowed; it must be an integer >= 0"),
        (
            "callbacks.eval.seed=4294967290",
            "callbacks.eval.seed=4294967290 is not allowed; it must be an integer in [0, 4294967286]",
        ),
        ("callbacks.eval.max_episode_steps=0", "callbacks.eval.max_episode_steps=0 is not allowed; it must be null or"),
        ("callbacks.eval.levels=[9-9]", "callbacks.eval.levels='9-9' is not a level of smb"),
        ("callbacks.eval.every=abc", "callbacks.eval.every='abc' is not allowed; it must be an integer >= 1"),
        ("checkpoint_every=0", "checkpoint_every=0 is not allowed; it must be an integer >= 1 (env steps)"),
        ("callbacks.throughput.window_s=0", "callbacks.throughput.window_s=0 is not allowed; it must be > 0 (seconds)"),
        ("collector.kind=mpi", "collector.kind='mpi' is not allowed; choose one of: local, ray"),
        ("collector=ray collector.actors=0", "collector.actors=0 is not allowed; it must be an integer >= 1"),
        ("collector=ray collector.actor_cpus=0", "collector.actor_cpus=0.0 is not allowed; it must be > 0"),
        (
            "collector=ray +collector.actor_resources.emulator=-1",
            "collector.actor_resources.emulator=-1.0 is not allowed; it must be > 0",
        ),
        ("collector=ray collector.chunk_steps=0", "collector.chunk_steps=0 is not allowed; it must be an integer >= 1"),
        (
            "collector=ray collector.weight_sync_every=0",
            "collector.weight_sync_every=0 is not allowed; it must be an integer >= 1 (env steps)",
        ),
        (
            "collector=ray collector.max_inflight=0",
            "collector.max_inflight=0 is not allowed; it must be an integer >= 1 (chunks)",
        ),
        (
            "collector=ray collector.epsilon_spread=-1",
            "collector.epsilon_spread=-1.0 is not allowed; it must be null (the run's schedule) or >= 0",
        ),
        ("collector=ray collector.epsilon_base=1.5", "collector.epsilon_base=1.5 is not allowed; it must be in [0, 1]"),
        (
            "collector=ray collector.max_restarts=-1",
            "collector.max_restarts=-1 is not allowed; it must be an integer >= 0",
        ),
        # 3 actors x 2 emulators: 6 lanes of (4 + 3 + 1) slots at least
        (
            "collector=ray collector.actors=3 env.num_envs=2 replay.capacity=40 agent.batch_size=8",
            "replay.capacity=40 is not allowed; it must be >= collector.actors * env.num_envs * "
            "(env.frame_stack + agent.n_step + 1) = 48",
        ),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(tmp_path, override, message):
    with pytest.raises(ConfigError) as err:
        load_train(compose_train(override.split(), tmp_path))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_collector_defaults_to_local_and_ray_reads_its_group(tmp_path):
    assert load(compose_train([], tmp_path)).collector.kind == "local"
    run = load(compose_train(["collector=ray", "collector.actors=8", "env.num_envs=4"], tmp_path))
    collector = run.collector
    assert (collector.kind, collector.actors, collector.address, collector.epsilon_spread) == ("ray", 8, None, None)
    assert (collector.weight_sync_every, collector.max_inflight, collector.max_restarts) == (1_000, 2, 3)
    assert lanes(run) == 32 and lanes(load(compose_train([], tmp_path))) == 4


def test_collector_ray_without_ray_names_the_file_to_install(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ConfigError) as err:
        load(compose_train(["collector=ray"], tmp_path))
    assert str(err.value) == "collector=ray needs Ray, which is not installed: pip install -r requirements-ray.txt"
    assert (ROOT / "requirements-ray.txt").is_file()
    assert load(compose_train([], tmp_path)).collector.kind == "local"  # the default never asks for Ray


def test_lost_levels_accept_worlds_a_to_d(tmp_path):
    assert load(compose_train(["env.game=lost_levels", "env.level=C-2"], tmp_path)).env.level == "C-2"


@pytest.mark.parametrize(
    "override", ["agent.gamma=1.5", "env.level=9-9", "env.actions=jump", "seed=-1", "env_steps=3000"]
)
def test_cli_exits_non_zero_with_one_line(tmp_path, override):
    proc = subprocess.run(
        [sys.executable, "train.py", override, f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and override.split("=")[0] in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    ("accelerator", "cpu_bf16", "cuda", "cuda_bf16", "expected"),
    [
        ("cpu", True, False, False, "bf16-mixed"),
        ("cpu", False, False, False, "32-true"),  # emulated bf16 ran 14x slower than fp32
        ("gpu", False, True, True, "bf16-mixed"),
        ("gpu", False, True, False, "16-mixed"),
    ],
)
def test_auto_precision_uses_bf16_only_where_the_hardware_has_it(
    monkeypatch, tmp_path, accelerator, cpu_bf16, cuda, cuda_bf16, expected
):
    import torch

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: cpu_bf16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
    cfg = compose_train([f"trainer={accelerator}"], tmp_path)
    assert cfg.trainer.precision == expected
    pinned = compose_train([f"trainer={accelerator}", "trainer.precision=32-true"], tmp_path)
    assert pinned.trainer.precision == "32-true"
