"""ExperienceStream: the IterableDataset that plays, remembers and serves batches.

It owns the vector env, the actor and the replay. Each batch it yields is paid for by
``agent.train_every`` env steps. The env step is sent to the workers before the batch is
handed to Lightning and collected after, so the emulators run while the learner trains.

With prioritized replay the data flow has one edge back: a batch carries the replay
indices it was drawn from, and the learner returns their TD errors through
``update_priorities``, because the priorities are the learner's errors and only the
stream's replay can store them.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch.utils.data import IterableDataset

from mario_rl.config import EnvConfig, RunConfig
from mario_rl.envs import make_vector_env
from mario_rl.episodes import Episode
from mario_rl.errors import EnvWorkerError, one_line
from mario_rl.policy import EpsilonGreedy, epsilon
from mario_rl.replay import ReplayBuffer

log = logging.getLogger(__name__)


class ExperienceStream(IterableDataset):
    """Endless-until-budget stream of uint8 batches sampled from a self-filling replay.

    ``make_envs`` builds the vector env from the run's env config (the Mario workers by
    default); any vector env whose observations are uint8 frame stacks of shape
    (num_envs, frame_stack, frame_size, frame_size) and whose info carries ``x_pos`` and
    ``flag_get`` will do, e.g. a synthetic env for tests and benchmarks.
    """

    def __init__(
        self,
        run: RunConfig,
        policy: EpsilonGreedy,
        make_envs: Callable[[EnvConfig], gym.vector.VectorEnv] = make_vector_env,
    ):
        super().__init__()
        self.run = run
        self.policy = policy
        self.make_envs = make_envs
        env = run.env
        self.replay = ReplayBuffer(
            capacity=run.replay.capacity,
            num_envs=env.num_envs,
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
        self.envs = None
        self.obs: np.ndarray | None = None
        self._returns = np.zeros(env.num_envs)
        self._lengths = np.zeros(env.num_envs, dtype=np.int64)
        self.env_seconds = 0.0
        self._result: tuple | None = None
        self._pending_workers: list[dict[str, Any]] | None = None
        self._in_flight = False
        self._workers_keep_state = True
        # Updates are owed from env step learning_from on, one per train_every, after the
        # updates_before made until then: a fresh run waits for learning_starts; a resume whose
        # replay is gone waits as long again from where it stopped (``refill``).
        self.learning_from = max(run.agent.learning_starts, run.agent.batch_size)
        self.updates_before = 0
        # Called as on_steps(before, after) after each vector step moved the env-step counter:
        # what runs on an env-step cadence (checkpoints, evaluation) runs there, also in the
        # warm-up when no batch flows, and sees the stream at exactly that step.
        self.on_steps: Callable[[int, int], None] | None = None

    @property
    def epsilon(self) -> float:
        return epsilon(self.run.agent, self.env_steps, self.updates)

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
        """Start the workers and begin one episode per stream in the replay."""
        self.envs = self.make_envs(self.run.env)
        if self._pending_workers is not None:
            self._set_worker_states(self._pending_workers)
            self._pending_workers = None
        self.obs, _ = self.envs.reset(seed=self.run.seed + self.episodes)
        self.replay.truncate_episodes()
        self.replay.start(self.obs[:, -1])
        self._returns[:] = 0
        self._lengths[:] = 0

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the workers, keeping their start states and level outcomes for a checkpoint written
        after (the last.ckpt at the end of a run); kill them if one of them is already gone, or a
        step in flight does not come back within ``timeout_s``."""
        if self.envs is not None:
            try:
                self._pending_workers = self.worker_states()
            except Exception:  # a dead worker answers nothing; its states are lost with it
                self._pending_workers = None
            try:
                self.envs.close(timeout=timeout_s)
            except Exception:
                self.envs.close(terminate=True)
            self.envs = None

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

    def _worker_error(self, err: Exception) -> EnvWorkerError:
        env = self.run.env
        levels = ",".join(env.training_levels)
        return EnvWorkerError(
            f"an env worker ({env.game} {levels}) stopped at env step {self.env_steps}: {type(err).__name__}: {err}"
        )

    def worker_states(self) -> list[dict[str, Any]] | None:
        """Each worker's start-state pool and recent per-level outcomes (levels.LevelSet.worker_state),
        or None when the workers keep none (not started, or an env without levels)."""
        if self.envs is None:
            return self._pending_workers
        if not self._workers_keep_state:
            return None
        self._settle()
        try:
            return list(self.envs.get_attr("worker_state"))
        except AttributeError:  # asked once: a worker that lacks it logs the error each time
            self._workers_keep_state = False
            return None
        except Exception as err:  # a dead or broken worker: the states are lost with it, the save goes on
            log.warning("the env workers' start states could not be read (%s); saved without them", one_line(err))
            return None

    def _set_worker_states(self, states: list[dict[str, Any]]) -> None:
        """Give the workers their saved states; a run resumed with another num_envs deals them out
        in order and drops or leaves empty what does not fit."""
        n = self.run.env.num_envs
        states = (list(states) + [{}] * n)[:n]
        try:
            self.envs.set_attr("worker_state", states)
        except AttributeError:
            log.warning("the env workers keep no start states or level outcomes; the saved ones are dropped")

    def _send(self, actions: np.ndarray) -> None:
        """Start a vector step; an in-process (sync) vector env simply runs it now."""
        started = time.perf_counter()
        try:
            if hasattr(self.envs, "step_async"):
                self.envs.step_async(actions)
                self._in_flight = True
            else:
                self._result = self.envs.step(actions)
        except Exception as err:  # a dead worker's pipe: BrokenPipeError
            raise self._worker_error(err) from err
        self.env_seconds += time.perf_counter() - started

    def _settle(self) -> None:
        """Collect a step the async workers are running, keeping its result for ``_record``: a
        worker answers no other call while a step is in flight."""
        if not self._in_flight:
            return
        try:
            self._result = self.envs.step_wait()
        except Exception as err:  # a worker raised, or died and closed its pipe (EOFError)
            raise self._worker_error(err) from err
        finally:
            self._in_flight = False

    def _record(self, actions: np.ndarray) -> None:
        """Collect the in-flight step and store it; note finished episodes."""
        started = time.perf_counter()
        self._settle()
        result, self._result = self._result, None
        obs, rewards, terminated, truncated, infos = result
        self.env_seconds += time.perf_counter() - started
        ended = np.logical_or(terminated, truncated)
        next_frames = obs[:, -1].copy()
        for i in np.flatnonzero(ended):
            next_frames[i] = infos["final_obs"][i][-1]
        self.replay.add(actions, rewards, terminated, truncated, next_frames, obs[:, -1])
        self.env_steps += len(actions)
        self._returns += rewards
        self._lengths += 1
        for i in np.flatnonzero(ended):
            final = infos["final_info"]
            self.finished.append(
                Episode(
                    env_steps=self.env_steps,
                    episode_return=float(self._returns[i]),
                    length=int(self._lengths[i]),
                    x_pos=int(final["x_pos"][i]),
                    clear=bool(final["flag_get"][i]),
                    level=str(final["level"][i]) if "level" in final else self.run.env.level,
                    restored=bool(final["restored"][i]) if "restored" in final else False,
                )
            )
            self.episodes += 1
            self._returns[i] = 0
            self._lengths[i] = 0
        self.obs = obs

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
        if self.envs is None:
            self._open()
        while self.env_steps < self.run.env_steps:
            actions = self.policy(self.obs, self.epsilon)
            self._send(actions)
            for _ in range(self._updates_owed(self.env_steps + len(actions))):
                yield self._batch()
            before = self.env_steps
            self._record(actions)
            if self.on_steps is not None:
                self.on_steps(before, self.env_steps)

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
        self._pending_workers = state.get("workers")
        self.learning_from = state.get("learning_from", self.learning_from)
        self.updates_before = state.get("updates_before", 0)
        if state.get("train_every", self.run.agent.train_every) != self.run.agent.train_every:
            # A new cadence counts from here: the old anchor would owe (or withhold) every update
            # since the warm-up at the new rate at once.
            self.learning_from = max(self.learning_from, self.env_steps + self.run.agent.train_every)
            self.updates_before = self.updates
