"""The pipeline's own ceiling: mario-rl and SB3's DQN on a synthetic env with a tiny network.

    python benchmarks/pipeline_ceiling.py --num-envs 16   # one JSON line

With emulators that cost nothing (mario_rl.synthetic, in worker processes) and a network of
one small conv and one linear layer, what is left is the plumbing: the actor's forward pass,
the vector env's IPC, replay writes and draws, Lightning's loop and logging. mario-rl runs its
real ExperienceStream and DQN LightningModule under a real Trainer (fp32, TensorBoard logging
every 50 updates, gradient clipping as the default config), at SB3's work (plain head, 1-step
targets, uniform replay, DQN's target; ``--double-q``: the Double-DQN target, one forward pass
more per update); SB3's DQN runs on the same synthetic env in its SubprocVecEnv with
the same network. Both do one update of 32 per 4 env steps, after ``--warmup`` env steps, and
act with epsilon 0.05.

``mario_rl_time_*`` say where mario-rl's wall time went between its first update and the end,
as fractions, timed around the stream's and module's own calls: ``env_wait`` (sending actions
to the workers and waiting for their step), ``actor`` (the epsilon-greedy forward),
``replay_add``, ``replay_sample`` (drawing a batch and wrapping it as tensors),
``forward_loss`` (training_step: two or three forwards and the loss), ``backward_step`` (backward,
clipping and Adam), and ``loop`` (the rest: Lightning's loop, callbacks, logging).

``mario_rl_learner_alone_updates_per_s`` is the same update of the same nets on one fixed
batch, without the pipeline (benchmarks/learner.py), and ``mario_rl_learner_bound_env_steps_per_s``
the env steps/s it allows at one update per ``agent.train_every`` env steps: what no plumbing
can beat on this learner thread.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.peers import EPSILON, cpu_features  # noqa: E402
from mario_rl.config import default_run  # noqa: E402

PHASES = ("env_wait", "actor", "replay_add", "replay_sample", "forward_loss", "backward_step")


TINY_FEATURES = 8 * 10 * 10
PROFILE_FROM = 50  # updates before the profiler starts: past the first updates' one-off costs


def tiny_torso(in_channels: int) -> Any:
    """One 8x8 stride-8 conv of 8 channels: 8 x 10 x 10 = 800 features from an 84x84 stack,
    about 13 MFLOP per forward of 32 stacks against about 1.5 GFLOP for the Nature torso."""
    from torch import nn

    return nn.Sequential(nn.Conv2d(in_channels, 8, kernel_size=8, stride=8), nn.ReLU(), nn.Flatten())


def tiny_q_net(in_channels: int, num_actions: int) -> Any:
    """mario-rl's side: uint8 stacks in, scaled to [0, 1] in the first conv as NatureCNN does, Q-values out."""
    import torch
    from torch import nn

    from mario_rl.nets import pixel_conv

    class TinyQNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.torso = tiny_torso(in_channels)
            self.head = nn.Linear(TINY_FEATURES, num_actions)

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return self.head(self.torso[1:](pixel_conv(self.torso[0], obs)))

    return TinyQNet()


def sb3_tiny_policy() -> dict[str, Any]:
    """SB3's side: the same torso as its features extractor (SB3 scales by 1/255 before it) and
    one linear layer after it (``net_arch=[]``)."""
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    class TinyExtractor(BaseFeaturesExtractor):
        def __init__(self, observation_space: Any) -> None:
            super().__init__(observation_space, features_dim=TINY_FEATURES)
            self.torso = tiny_torso(observation_space.shape[0])

        def forward(self, obs: Any) -> Any:
            return self.torso(obs)

    return {"features_extractor_class": TinyExtractor, "net_arch": []}


def profiler_activities(cuda: bool) -> list[Any]:
    """The torch profiler's activities: the host's ops, and the device's kernels on a GPU."""
    from torch.profiler import ProfilerActivity

    return [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])


def top_ops(profiler: Any, updates: int, count: int = 12) -> dict[str, float]:
    """The ``count`` ops with the most self CPU time, in milliseconds per update, and their total."""
    events = sorted(profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    ops = {e.key: round(e.self_cpu_time_total / 1000 / updates, 3) for e in events[:count]}
    return ops | {"all ops": round(sum(e.self_cpu_time_total for e in events) / 1000 / updates, 3)}


def mario_rl_run(args: argparse.Namespace) -> dict[str, Any]:
    """The real stream and module under a Trainer, on synthetic workers; rates and time shares.

    On a GPU the phases time the host's side of each call: a phase's kernels may finish inside a
    later one. With ``--sync-phases`` each timed phase ends with ``torch.cuda.synchronize()``, so
    its kernels count in it, at the price of a slower run: the rates then understate the pipeline.
    With ``--profile`` the clock starts after the profiled updates, whose overhead it leaves out.
    """
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.loggers import TensorBoardLogger

    from benchmarks import learner
    from mario_rl.config import run_dict
    from mario_rl.data import ExperienceStream
    from mario_rl.module import DQN
    from mario_rl.policy import EpsilonGreedy
    from mario_rl.synthetic import make_synthetic_vector_env

    torch.set_num_threads(args.threads)
    cuda = args.accelerator == "gpu"
    run = default_run(
        env={"num_envs": args.num_envs},
        agent={
            "learning_starts": args.warmup,
            "dueling": False,
            "n_step": 1,
            "double_q": args.double_q,
            "epsilon_start": EPSILON,
            "epsilon_end": EPSILON,
        },
        replay={"prioritized": False, "save": False},
        env_steps=args.warmup + args.train_steps,
    )
    agent = run.agent
    module = DQN(run_dict(run))
    if args.network == "tiny":
        module.online = tiny_q_net(run.env.frame_stack, module.num_actions)
        module.target = tiny_q_net(run.env.frame_stack, module.num_actions).requires_grad_(False)
        module.target.load_state_dict(module.online.state_dict())
    policy = EpsilonGreedy(module.online, module.num_actions, seed=run.seed)
    module.stream = stream = ExperienceStream(run, policy, make_envs=make_synthetic_vector_env)

    seconds = dict.fromkeys(PHASES, 0.0)

    def timed(phase: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if cuda and args.sync_phases:
                    torch.cuda.synchronize()
                seconds[phase] += time.perf_counter() - started

        return wrapper

    stream.policy = timed("actor", stream.policy)
    stream.replay.add = timed("replay_add", stream.replay.add)
    stream._batch = timed("replay_sample", stream._batch)
    module.training_step = timed("forward_loss", module.training_step)
    module.optimizer_step = timed("backward_step", module.optimizer_step)  # its closure runs training_step

    class SteadyState(pl.Callback):
        """The counters when the clock starts and at the end; stops the run ``args.seconds`` after
        the clock starts. Profiles ``args.profile`` updates from the 50th on; the clock starts at the
        first update, or after the profiled ones."""

        def __init__(self) -> None:
            self.first: dict[str, float] | None = None
            self.last: dict[str, float] = {}
            self.profiler: torch.profiler.profile | None = None
            self.top_ops: dict[str, float] = {}

        def snapshot(self, trainer: pl.Trainer) -> dict[str, float]:
            at = {"time": time.perf_counter(), "env_steps": stream.env_steps, "updates": trainer.global_step}
            return at | seconds | {"env_wait": stream.env_seconds}

        def on_train_batch_start(self, trainer: pl.Trainer, *_: Any) -> None:
            if self.first is None and trainer.global_step >= clock_from:
                self.first = self.snapshot(trainer)
            elif self.first is not None and args.seconds and time.perf_counter() - self.first["time"] > args.seconds:
                trainer.should_stop = True
            if args.profile and trainer.global_step == PROFILE_FROM:
                self.profiler = torch.profiler.profile(activities=profiler_activities(cuda))
                self.profiler.__enter__()
            elif self.profiler is not None and trainer.global_step == PROFILE_FROM + args.profile:
                self.profiler.__exit__(None, None, None)
                self.top_ops = top_ops(self.profiler, args.profile)
                self.profiler = None

        def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.last = self.snapshot(trainer)

    clock_from = PROFILE_FROM + args.profile if args.profile else 0
    clock = SteadyState()
    with tempfile.TemporaryDirectory() as out:
        trainer = pl.Trainer(
            accelerator=args.accelerator,
            devices=1,
            precision="32-true",
            max_epochs=-1,
            default_root_dir=out,
            logger=TensorBoardLogger(out),
            log_every_n_steps=50,
            gradient_clip_val=agent.grad_clip_norm,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=[clock],
        )
        trainer.fit(module)
    if clock.first is None:
        raise SystemExit(f"mario_rl made fewer than {clock_from + 1} updates; raise --train-steps")
    delta = {k: clock.last[k] - clock.first[k] for k in clock.last}
    wall = delta.pop("time")
    delta["backward_step"] -= delta["forward_loss"]
    figures = {"env_steps_per_s": delta.pop("env_steps") / wall, "updates_per_s": delta.pop("updates") / wall}
    figures |= {f"time_{phase}": delta[phase] / wall for phase in PHASES}
    figures["time_loop"] = 1.0 - sum(delta[phase] for phase in PHASES) / wall
    figures["ms_per_update"] = 1000 * wall / max(1, clock.last["updates"] - clock.first["updates"])
    if clock.top_ops:
        figures["profile_self_cpu_ms_per_update"] = clock.top_ops
    # The same update without the pipeline around it: what one learner thread allows at best.
    alone = learner.updates_per_s(
        args.seconds or 5.0,
        args.threads,
        "32-true",
        dueling=False,
        double_q=args.double_q,
        nets=(module.online, module.target),
        device="cuda" if cuda else "cpu",
    )
    figures["learner_alone_updates_per_s"] = alone
    return figures


def sb3_run(args: argparse.Namespace) -> dict[str, Any]:
    """SB3's DQN with the same network on the same synthetic workers, one update per 4 env steps."""
    from stable_baselines3.common.vec_env import SubprocVecEnv

    from benchmarks.peers import sb3_figures
    from mario_rl.synthetic import make_synthetic_env

    env = default_run(env={"num_envs": args.num_envs}).env
    envs = SubprocVecEnv([functools.partial(make_synthetic_env, env)] * args.num_envs, start_method="forkserver")
    # One update per train_every env steps: gradient_steps updates every train_freq vector steps.
    train_every = default_run().agent.train_every
    common = math.gcd(args.num_envs, train_every)
    train_freq, gradient_steps = train_every // common, args.num_envs // common
    policy = sb3_tiny_policy() if args.network == "tiny" else None  # None: SB3's NatureCNN, as ours
    return sb3_figures(
        envs,
        args.warmup,
        args.train_steps,
        args.threads,
        train_freq,
        gradient_steps,
        policy,
        device="cuda" if args.accelerator == "gpu" else "cpu",
        seconds=args.seconds or None,
    )


def in_child(system: str, args: argparse.Namespace) -> dict[str, Any]:
    """One system's figures from a child process of its own; its stderr passes through."""
    cmd = [sys.executable, __file__, f"--system={system}", f"--num-envs={args.num_envs}", f"--warmup={args.warmup}"]
    cmd += [f"--train-steps={args.train_steps}", f"--threads={args.threads}", f"--accelerator={args.accelerator}"]
    cmd += [f"--network={args.network}", f"--seconds={args.seconds}", f"--profile={args.profile}"]
    cmd += ["--double-q"] if args.double_q else []
    cmd += ["--sync-phases"] if args.sync_phases else []
    out = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if out.returncode:
        raise RuntimeError(f"{system} failed with exit status {out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=16, help="synthetic worker processes")
    parser.add_argument("--warmup", type=int, default=2000, help="env steps before the clock starts")
    parser.add_argument("--train-steps", type=int, default=20_000, help="env steps each system is timed for")
    parser.add_argument(
        "--seconds", type=float, default=0.0, help="stop each system this long after its clock starts; 0: none"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each learner")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved runs of both systems")
    parser.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu", help="where both learners run")
    parser.add_argument("--network", choices=("tiny", "nature"), default="tiny", help="the tiny net or the Nature CNN")
    parser.add_argument("--profile", type=int, default=0, help="torch-profile this many of mario-rl's updates")
    parser.add_argument(
        "--sync-phases", action="store_true", help="on a GPU, wait for each phase's kernels (slower; exact shares)"
    )
    parser.add_argument("--double-q", action="store_true", help="mario-rl with its Double-DQN target (3 forwards)")
    parser.add_argument("--system", choices=("mario_rl", "sb3"), help=argparse.SUPPRESS)  # a child's one system
    args = parser.parse_args()
    if args.system:
        run = {"mario_rl": mario_rl_run, "sb3": sb3_run}[args.system]
        print(json.dumps(run(args)))
        return
    best: dict[str, dict[str, Any]] = {}
    for _ in range(args.rounds):
        for system in ("mario_rl", "sb3"):
            figures = in_child(system, args)
            if figures["env_steps_per_s"] > best.get(system, {}).get("env_steps_per_s", 0.0):
                best[system] = figures
    line: dict[str, Any] = {}
    for system in ("mario_rl", "sb3"):
        for key in ("env_steps_per_s", "updates_per_s"):
            line[f"{system}_{key}"] = best[system][key]
    line |= {f"mario_rl_{k}": v for k, v in best["mario_rl"].items() if k.startswith("time_") or k == "ms_per_update"}
    alone = best["mario_rl"]["learner_alone_updates_per_s"]
    line["mario_rl_learner_alone_updates_per_s"] = alone
    line["mario_rl_learner_bound_env_steps_per_s"] = alone * default_run().agent.train_every
    line["mario_rl_over_sb3_env_steps_per_s"] = best["mario_rl"]["env_steps_per_s"] / best["sb3"]["env_steps_per_s"]
    line = {k: round(v, 3) for k, v in line.items()}
    if "profile_self_cpu_ms_per_update" in best["mario_rl"]:
        line["mario_rl_profile_self_cpu_ms_per_update"] = best["mario_rl"]["profile_self_cpu_ms_per_update"]
    line |= {"num_envs": args.num_envs, "warmup": args.warmup, "train_steps": args.train_steps}
    line |= {"seconds": args.seconds, "threads": args.threads, "rounds": args.rounds}
    line |= {"accelerator": args.accelerator, "network": args.network, "double_q": args.double_q}
    line |= {"sync_phases": args.sync_phases}
    print(json.dumps(line | cpu_features()))


if __name__ == "__main__":
    main()
