"""The Double-DQN LightningModule: online and target nets, the loss, the target sync.

Lightning owns the loop, precision, gradient clipping, checkpoints and loggers; this module
owns what is particular to DQN. Its data comes from the ExperienceStream it builds in
``train_dataloader``; the stream's counters and random states ride in the checkpoint, and
mario_rl/resume.py puts them back. It hands every move of the stream's env-step counter to the
callbacks that count in env steps (``on_env_steps``).
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from mario_rl.augment import random_shift
from mario_rl.config import EnvConfig, run_config_from
from mario_rl.data import ExperienceStream
from mario_rl.envs import make_vector_env, num_actions
from mario_rl.episodes import Episode
from mario_rl.errors import NonFiniteLossError
from mario_rl.levels import flag_fraction, level_tag
from mario_rl.losses import dqn_loss
from mario_rl.nets import NatureCNN
from mario_rl.policy import EpsilonGreedy
from mario_rl.resume import restore_stream
from mario_rl.stopping import noted_stop, raise_if_stopped


class DQN(pl.LightningModule):
    """Double DQN with SmoothL1 loss and a target net synced every ``agent.target_sync`` env steps.

    ``make_envs`` builds the training stream's vector env from the run's env config (the Mario
    workers by default; see ExperienceStream for what another env must provide). It is not a
    hyperparameter: a checkpoint keeps the run config, not the factory.
    """

    def __init__(
        self,
        run: dict[str, Any],
        replay_dir: str | None = None,
        episode_window: int = 20,
        make_envs: Callable[[EnvConfig], gym.vector.VectorEnv] = make_vector_env,
    ):
        super().__init__()
        self.save_hyperparameters({"run": run})
        self.run = run_config_from(self.hparams)
        self.replay_dir = Path(replay_dir) if replay_dir else None
        self.make_envs = make_envs
        env, agent = self.run.env, self.run.agent
        self.num_actions = num_actions(env.actions)
        self.online = NatureCNN(env.frame_stack, self.num_actions, env.frame_size, agent.dueling)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.stream: ExperienceStream | None = None
        self.synced_at = 0
        self.episodes: deque = deque(maxlen=episode_window)
        # Per training level: its last episodes, and how many it has had (rollout/<level>/...).
        self.level_episodes: dict[str, deque] = {
            level: deque(maxlen=episode_window) for level in self.run.env.training_levels
        }
        self.level_counts: dict[str, int] = dict.fromkeys(self.run.env.training_levels, 0)
        self._saved_stream: dict[str, Any] | None = None
        self._replay_saved_at = -1

    @property
    def whole(self) -> bool:
        """Whether the run's state is all in memory, so that a save keeps everything: from the
        stream's start on, and in a resume once the checkpoint's stream and replay are back.
        Before that a save would write fresh counters and an empty replay over the run on disk."""
        return self.stream is not None and self._saved_stream is None

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.online(obs)

    def train_dataloader(self) -> DataLoader:
        if self.stream is None:
            policy = EpsilonGreedy(self.online, self.num_actions, seed=self.run.seed)
            self.stream = ExperienceStream(self.run, policy, self.make_envs)
            self.stream.on_steps = self._on_env_steps
            self.stream.noted_stop = lambda: noted_stop(self._trainer)
            if self._saved_stream is not None:
                restore_stream(self.stream, self._saved_stream, self.replay_dir)
                self._saved_stream = None
        return DataLoader(self.stream, batch_size=None)

    def _on_env_steps(self, before: int, after: int) -> None:
        """Hand each move of the stream's env-step counter to the callbacks that keep an env-step
        cadence (checkpoints, evaluation): those with ``on_env_steps(trainer, module, before, after)``."""
        raise_if_stopped(self._trainer)  # Ctrl-C and SIGTERM end the run here, between two env steps
        if self._trainer is None:
            return
        for callback in self._trainer.callbacks:
            hook = getattr(callback, "on_env_steps", None)
            if hook is not None:
                hook(self._trainer, self, before, after)

    def on_train_epoch_end(self) -> None:
        """The stream ends when the budget is spent; stop rather than start another pass.

        max_epochs is -1 so a finished run can be resumed with a larger env_steps budget.
        """
        self.trainer.should_stop = True

    def _trainer_adam_kernel(self) -> dict[str, bool]:
        """Adam's implementation for the precision of the Trainer (fp32 when there is none)."""
        return adam_kernel(str(self._trainer.precision) if self._trainer is not None else "32-true")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        agent = self.run.agent
        kernel = self._trainer_adam_kernel()
        return torch.optim.Adam(self.online.parameters(), lr=agent.lr, eps=agent.adam_eps, **kernel)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        obs, next_obs = batch["obs"], batch["next_obs"]
        pad = self.run.agent.random_shift
        if pad:
            obs, next_obs = random_shift(obs, pad), random_shift(next_obs, pad)
        q = self.online(obs)
        with torch.no_grad():
            next_q_online = self.online(next_obs) if self.run.agent.double_q else None
            next_q_target = self.target(next_obs)
        loss, td_errors = dqn_loss(
            q,
            batch["actions"],
            next_q_online,
            next_q_target,
            batch["returns"],
            batch["discounts"],
            batch.get("weights"),
            self.run.agent.huber_delta,
        )
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"loss is {loss.item()} at env step {batch['env_steps']} (update {self.global_step}); "
                "stopped before it reached the weights, the last checkpoint is kept as it was"
            )
        if "weights" in batch:
            self.stream.update_priorities(batch["envs"], batch["slots"], td_errors.abs())
        self._log_step(batch, loss, q)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: dict[str, Any], batch_idx: int) -> None:
        """Copy online -> target each time the env-step counter crosses a multiple of target_sync."""
        env_steps = batch["env_steps"]
        period = self.run.agent.target_sync
        if env_steps // period > self.synced_at // period:
            self.target.load_state_dict(self.online.state_dict())
            self.synced_at = env_steps

    def _log_step(self, batch: dict[str, Any], loss: torch.Tensor, q: torch.Tensor) -> None:
        env_steps = batch["env_steps"]
        stream = self.stream
        while stream is not None and stream.finished:
            self._remember(stream.finished.popleft())
        if (self.global_step + 1) % self.trainer.log_every_n_steps:
            # Lightning writes only every log_every_n_steps, on the condition above; the self.log calls
            # it would drop cost a few percent of a seed_notebook step (docs/BENCHMARKS.md).
            return
        # Lightning uses a logged "step" as the x-axis of every logger: env steps, as in papers.
        self.log("step", float(env_steps))
        self.log("env_steps", float(env_steps), prog_bar=True)
        self.log("train/updates", float(self.global_step + 1))
        self.log("train/loss", loss, prog_bar=False)
        self.log("train/q_mean", q.detach().float().mean())
        self.log("train/epsilon", batch["epsilon"], prog_bar=True)
        if "priority_beta" in batch:
            self.log("replay/priority_beta", batch["priority_beta"])
        if stream is not None:
            self.log("replay/size", float(len(stream.replay)))
        if self.episodes:
            eps = list(self.episodes)
            self.log("rollout/episode_return", float(np.mean([e.episode_return for e in eps])))
            self.log("rollout/episode_length", float(np.mean([e.length for e in eps])))
            self.log("rollout/x_pos", float(np.mean([e.x_pos for e in eps])))
            self.log("rollout/clear_rate", float(np.mean([e.clear for e in eps])))
            self.log("x_pos", float(eps[-1].x_pos), prog_bar=True, logger=False)
        if len(self.level_episodes) > 1 or self.run.env.start_states != "off":
            self._log_levels()

    def _remember(self, episode: Episode) -> None:
        self.episodes.append(episode)
        if episode.level in self.level_episodes:
            self.level_episodes[episode.level].append(episode)
            self.level_counts[episode.level] += 1

    def _log_levels(self) -> None:
        """rollout/<level>/{x_pos, clear_rate, episodes[, progress]} over each level's recent episodes,
        and the share of them that began from a start state."""
        for level, recent in self.level_episodes.items():
            tag = f"rollout/{level_tag(level)}"
            self.log(f"{tag}/episodes", float(self.level_counts[level]))
            if not recent:
                continue
            x_pos = float(np.mean([e.x_pos for e in recent]))
            self.log(f"{tag}/x_pos", x_pos)
            self.log(f"{tag}/clear_rate", float(np.mean([e.clear for e in recent])))
            self.log(f"{tag}/restored", float(np.mean([e.restored for e in recent])))
            if (progress := flag_fraction(level, x_pos)) is not None:
                self.log(f"{tag}/progress", progress)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["synced_at"] = self.synced_at
        # The rollout/* means run over the last episodes: without them a resumed curve would
        # restart from one episode and jump.
        checkpoint["recent_episodes"] = [asdict(e) for e in self.episodes]
        checkpoint["level_episodes"] = {level: [asdict(e) for e in d] for level, d in self.level_episodes.items()}
        checkpoint["level_counts"] = dict(self.level_counts)
        if self.stream is None:
            return
        checkpoint["stream"] = self.stream.state_dict()
        checkpoint["replay_written"] = self.stream.replay.written.tolist()
        # Weights-only saves (best.ckpt) cannot resume a run, so they need no replay beside them.
        resumable = "optimizer_states" in checkpoint
        if resumable and self.run.replay.save and self.replay_dir and self._replay_saved_at != self.stream.env_steps:
            self.stream.replay.save(self.replay_dir)
            self._replay_saved_at = self.stream.env_steps

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.synced_at = checkpoint.get("synced_at", 0)
        self.episodes.extend(Episode(**e) for e in checkpoint.get("recent_episodes", []))
        for level, saved in checkpoint.get("level_episodes", {}).items():
            if level in self.level_episodes:
                self.level_episodes[level].extend(Episode(**e) for e in saved)
                self.level_counts[level] = int(checkpoint.get("level_counts", {}).get(level, len(saved)))
        if checkpoint.get("stream") is not None:  # restored with the stream (mario_rl/resume.py)
            self._saved_stream = {k: checkpoint.get(k) for k in ("stream", "global_step", "replay_written")}
        # torch's load_state_dict brings back the saved param groups. The kernel is this machine's
        # choice, and lr and eps are the run's, which a resume may change (agent.lr=...).
        agent = self.run.agent
        for optimizer_state in checkpoint.get("optimizer_states", []):
            for group in optimizer_state["param_groups"]:
                group.update(self._trainer_adam_kernel(), lr=agent.lr, eps=agent.adam_eps)

    def on_train_end(self) -> None:
        if self.stream is not None:
            self.stream.close()


def adam_kernel(precision: str) -> dict[str, bool]:
    """Adam's keyword arguments for a Lightning precision: the fused kernel where Lightning allows it.

    On CPU the fused kernel takes an Adam step several times faster than the multi-tensor
    (foreach) one, which beats torch's per-tensor default (docs/BENCHMARKS.md). Lightning
    refuses to clip gradients for a fused optimizer under mixed precision, so there it is foreach.
    """
    fused = "mixed" not in precision
    return {"fused": fused, "foreach": not fused}
