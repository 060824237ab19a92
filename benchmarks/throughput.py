"""Speed and memory of mario-rl against the seed notebook's loop, measured in one run.

    python benchmarks/throughput.py            # ~6 minutes on 2 cores; prints one JSON line

Every figure comes from this machine in this run, so the ratios compare like with like on
a shared, noisy machine. Training figures are steady state: from the first gradient update
to the end of the budget (mario_rl.throughput.ThroughputMonitor writes them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import learner, notebook_loop  # noqa: E402
from mario_rl.config import auto_precision, default_run  # noqa: E402
from mario_rl.envs import make_vector_env  # noqa: E402
from mario_rl.replay import ReplayBuffer  # noqa: E402
from mario_rl.throughput import peak_rss_mb  # noqa: E402


def bytes_per_transition(buffer: ReplayBuffer) -> float:
    """Bytes of a buffer's per-slot arrays (frames, action, reward, flags) over its slots."""
    arrays = (buffer.frames, buffer.actions, buffer.rewards, buffer.terminated, buffer.truncated, buffer.first)
    return (sum(a.nbytes for a in arrays) + buffer.has_action.nbytes) / buffer.capacity


def replay_figures(slots: int) -> dict[str, float]:
    """Bytes per stored transition of a real buffer, and the resident memory of a full 1M one.

    The resident figure fills a buffer of ``slots`` slots in a fresh process and scales its
    growth in peak RSS to 1,000,000 slots: exact at the default, 1,000,000 (about 7 GB).
    """
    per = bytes_per_transition(ReplayBuffer(10_000, 4, (84, 84), 4, 3, 0.99, seed=0))
    code = (
        "from mario_rl.replay import ReplayBuffer\n"
        "from mario_rl.throughput import peak_rss_mb\n"
        "before = peak_rss_mb()\n"
        f"b = ReplayBuffer({slots}, 4, (84, 84), 4, 3, 0.99, seed=0)\n"
        "for name in ('frames', 'actions', 'rewards', 'terminated', 'truncated', 'first', 'has_action'):\n"
        "    getattr(b, name).fill(1)\n"
        "print((peak_rss_mb() - before) * 2**20)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return {"bytes_per_transition": per, "replay_1m_resident_gb": float(out.stdout) * 1_000_000 / slots / 1e9}


def env_only(seconds: float) -> float:
    """Env steps/s of the default vector env (4 worker processes) under random actions."""
    envs = make_vector_env(default_run().env)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(10):  # warm-up
        envs.step(rng.integers(5, size=envs.num_envs))
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        envs.step(rng.integers(5, size=envs.num_envs))
        steps += envs.num_envs
    rate = steps / (time.perf_counter() - started)
    envs.close()
    return rate


def warm_budget(warmup: int, train_steps: int) -> list[str]:
    """Overrides for a run that plays ``warmup`` env steps before its first update, then ``train_steps`` more."""
    return [f"agent.learning_starts={warmup}", f"env_steps={warmup + train_steps}"]


def train_run(overrides: list[str]) -> dict[str, float]:
    """A real `python train.py` run; returns its throughput.json."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "train.py", *overrides, "replay.save=false", f"hydra.run.dir={out}"]
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        return json.loads((Path(out) / "throughput.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the env-only and learner-only phases")
    parser.add_argument("--notebook-steps", type=int, default=1500, help="env steps of the notebook's loop")
    parser.add_argument("--train-steps", type=int, default=6000, help="env steps of each training run after warm-up")
    parser.add_argument("--warmup", type=int, default=2000, help="env steps of the default run before its first update")
    parser.add_argument("--notebook-warmup", type=int, default=100, help="notebook env steps before its clock starts")
    parser.add_argument(
        "--resident-slots", type=int, default=1_000_000, help="replay slots filled to measure the 1M figure"
    )
    args = parser.parse_args()
    if not notebook_loop.BATCH <= args.notebook_warmup < args.notebook_steps:
        parser.error(
            f"--notebook-warmup: between {notebook_loop.BATCH} (the notebook's first update) and --notebook-steps"
        )

    figures: dict[str, float] = replay_figures(args.resident_slots)
    figures["env_only_steps_per_s"] = env_only(args.seconds)
    threads = OmegaConf.load(ROOT / "conf" / "train.yaml").torch_threads  # as train.py runs it
    figures["learner_only_updates_per_s"] = learner.updates_per_s(args.seconds, threads, auto_precision("cpu"))
    notebook = notebook_loop.run(args.notebook_steps, warmup=args.notebook_warmup)
    figures["notebook_steps_per_s"] = notebook["steps_per_s"]
    figures["notebook_bytes_per_transition"] = notebook["bytes_per_transition"]
    figures["notebook_peak_rss_mb"] = peak_rss_mb()
    default = train_run(warm_budget(args.warmup, args.train_steps))
    figures["train_steps_per_s_default"] = default["env_steps_per_s"]
    figures["train_updates_per_s_default"] = default["updates_per_s"]
    figures["peak_rss_mb"] = default["peak_rss_mb"]
    figures["peak_rss_worker_mb"] = max(default["peak_rss_worker_mb"])
    notebook_cfg = train_run(["experiment=seed_notebook", f"env_steps={args.train_steps // 3}"])
    figures["train_steps_per_s_seed_notebook"] = notebook_cfg["env_steps_per_s"]
    figures["speedup_default"] = figures["train_steps_per_s_default"] / figures["notebook_steps_per_s"]
    figures["speedup_seed_notebook"] = figures["train_steps_per_s_seed_notebook"] / figures["notebook_steps_per_s"]
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
