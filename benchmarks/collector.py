"""Env steps/s of the Ray collector against the local one, and the learner's ceiling fed by Ray actors.

    python benchmarks/collector.py                       # a few minutes on 2 cores; prints one JSON line
    python benchmarks/collector.py --emulators 8 --actors 4

At equal emulator count (``--emulators``: local runs them as that many worker processes, Ray
as ``--actors`` actors of emulators/actors each), the ExperienceStream collects
``--env-steps`` env steps of World 1-1 with epsilon 0.05 (so the actor's network runs every
step) and no learning: the figure is the collector's, start-up excluded.
``ray_over_local`` is their ratio: Ray's overhead on this machine.

The ceiling: Ray actors stepping the synthetic env (mario_rl/synthetic.py: prepared frames,
no emulation) feed the real DQN module under Lightning at the default replay ratio
(``agent.train_every``) and network, from the first update on (the run's throughput.json).
``actors_per_learner`` is that ceiling over one actor's Mario env steps/s: how many actors
like these one learner process can keep up with. ``ray_synthetic_env_steps_per_s`` is the
collection plumbing alone (actors, object store, replay writes) with the synthetic env.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytorch_lightning as pl
import ray
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mario_rl.config import RunConfig, auto_precision, default_run, run_dict  # noqa: E402
from mario_rl.data import ExperienceStream  # noqa: E402
from mario_rl.envs import make_vector_env, num_actions  # noqa: E402
from mario_rl.module import DQN  # noqa: E402
from mario_rl.nets import NatureCNN  # noqa: E402
from mario_rl.policy import EpsilonGreedy  # noqa: E402
from mario_rl.synthetic import make_synthetic_vector_env  # noqa: E402
from mario_rl.throughput import ThroughputMonitor  # noqa: E402

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")


def cpu_flags() -> list[str]:
    """The CPU features that decide the learner's speed, as /proc/cpuinfo lists them."""
    with open("/proc/cpuinfo") as f:
        flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    return [flag for flag in CPU_FLAGS if flag in flags]


def collection_run(emulators: int, actors: int, kind: str, env_steps: int) -> RunConfig:
    """No learning (learning_starts beyond the budget); epsilon 0.05 throughout, so the network acts at every step."""
    per_actor = emulators // actors if kind == "ray" else emulators
    return default_run(
        env=dict(num_envs=per_actor, vector="async"),
        agent=dict(learning_starts=env_steps + 1, epsilon_start=0.05, epsilon_end=0.05),
        replay=dict(capacity=max(10_000, 2 * env_steps), prioritized=False),
        collector=dict(kind=kind, actors=actors),
        env_steps=env_steps,
    )


def collect_steps_per_s(run: RunConfig, make_envs=make_vector_env) -> float:
    """Env steps/s of the stream over its budget, its emulators started before the clock."""
    env = run.env
    net = NatureCNN(env.frame_stack, num_actions(env.actions), env.frame_size, run.agent.dueling)
    stream = ExperienceStream(run, EpsilonGreedy(net, num_actions(env.actions), seed=0), make_envs=make_envs)
    stream._open()
    started = time.perf_counter()
    for _ in stream:
        pass
    seconds = time.perf_counter() - started
    stream.close()
    return stream.env_steps / seconds


def learner_ceiling(actors: int, per_actor: int, env_steps: int) -> dict[str, float]:
    """The DQN module under Lightning fed by Ray actors of the synthetic env; throughput from the first update."""
    run = default_run(
        env=dict(num_envs=per_actor),
        agent=dict(learning_starts=env_steps // 4),
        replay=dict(capacity=20_000),
        collector=dict(kind="ray", actors=actors),
        env_steps=env_steps,
    )
    module = DQN(run_dict(run))
    module.stream = ExperienceStream(
        module.run, EpsilonGreedy(module.online, 5, seed=0), make_envs=make_synthetic_vector_env
    )
    with tempfile.TemporaryDirectory() as out:
        trainer = pl.Trainer(
            default_root_dir=out,
            accelerator="cpu",
            precision=auto_precision("cpu"),
            max_epochs=-1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[ThroughputMonitor(window_s=1e9)],
        )
        trainer.fit(module)
        summary = json.loads((Path(out) / "throughput.json").read_text())
    return {"env_steps_per_s": summary["env_steps_per_s"], "updates_per_s": summary["updates_per_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emulators", type=int, default=4, help="emulators of each collector")
    parser.add_argument("--actors", type=int, default=2, help="Ray actors sharing them")
    parser.add_argument("--env-steps", type=int, default=2_000, help="env steps of each collection run")
    parser.add_argument("--train-env-steps", type=int, default=4_000, help="env steps of the ceiling run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the learner")
    args = parser.parse_args()
    if args.emulators % args.actors:
        parser.error("--emulators must be a multiple of --actors")
    torch.set_num_threads(args.threads)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    ray.init(num_cpus=args.actors, include_dashboard=False, logging_level=logging.WARNING)
    try:
        local = collect_steps_per_s(collection_run(args.emulators, args.actors, "local", args.env_steps))
        ray_run = collection_run(args.emulators, args.actors, "ray", args.env_steps)
        on_ray = collect_steps_per_s(ray_run)
        plumbing = collect_steps_per_s(replace(ray_run, env_steps=4 * args.env_steps), make_synthetic_vector_env)
        ceiling = learner_ceiling(args.actors, args.emulators // args.actors, args.train_env_steps)
    finally:
        ray.shutdown()
    figures = {
        "emulators": args.emulators,
        "actors": args.actors,
        "local_env_steps_per_s": round(local, 1),
        "ray_env_steps_per_s": round(on_ray, 1),
        "ray_over_local": round(on_ray / local, 3),
        "ray_synthetic_env_steps_per_s": round(plumbing, 1),
        "learner_ceiling_env_steps_per_s": round(ceiling["env_steps_per_s"], 1),
        "learner_ceiling_updates_per_s": round(ceiling["updates_per_s"], 2),
        "actors_per_learner": round(ceiling["env_steps_per_s"] / (on_ray / args.actors), 2),
        "threads": args.threads,
        "precision": auto_precision("cpu"),
        "cpu_flags": cpu_flags(),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
