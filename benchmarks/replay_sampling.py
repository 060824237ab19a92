"""What prioritized replay costs the learner per batch, against uniform sampling.

    python benchmarks/replay_sampling.py       # ~1 minute; prints one JSON line

Two buffers of the default shape (100,000 slots over 4 workers, 84x84 frames, stacks of 4,
3-step returns) are filled the same way, the prioritized one with random priorities on
every transition. Per batch of 32 it times the draw alone (uniform ``sample_indices`` vs
``sample_prioritized`` plus ``update_priorities``, the whole PER overhead of one update),
the whole ``sample`` (stacks and n-step returns included), and per vector step ``add``
(which re-checks a few leaves of the tree when prioritized). Rounds are interleaved and the
figure is the best round, so a neighbour's load hits both alike.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mario_rl.config import default_run  # noqa: E402
from mario_rl.replay import ReplayBuffer  # noqa: E402


def filled(prioritized: bool, capacity: int) -> ReplayBuffer:
    """A full buffer of the default shape; episodes of 200 steps; random priorities when prioritized."""
    run = default_run()
    env, agent = run.env, run.agent
    buf = ReplayBuffer(
        capacity, env.num_envs, (env.frame_size,) * 2, env.frame_stack, agent.n_step, agent.gamma, seed=0,
        prioritized=prioritized, priority_alpha=run.replay.priority_alpha,
    )  # fmt: skip
    n = env.num_envs
    frames = np.full((n, env.frame_size, env.frame_size), 7, dtype=np.uint8)
    rewards = np.ones(n, dtype=np.float32)
    buf.start(frames)
    for t in range(capacity // n + 10):
        ended = np.full(n, t % 200 == 199)
        buf.add(np.zeros(n, dtype=np.int64), rewards, ended, np.zeros(n, dtype=bool), frames, frames)
    if prioritized:
        envs, slots = np.divmod(np.arange(buf.capacity), buf.per_env)
        buf.update_priorities(envs, slots, np.random.default_rng(0).exponential(size=buf.capacity))
    return buf


def us_per_call(fn: Callable[[], object], calls: int) -> float:
    """Microseconds per call of ``fn`` over ``calls`` calls."""
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capacity", type=int, default=100_000, help="replay slots")
    parser.add_argument("--calls", type=int, default=1000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    args = parser.parse_args()
    uniform, per = filled(False, args.capacity), filled(True, args.capacity)
    td = np.random.default_rng(1).normal(size=32)
    n = uniform.num_envs
    frames = np.full((n, *uniform.frames.shape[2:]), 9, dtype=np.uint8)
    step = (np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.float32), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool))

    def per_draw_and_update() -> None:
        envs, slots, _ = per.sample_prioritized(32, 0.4)
        per.update_priorities(envs, slots, td)

    cases = {
        "uniform_indices": lambda: uniform.sample_indices(32),
        "prioritized_indices_weights_update": per_draw_and_update,
        "uniform_sample": lambda: uniform.sample(32),
        "prioritized_sample": lambda: per.sample(32, 0.4),
        "uniform_add": lambda: uniform.add(*step, frames),
        "prioritized_add": lambda: per.add(*step, frames),
    }
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(args.rounds):
        for name, fn in cases.items():
            best[name] = min(best[name], us_per_call(fn, args.calls))
    figures = {f"{name}_us": round(us, 1) for name, us in best.items()}
    figures["prioritized_overhead_per_batch_us"] = round(
        best["prioritized_indices_weights_update"] - best["uniform_indices"], 1
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
