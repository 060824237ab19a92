"""mario-rl against the tools users would pick instead, side by side in one run.

    python benchmarks/peers.py                 # ~6 minutes on 2 cores; prints one JSON line

Three systems (four with ``--double-q``) train on Super Mario Bros 1-1, one after another in
turn (``--rounds``), each in its own child process, for ``--train-steps`` env steps after
``--warmup`` env steps:

- ``mario_rl``: a real ``python train.py`` run at the work of SB3's DQN (plain head, 1-step
  targets, uniform replay, DQN's target: two forward passes per update; everything else the
  default: 4 workers, batch 32, one update per 4 env steps, fp32 or bf16 as train.py picks
  for this CPU).
- ``mario_rl_double_q`` (with ``--double-q``): the same with the Double-DQN target, the
  project's default, whose online forward pass on the next states SB3 does not make.
- ``sb3``: Stable-Baselines3's ``DQN`` with ``CnnPolicy`` (the same Nature CNN and 512-wide
  plain head), ``optimize_memory_usage`` as its docs recommend for Atari, on our own wrappers
  (``mario_rl.envs.make_env``) in its ``SubprocVecEnv`` of 4 workers, batch 32 and
  ``train_freq=1`` (one update per vector step of 4 env steps), the same replay capacity,
  gamma, learning rate, target sync and gradient clipping.
- ``notebook``: the seed notebook's loop (``benchmarks/notebook_loop.py``): one env, one
  update of 32 per env step, as it was written.

Both DQNs act with a fixed epsilon of 0.05, as late in training: the actor's forward pass is
part of the work, and the two libraries anneal epsilon on different clocks. Rates are steady
state: from the first gradient update (mario-rl, SB3) or the end of the warm-up (notebook) to
the end. Each rate is the best of the rounds, so a neighbour's load on a shared machine
counts least. ``limit_env_steps_per_s`` is what 2 cores could do if mario-rl's env work and
learner work were packed without a gap: 1 / (1/env_alone + 1/(train_every * learner_alone)),
with ``env_alone`` the 4 workers' env steps/s under random actions and ``learner_alone`` the
learner's updates/s at mario_rl's work, both measured in this run.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The forkserver workers of both vector envs import this file as their __main__: torch,
# Lightning and SB3 are imported inside the functions that need them, so the workers stay small.
from mario_rl.config import default_run  # noqa: E402

SYSTEMS = ("mario_rl", "sb3", "notebook")
EPSILON = 0.05
# mario-rl at SB3's work: SB3's DQN has no dueling head, n-step returns, prioritized replay or Double-DQN target.
PLAIN_HEAD_WORK = ["agent.dueling=false", "agent.n_step=1", "replay.prioritized=false"]
EQUAL_WORK = [*PLAIN_HEAD_WORK, "agent.double_q=false"]
# What each mario-rl system changes from the default config.
MARIO_RL_SYSTEMS = {"mario_rl": EQUAL_WORK, "mario_rl_double_q": [*PLAIN_HEAD_WORK, "agent.double_q=true"]}
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_features() -> dict[str, Any]:
    """The CPU flags that decide torch's kernels and precision, and the cores this process may use."""
    flags: set[str] = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return {"cores": len(os.sched_getaffinity(0))} | {flag: flag in flags for flag in CPU_FLAGS}


def limit_env_steps_per_s(env_alone: float, learner_alone: float, train_every: int) -> float:
    """Env steps/s when each env step costs 1/env_alone s and each update 1/learner_alone s, without overlap."""
    return 1.0 / (1.0 / env_alone + 1.0 / (train_every * learner_alone))


def mario_rl_run(warmup: int, steps: int, threads: int, system: str = "mario_rl") -> dict[str, float]:
    """A real train.py run with the overrides of ``system`` (MARIO_RL_SYSTEMS); rates from its throughput.json."""
    from benchmarks.throughput import bytes_per_transition, train_run, warm_budget
    from mario_rl.replay import ReplayBuffer

    overrides = [
        *warm_budget(warmup, steps),
        *MARIO_RL_SYSTEMS[system],
        f"agent.epsilon_start={EPSILON}",
        f"agent.epsilon_end={EPSILON}",
        f"torch_threads={threads}",
    ]
    figures = train_run(overrides)
    env, gamma = default_run().env, default_run().agent.gamma
    buffer = ReplayBuffer(10_000, env.num_envs, (env.frame_size,) * 2, env.frame_stack, n_step=1, gamma=gamma, seed=0)
    return {
        "env_steps_per_s": figures["env_steps_per_s"],
        "updates_per_s": figures["updates_per_s"],
        "bytes_per_transition": bytes_per_transition(buffer),
        "peak_rss_mb": figures["peak_rss_mb"],
        "workers_peak_rss_mb": sum(figures["peak_rss_worker_mb"]),
    }


def sb3_figures(
    envs: Any,
    warmup: int,
    steps: int,
    threads: int,
    train_freq: int = 1,
    gradient_steps: int = 1,
    policy_kwargs: dict[str, Any] | None = None,
    seed: int = 1,
    device: str = "cpu",
    seconds: float | None = None,
) -> dict[str, float]:
    """Stable-Baselines3's DQN on a SubprocVecEnv ``envs``, with mario-rl's default agent and replay
    settings; runs in this process (call it in a child) and closes ``envs``.

    ``train_freq`` counts vector steps: one update per ``env.num_envs`` env steps when 1.
    Rates are from the first vector step past ``warmup`` env steps to the end; with ``seconds``,
    the end comes that long after the first vector step past ``warmup`` if ``steps`` are not done.
    """
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.logger import Logger

    from mario_rl.throughput import peak_rss_mb

    class SteadyState(BaseCallback):
        """Clock, env steps and updates at the first vector step past learning_starts."""

        start: tuple[float, int, int] | None = None

        def _on_step(self) -> bool:
            if self.start is None and self.num_timesteps > warmup:
                self.start = (time.perf_counter(), self.num_timesteps, self.model._n_updates)
            return self.start is None or seconds is None or time.perf_counter() - self.start[0] < seconds

    torch.set_num_threads(threads)
    run = default_run()
    agent, replay = run.agent, run.replay
    model = DQN(
        "CnnPolicy",
        envs,
        learning_rate=agent.lr,
        buffer_size=replay.capacity,
        learning_starts=warmup,
        batch_size=agent.batch_size,
        gamma=agent.gamma,
        train_freq=train_freq,
        gradient_steps=gradient_steps,
        target_update_interval=agent.target_sync,
        exploration_initial_eps=EPSILON,
        exploration_final_eps=EPSILON,
        max_grad_norm=agent.grad_clip_norm,
        optimize_memory_usage=True,
        replay_buffer_kwargs={"handle_timeout_termination": False},  # SB3 allows no other with optimize_memory_usage
        policy_kwargs={"optimizer_kwargs": {"eps": agent.adam_eps}, **(policy_kwargs or {})},
        device=device,
        seed=seed,
    )
    # A logger of our own: SB3's default makes an empty SB3-<time> folder in the temp dir each run.
    model.set_logger(Logger(folder=None, output_formats=[]))
    clock = SteadyState()
    model.learn(total_timesteps=warmup + steps, callback=clock)
    seconds = time.perf_counter() - clock.start[0]
    buffer = model.replay_buffer
    arrays = [buffer.observations, buffer.actions, buffer.rewards, buffer.dones, buffer.timeouts]
    figures = {
        "env_steps_per_s": (model.num_timesteps - clock.start[1]) / seconds,
        "updates_per_s": (model._n_updates - clock.start[2]) / seconds,
        "bytes_per_transition": sum(a.nbytes for a in arrays) / (buffer.buffer_size * buffer.n_envs),
        "peak_rss_mb": peak_rss_mb(),
        "workers_peak_rss_mb": sum(peak_rss_mb(p.pid) for p in envs.processes),
    }
    envs.close()
    return figures


def sb3_run(warmup: int, steps: int, threads: int) -> dict[str, float]:
    """SB3's DQN with CnnPolicy (Nature CNN, 512-wide plain head) on our Mario wrappers, 4 workers."""
    from stable_baselines3.common.vec_env import SubprocVecEnv

    from mario_rl.envs import make_env

    env = default_run().env
    envs = SubprocVecEnv([functools.partial(make_env, env)] * env.num_envs, start_method="forkserver")
    return sb3_figures(envs, warmup, steps, threads)


def notebook_run(warmup: int, steps: int, threads: int) -> dict[str, float]:
    """The seed notebook's loop; runs in this process (call it in a child)."""
    import torch

    from benchmarks import notebook_loop
    from mario_rl.throughput import peak_rss_mb

    torch.set_num_threads(threads)
    figures = notebook_loop.run(warmup + steps, warmup=warmup)
    return {
        "env_steps_per_s": figures["steps_per_s"],
        "updates_per_s": figures["updates_per_s"],
        "bytes_per_transition": figures["bytes_per_transition"],
        "peak_rss_mb": peak_rss_mb(),
        "workers_peak_rss_mb": 0.0,
    }


def in_child(system: str, warmup: int, steps: int, threads: int) -> dict[str, float]:
    """One system's figures from a child process of its own, so its peak RSS is its own."""
    if system in MARIO_RL_SYSTEMS:  # train.py is already a child process
        return mario_rl_run(warmup, steps, threads, system)
    cmd = [sys.executable, __file__, f"--system={system}", f"--warmup={warmup}", f"--train-steps={steps}"]
    out = subprocess.run([*cmd, f"--threads={threads}"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{system} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure of the JSON line: env and learner alone, then the systems in turn, ``args.rounds`` times."""
    from benchmarks import learner
    from benchmarks.throughput import env_only
    from mario_rl.config import auto_precision

    agent = default_run().agent
    systems = ("mario_rl_double_q", *SYSTEMS) if args.double_q else SYSTEMS
    best: dict[str, float] = {}

    def keep(key: str, value: float) -> None:
        best[key] = max(best.get(key, value), value)

    for _ in range(args.rounds):
        keep("env_alone_env_steps_per_s", env_only(args.seconds))
        rate = learner.updates_per_s(args.seconds, args.threads, auto_precision("cpu"), dueling=False, double_q=False)
        keep("learner_alone_updates_per_s", rate)
        for system in systems:
            for key, value in in_child(system, args.warmup, args.train_steps, args.threads).items():
                keep(f"{system}_{key}", value)
    figures: dict[str, Any] = dict(best)
    for peer in ("sb3", "notebook"):
        for unit in ("env_steps_per_s", "updates_per_s"):
            figures[f"mario_rl_over_{peer}_{unit}"] = best[f"mario_rl_{unit}"] / best[f"{peer}_{unit}"]
        figures[f"{peer}_over_mario_rl_bytes_per_transition"] = (
            best[f"{peer}_bytes_per_transition"] / best["mario_rl_bytes_per_transition"]
        )
    if args.double_q:
        figures["mario_rl_double_q_over_sb3_env_steps_per_s"] = (
            best["mario_rl_double_q_env_steps_per_s"] / best["sb3_env_steps_per_s"]
        )
    env_alone, learner_alone = best["env_alone_env_steps_per_s"], best["learner_alone_updates_per_s"]
    limit = limit_env_steps_per_s(env_alone, learner_alone, agent.train_every)
    figures["limit_env_steps_per_s"] = limit
    figures["mario_rl_of_limit"] = best["mario_rl_env_steps_per_s"] / limit
    figures = {k: round(v, 3) for k, v in figures.items()}
    figures |= {"train_every": agent.train_every, "threads": args.threads, "precision": auto_precision("cpu")}
    figures |= {"warmup": args.warmup, "train_steps": args.train_steps, "rounds": args.rounds, "epsilon": EPSILON}
    return figures | cpu_features()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warmup", type=int, default=1000, help="env steps before the clock starts")
    parser.add_argument("--train-steps", type=int, default=2000, help="env steps each system is timed for")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the env-alone and learner-alone phases")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved runs of every system")
    threads = OmegaConf.load(ROOT / "conf" / "train.yaml").torch_threads
    parser.add_argument("--threads", type=int, default=threads, help="torch threads of every learner (train.yaml's)")
    parser.add_argument("--double-q", action="store_true", help="also time mario-rl with its Double-DQN target")
    parser.add_argument("--system", choices=("sb3", "notebook"), help=argparse.SUPPRESS)  # a child's one system
    args = parser.parse_args()
    if args.system:
        run = {"sb3": sb3_run, "notebook": notebook_run}[args.system]
        print(json.dumps(run(args.warmup, args.train_steps, args.threads)))
        return
    print(json.dumps(measure(args)))


if __name__ == "__main__":
    main()
