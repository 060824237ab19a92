"""What TensorBoard shows besides the training scalars: evaluation episodes, their video, the network's input.

The loss says little about a Mario agent; how far it gets when it stops exploring does.
Evaluation plays on envs of its own and a policy with its own random generator, so the
training stream's envs, counters and random states are exactly as if it had not run.
"""

from __future__ import annotations

import io
import statistics
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.compat.proto.summary_pb2 import Summary
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from mario_rl.checkpointing import crossed
from mario_rl.config import ConfigError, EnvConfig, RunConfig, check_level
from mario_rl.episodes import Episode
from mario_rl.evaluation import best_index, play_level, summarize
from mario_rl.levels import flag_fraction, level_tag
from mario_rl.stopping import raise_if_stopped
from mario_rl.video import NES_SIZE, GifWriter, record_episode

# Summary keys logged as eval/<key>: over every evaluation episode, and per level when there are several.
METRICS = ("return_mean", "x_pos_mean", "clear_rate", "length_mean", "steps_per_s")


def tensorboard(trainer: pl.Trainer) -> SummaryWriter | None:
    """The SummaryWriter of the run's TensorBoard logger, if it has one."""
    return next((lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


def add_gif(writer: SummaryWriter, tag: str, gif: bytes, step: int) -> None:
    """An animated GIF as a TensorBoard image, which its image tab plays.

    SummaryWriter.add_video cannot be used: it imports ``moviepy.editor``, gone in moviepy 2,
    and then only warns and writes nothing.
    """
    width, height = NES_SIZE
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif)
    writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), global_step=step)


def side_by_side(stack: np.ndarray, gap: int = 2) -> np.ndarray:
    """The k frames of a (k, H, W) stack in a row, oldest first, split by white bars."""
    bar = np.full((stack.shape[1], gap), 255, dtype=stack.dtype)
    parts = [part for frame in stack for part in (bar, frame)][1:]
    return np.hstack(parts)


class NetworkInput(pl.Callback):
    """Logs one image of what the network sees: the first batch's first stacked observation, as the
    replay rebuilt it (a stack crossing an episode start or a shifted frame shows up here)."""

    def __init__(self, tag: str = "input/stacked_frames"):
        self.tag = tag
        self._logged = False

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        writer = tensorboard(trainer)
        if self._logged or writer is None:
            return
        stack = batch["obs"][0].cpu().numpy()
        writer.add_image(self.tag, side_by_side(stack), global_step=int(batch["env_steps"]), dataformats="HW")
        self._logged = True


class Evaluation(pl.Callback):
    """Each time the env-step counter crosses a multiple of ``every`` (counted from 0):
    ``episodes`` epsilon-greedy episodes on each training level and on ``levels``, every one from
    the level's own start (never from a start state).

    Logs eval/<METRICS> over all of them, which with the same number of episodes per level is the
    mean over levels (best.ckpt keeps the best eval/x_pos_mean), per level as eval/<level>/...
    when there are several, eval/<level>/progress (x_pos mean over the flag's x) where the flag's
    x is known, all against env steps; and a GIF of the first training level's best episode as
    eval/video. It runs from the stream's ``on_steps`` like the checkpoints, before them, and puts
    its metrics in ``trainer.callback_metrics``, where BestCheckpoint and a sweeper's
    optimized_metric read them. Every setting is ``callbacks.eval.*``, with its default in
    conf/callbacks/default.yaml; the settings ride in the checkpoint, so a resumed run evaluates
    as the run did (mario_rl/resume.py).
    """

    def __init__(
        self,
        *,
        every: int,
        episodes: int,
        epsilon: float,
        levels: list[str] | None,
        max_episode_steps: int | None,
        stuck_patience: int | None,
        video: bool,
        seed: int,
    ):
        for key, value, ok in (
            ("every", every, every >= 1),
            ("episodes", episodes, episodes >= 1),
            ("epsilon", epsilon, 0.0 <= epsilon <= 1.0),
        ):
            if not ok:
                raise ConfigError(f"callbacks.eval.{key}={value!r} is not allowed; see conf/callbacks/default.yaml")
        self.every = every
        self.episodes = episodes
        self.epsilon = epsilon
        self.extra_levels = [str(level) for level in levels or []]
        self.max_episode_steps = max_episode_steps
        self.stuck_patience = stuck_patience
        self.video = video
        self.seed = seed

    def levels_to_play(self, run: RunConfig) -> list[str]:
        """The training levels first, then the extra ones."""
        return list(dict.fromkeys([*run.env.training_levels, *self.extra_levels]))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for level in self.extra_levels:
            check_level(pl_module.run.env.game, level, key="callbacks.eval.levels")

    def env_config(self, run: RunConfig) -> EnvConfig:
        """The training env, with the evaluation's own time limits where it sets them."""
        return replace(
            run.env,
            max_episode_steps=self.max_episode_steps or run.env.max_episode_steps,
            stuck_patience=self.stuck_patience or run.env.stuck_patience,
        )

    def play(
        self, run: RunConfig, net: nn.Module, before_episode: Callable[[], None] | None = None
    ) -> tuple[dict[str, float], Episode]:
        """Play the evaluation episodes: their metrics, and the best episode of the training level.
        ``before_episode`` runs before each episode and may raise to abandon the evaluation."""
        env = self.env_config(run)
        played = {
            level: play_level(env, level, net, self.episodes, self.epsilon, self.seed, before_episode)
            for level in self.levels_to_play(run)
        }
        groups = {"eval": [r for records, _ in played.values() for r in records]}
        if len(played) > 1:
            groups |= {f"eval/{level_tag(level)}": records for level, (records, _) in played.items()}
        seconds = sum(s for _, s in played.values())
        metrics = {}
        for prefix, records in groups.items():
            row = summarize(prefix, records, seconds)
            metrics |= {f"{prefix}/{key}": float(row[key]) for key in METRICS}
        for level, (records, _) in played.items():
            if (progress := flag_fraction(level, statistics.fmean(r.x_pos for r in records))) is not None:
                metrics[f"eval/{level_tag(level)}/progress"] = progress
        first, _ = played[run.env.level]
        return metrics, first[best_index(first)]

    def on_env_steps(self, trainer: pl.Trainer, pl_module: pl.LightningModule, before: int, after: int) -> None:
        if not crossed(before, after, self.every):
            return
        run = pl_module.run
        # A Ctrl-C or SIGTERM that comes while the evaluation plays (a minute or more over several
        # levels) ends the run after the episode in play, with nothing of this evaluation logged:
        # a pre-empted job has seconds to save (Slurm's SIGKILL follows 30 s after by default).
        metrics, best = self.play(run, pl_module.online, before_episode=lambda: raise_if_stopped(trainer))
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=after)
        trainer.callback_metrics.update({name: torch.tensor(value) for name, value in metrics.items()})
        writer = tensorboard(trainer)
        if self.video and writer is not None:
            gif = io.BytesIO()
            record_episode(self.env_config(run), run.env.level, best.seed, best.actions, GifWriter(gif))
            add_gif(writer, "eval/video", gif.getvalue(), after)

    def state_dict(self) -> dict[str, Any]:
        """The settings, so that a resume evaluates as the run did unless its command names them."""
        return {
            "every": self.every,
            "episodes": self.episodes,
            "epsilon": self.epsilon,
            "levels": self.extra_levels or None,
            "max_episode_steps": self.max_episode_steps,
            "stuck_patience": self.stuck_patience,
            "video": self.video,
            "seed": self.seed,
        }
