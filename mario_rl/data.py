"""ExperienceStream: the IterableDataset that plays, remembers and serves batches.

It owns the replay and drives a collector (mario_rl/collectors.py: local worker processes or
Ray actors), whose chunks of experience it writes into the replay, a lane per emulator. Each
batch it yields is paid for by ``agent.train_every`` env steps. With the local collector the
env step is sent to the workers before the batch is handed to Lightning and collected after,
so the emulators run while the learner trains; Ray actors run ahead by at most
``collector.max_inflight`` chunks.

With prioritized replay the data flow has one edge back: a batch carries the replay
indices it was drawn from, and the learner returns their TD errors through
``update_priorities``, because the priorities are the learner's errors and only the
stream's replay can store them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch.utils.data import IterableDataset

from mario_rl.collectors import Chunk, make_collector
from mario_rl.config import EnvConfig, RunConfig, lanes
from mario_rl.envs import make_vector_env
from mario_rl.episodes import Episode
from mario_rl.policy import EpsilonGreedy, epsilon
from mario_rl.replay import ReplayBuffer


class ExperienceStream(IterableDataset):
    """Endless-until-budget stream of uint8 batches sampled from a self-filling replay.

    ``make_envs`` builds a vector env from the run's env config (the Mario workers by
    default), in this process's workers or inside each Ray actor; any vector env whose
    observations are uint8 frame stacks of shape (num_envs, frame_stack, frame_size,
    frame_size) and whose info carries ``x_pos`` and ``flag_get`` will do, e.g. the synthetic
    env of mario_rl/synthetic.py. With Ray it must be importable by the actors (a module-level
    function). Checkpoints keep the workers' ``worker_state`` (start states, level outcomes)
    only when the env's metadata has ``"worker_state": True`` (collectors.keeps_worker_state).
    """

    def __init__(
        self,
        run: RunConfig,
        policy: EpsilonGreedy,
        make_envs: Callable[[EnvConfig], gym.vector.VectorEnv] = make_vector_env,
    ):
        super().__init__()
        self.run = run
        # The stop asked for from outside and not yet raised (mario_rl/stopping.py), set by the
        # stream's owner: the Ray collector raises it while it waits on the cluster.
        self.noted_stop: Callable[[], BaseException | None] = lambda: None
        self.collector = make_collector(run, policy, make_envs, lambda: self.noted_stop())
        env = run.env
        self.replay = ReplayBuffer(
            capacity=run.replay.capacity,
            num_envs=lanes(run),
            frame_shape=(env.frame_size, env.frame_size),
            frame_stack=env.frame_stack,
            n_step=run.agent.n_step,
            gamma=run.agent.gamma,
            seed=run.seed,
            max_ram_fraction=run.replay.max_ram_fraction,
            prioritized=run.replay.prioritized,
            priority_alpha=run.replay.priority_alpha,
            priority_eps=run.replay.priority_eps,
        )
        self.env_steps = 0
        self.updates = 0
        self.episodes = 0
        self.finished: deque[Episode] = deque()
        # Updates are owed from env step learning_from on, one per train_every, after the
        # updates_before made until then: a fresh run waits for learning_starts; a resume whose
        # replay is gone waits as long again from where it stopped (``refill``).
        self.learning_from = max(run.agent.learning_starts, run.agent.batch_size)
        self.updates_before = 0
        # Called as on_steps(before, after) after each chunk moved the env-step counter (one
        # vector step with the local collector): what runs on an env-step cadence (checkpoints,
        # evaluation) runs there, also in the warm-up when no batch flows, and sees the stream at
        # exactly that step.
        self.on_steps: Callable[[int, int], None] | None = None

    @property
    def policy(self) -> EpsilonGreedy:
        """The epsilon-greedy actor on the online network (Ray actors act on copies of its network)."""
        return self.collector.policy

    @policy.setter
    def policy(self, policy: EpsilonGreedy) -> None:
        self.collector.policy = policy

    @property
    def env_seconds(self) -> float:
        """Seconds this process spent sending env steps and waiting for their results (or for chunks)."""
        return self.collector.env_seconds

    @property
    def scheduled_epsilon(self) -> float:
        """The run's exploration schedule (agent.epsilon_*) at this point of training."""
        return epsilon(self.run.agent, self.env_steps, self.updates)

    @property
    def epsilon(self) -> float:
        """The exploration rate the emulators play with (a mean over Ray actors with fixed ones)."""
        return self.collector.acting_epsilon(self.scheduled_epsilon)

    @property
    def priority_beta(self) -> float:
        """Importance-weight exponent, linear from replay.priority_beta_start to 1 over the budget.

        The bias that prioritized draws put into the updates matters most late in a run, when
        the values settle, so the correction is full (beta 1) by the end (Schaul et al. 2016).
        """
        start = self.run.replay.priority_beta_start
        return start + (1.0 - start) * min(1.0, self.env_steps / self.run.env_steps)

    def update_priorities(self, envs: torch.Tensor, slots: torch.Tensor, td_errors: torch.Tensor) -> None:
        """Hand the TD errors of a trained batch back to the replay as the new priorities."""
        self.replay.update_priorities(envs.cpu().numpy(), slots.cpu().numpy(), td_errors.float().cpu().numpy())

    def _open(self) -> None:
        """Start the emulators; every lane of the replay begins an episode (the running ones are cut)."""
        self._write(self.collector.start(self.run.seed + self.episodes, self.env_steps))

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the emulators, keeping their start states and level outcomes for a checkpoint
        written after (the last.ckpt at the end of a run); local workers are killed if one of them
        is already gone, or a step in flight does not come back within ``timeout_s``."""
        self.collector.close(timeout_s)

    def _updates_owed(self, env_steps: int) -> int:
        if env_steps < self.learning_from:
            return 0
        return self.updates_before + (env_steps - self.learning_from) // self.run.agent.train_every + 1 - self.updates

    def refill(self) -> int:
        """Make no update until the (empty) replay has taken as many env steps as a fresh run's
        warm-up, from the current step on; the update cadence then goes on. Returns that many."""
        warmup = max(self.run.agent.learning_starts, self.run.agent.batch_size)
        self.learning_from = self.env_steps + warmup
        self.updates_before = self.updates
        return warmup

    def worker_states(self) -> list[dict[str, Any]] | None:
        """Each emulator's start-state pool and recent per-level outcomes (levels.LevelSet.worker_state),
        lane by lane, or None when the emulators keep none (not started, or an env without levels)."""
        return self.collector.worker_states()

    def _write(self, chunk: Chunk) -> None:
        """Store a chunk in its lanes, up to the budget, and note the episodes that ended in it."""
        lanes = chunk.lanes
        if chunk.start_frames is not None:
            self.replay.truncate_episodes(lanes)
            self.replay.start(chunk.start_frames, lanes)
        # The budget cuts the last chunk after the vector step that reaches it (Ray's are many steps long).
        steps = min(chunk.steps, -(-(self.run.env_steps - self.env_steps) // len(lanes)))
        resets = iter(chunk.reset_frames)
        for t in range(steps):
            ended = chunk.terminated[t] | chunk.truncated[t]
            reset_frames = chunk.frames[t].copy()
            for i in np.flatnonzero(ended):
                reset_frames[i] = next(resets)
            self.replay.add(
                chunk.actions[t],
                chunk.rewards[t],
                chunk.terminated[t],
                chunk.truncated[t],
                chunk.frames[t],
                reset_frames,
                lanes,
            )
        for end in chunk.episodes:
            if end.step < steps:
                self.finished.append(replace(end.episode, env_steps=self.env_steps + (end.step + 1) * len(lanes)))
                self.episodes += 1
        self.env_steps += steps * len(lanes)

    def _batch(self) -> dict[str, Any]:
        beta = self.priority_beta
        sample = self.replay.sample(self.run.agent.batch_size, beta)
        batch: dict[str, Any] = {k: torch.from_numpy(v) for k, v in sample.items()}
        batch["env_steps"] = self.env_steps
        batch["epsilon"] = self.epsilon
        if self.run.replay.prioritized:
            batch["priority_beta"] = beta
        self.updates += 1
        return batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if not self.collector.is_open:
            self._open()
        while self.env_steps < self.run.env_steps:
            self.collector.launch(self.scheduled_epsilon, self.env_steps)
            for _ in range(self._updates_owed(self.env_steps + self.collector.in_flight_steps)):
                yield self._batch()
            before = self.env_steps
            self._write(self.collector.receive(self.env_steps))
            if self.on_steps is not None:
                self.on_steps(before, self.env_steps)
        for _ in range(self._updates_owed(self.env_steps)):  # a Ray chunk's, which are owed once written
            yield self._batch()

    def state_dict(self) -> dict[str, Any]:
        """Counters and random states a resumed run needs to continue where this one stopped."""
        return {
            "env_steps": self.env_steps,
            "updates": self.updates,
            "episodes": self.episodes,
            "policy_rng": self.policy.rng.bit_generator.state,
            "replay_rng": self.replay.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "workers": self.worker_states(),
            "learning_from": self.learning_from,
            "updates_before": self.updates_before,
            "train_every": self.run.agent.train_every,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.env_steps = state["env_steps"]
        self.updates = state["updates"]
        self.episodes = state["episodes"]
        self.policy.rng.bit_generator.state = state["policy_rng"]
        self.replay.rng.bit_generator.state = state["replay_rng"]
        if "torch_rng" in state:  # the first checkpoints of the project lack it
            torch.set_rng_state(state["torch_rng"])
        self.collector.restore_worker_states(state.get("workers"))
        self.learning_from = state.get("learning_from", self.learning_from)
        self.updates_before = state.get("updates_before", 0)
        if state.get("train_every", self.run.agent.train_every) != self.run.agent.train_every:
            # A new cadence counts from here: the old anchor would owe (or withhold) every update
            # since the warm-up at the new rate at once.
            self.learning_from = max(self.learning_from, self.env_steps + self.run.agent.train_every)
            self.updates_before = self.updates
