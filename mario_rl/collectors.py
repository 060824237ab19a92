"""Collectors: who runs the emulators and hands the stream their experience, in chunks.

``local`` (conf/collector/local.yaml) runs them as worker processes of the learner's machine
and acts for them on the learner's own online network, one vector step in flight while the
learner trains. ``ray`` (conf/collector/ray.yaml) runs them in Ray actors, on this machine or
a cluster, in the design of Ape-X (Horgan et al. 2018): each actor steps a vector env of the
project's wrappers with its own epsilon-greedy actor on a CPU copy of the online network, sent
by the learner every ``collector.weight_sync_every`` env steps through Ray's object store.

Either way the stream (mario_rl/data.py) receives ``Chunk``s: a run of vector steps of some
replay lanes, one lane per emulator, as uint8 single frames with actions, rewards and the
terminated/truncated flags. The stream owns the replay and writes each chunk into its lanes,
so frame stacks and n-step windows stay within one emulator's episodes.

The stream drives a collector with four calls: ``start`` (every emulator begins an episode:
a chunk of start frames), ``launch`` (put work in flight), ``receive`` (the next finished
chunk; blocks) and ``close``. ``in_flight_steps`` are env steps launched but not received
whose updates the stream may pay in advance: the local step in flight, none for Ray, whose
chunks arrive in any order.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AsyncVectorEnv

from mario_rl.config import RAY_MISSING, ConfigError, EnvConfig, RunConfig
from mario_rl.envs import num_actions
from mario_rl.episodes import Episode
from mario_rl.errors import EnvWorkerError, one_line
from mario_rl.nets import NatureCNN
from mario_rl.policy import EpsilonGreedy
from mario_rl.stopping import keeping_stops_to_this_process

log = logging.getLogger(__name__)

MakeEnvs = Callable[[EnvConfig], gym.vector.VectorEnv]
# How long a restarting Ray actor may take to answer again: a new process that imports torch and
# builds its emulators, possibly on another node.
RESTART_WAIT_S = 300
# How long a checkpoint waits for the actors' start states (each first plays its queued chunks),
# so that a save on a lost cluster ends rather than hangs.
STATES_WAIT_S = 60
# The same wait once a stop is noted. The stop may come with the cluster going down (a SIGTERM
# does not reach the Ray processes a run starts, but one on a cluster's nodes ends theirs), and
# Ray ends a driver 60 s after it lost the GCS: the save and the close must be done well before that.
STOP_STATES_WAIT_S = 10
# The learner waits on Ray in slices of this many seconds and raises a noted stop between them:
# a call on a cluster that is gone never returns.
WAIT_SLICE_S = 1.0

# How long a save waits for the local env workers (the step in flight, then their states). They
# answer in milliseconds; one that is stuck (stopped, hung in the emulator) must not hang the save
# a SIGTERM waits on: Slurm kills a job 30 s after its SIGTERM by default (KillWait).
WORKER_WAIT_S = 10.0

NotedStop = Callable[[], BaseException | None]


@dataclass
class EpisodeEnd:
    """An episode that ended at vector step ``step`` of a chunk, in lane ``lane`` (an index into
    its lanes); the stream sets the ``episode``'s run-wide ``env_steps``."""

    step: int
    lane: int
    episode: Episode


@dataclass
class Chunk:
    """Vector steps of a set of replay lanes, as the replay stores them.

    ``frames[t]`` are the newest frames after step t, the final frame where an episode ended
    there; ``reset_frames`` the first frames of the episodes begun at those ends, in the order
    of ``np.nonzero(terminated | truncated)``. With ``start_frames`` the lanes first begin new
    episodes (a start, or an actor's restart: the episodes running there are cut).
    """

    lanes: np.ndarray  # (L,) int64
    actions: np.ndarray  # (T, L) int64
    rewards: np.ndarray  # (T, L) float32
    terminated: np.ndarray  # (T, L) bool
    truncated: np.ndarray  # (T, L) bool
    frames: np.ndarray  # (T, L, H, W) uint8
    reset_frames: np.ndarray  # (ends, H, W) uint8
    episodes: list[EpisodeEnd] = field(default_factory=list)
    start_frames: np.ndarray | None = None  # (L, H, W) uint8
    generation: int = 0  # which start of the actor sent it; the stale ones of a dead actor are dropped

    @property
    def steps(self) -> int:
        """Vector steps in the chunk (env steps: steps * len(lanes))."""
        return len(self.actions)

    @classmethod
    def starting(cls, lanes: np.ndarray, start_frames: np.ndarray, generation: int = 0) -> Chunk:
        """A chunk of no steps that begins an episode in every lane with its first frame, shape (L, H, W)."""
        n, frame_shape = len(lanes), start_frames.shape[1:]
        none = np.zeros((0, n), bool)
        return cls(
            lanes=lanes,
            actions=np.zeros((0, n), np.int64),
            rewards=np.zeros((0, n), np.float32),
            terminated=none,
            truncated=none,
            frames=np.zeros((0, n, *frame_shape), np.uint8),
            reset_frames=np.zeros((0, *frame_shape), np.uint8),
            start_frames=start_frames,
            generation=generation,
        )


class ChunkRecorder:
    """Turns the steps of one vector env into Chunks for ``lanes``, keeping each episode's return and length.

    ``level`` names the level of episodes whose info does not (an env without a LevelSet).
    """

    def __init__(self, lanes: np.ndarray, level: str):
        self.lanes = lanes
        self.level = level
        self._returns = np.zeros(len(lanes))
        self._lengths = np.zeros(len(lanes), dtype=np.int64)
        self._steps: list[tuple[np.ndarray, ...]] = []
        self._resets: list[np.ndarray] = []
        self._episodes: list[EpisodeEnd] = []

    def start(self, obs: np.ndarray, generation: int = 0) -> Chunk:
        """The chunk that begins an episode in every lane from reset observations (num_envs, stack, H, W)."""
        self._returns[:] = 0
        self._lengths[:] = 0
        self._clear()
        return Chunk.starting(self.lanes, obs[:, -1].copy(), generation)

    def _clear(self) -> None:
        self._steps.clear()
        self._resets.clear()
        self._episodes.clear()

    def step(self, actions: np.ndarray, result: tuple) -> None:
        """Record one vector step: ``actions`` and the vector env's (obs, rewards, terminated, truncated, infos)."""
        obs, rewards, terminated, truncated, infos = result
        ended = np.logical_or(terminated, truncated)
        frames = obs[:, -1].copy()
        for i in np.flatnonzero(ended):
            frames[i] = infos["final_obs"][i][-1]
        self._steps.append((actions, rewards, terminated, truncated, frames))
        self._resets.extend(obs[ended, -1])
        self._returns += rewards
        self._lengths += 1
        for i in np.flatnonzero(ended):
            final = infos["final_info"]
            self._episodes.append(
                EpisodeEnd(
                    step=len(self._steps) - 1,
                    lane=int(i),
                    episode=Episode(
                        episode_return=float(self._returns[i]),
                        length=int(self._lengths[i]),
                        x_pos=int(final["x_pos"][i]),
                        clear=bool(final["flag_get"][i]),
                        level=str(final["level"][i]) if "level" in final else self.level,
                        restored=bool(final["restored"][i]) if "restored" in final else False,
                    ),
                )
            )
            self._returns[i] = 0
            self._lengths[i] = 0

    def chunk(self, generation: int = 0) -> Chunk:
        """The steps recorded since the last chunk (at least one), as one Chunk."""
        actions, rewards, terminated, truncated, frames = (np.stack(a) for a in zip(*self._steps, strict=True))
        resets = np.stack(self._resets) if self._resets else np.zeros((0, *frames.shape[2:]), np.uint8)
        chunk = Chunk(
            lanes=self.lanes,
            actions=actions.astype(np.int64),
            rewards=rewards.astype(np.float32),
            terminated=terminated.astype(bool),
            truncated=truncated.astype(bool),
            frames=frames,
            reset_frames=resets,
            episodes=list(self._episodes),
            generation=generation,
        )
        self._clear()
        return chunk


def keeps_worker_state(envs: gym.vector.VectorEnv) -> bool:
    """Whether the vector env's workers have a ``worker_state`` to save and restore.

    Read from the env's metadata (levels.LevelSet sets ``worker_state``) rather than asked of the
    workers: Gymnasium's async worker exits after any error in a call, so asking an env that
    lacks the attribute would end every worker.
    """
    return bool(envs.metadata.get("worker_state"))


def get_worker_states(envs: gym.vector.VectorEnv, timeout_s: float | None = None) -> list[dict[str, Any]] | None:
    """Each worker's start-state pool and recent per-level outcomes (levels.LevelSet.worker_state),
    or None for an env that keeps none (the synthetic one). Async workers must answer within
    ``timeout_s`` (None: no limit), else multiprocessing.TimeoutError."""
    if not keeps_worker_state(envs):
        return None
    if isinstance(envs, AsyncVectorEnv):
        envs.call_async("worker_state")
        return list(envs.call_wait(timeout=timeout_s))
    return list(envs.get_attr("worker_state"))


def set_worker_states(envs: gym.vector.VectorEnv, states: list[dict[str, Any]]) -> None:
    """Give the workers their saved states; a run resumed with other emulators deals them out in
    order and drops or leaves empty what does not fit."""
    n = envs.num_envs
    if keeps_worker_state(envs):
        envs.set_attr("worker_state", (list(states) + [{}] * n)[:n])
    else:
        log.warning("the env workers keep no start states or level outcomes; the saved ones are dropped")


class LocalCollector:
    """The emulators as a vector env of this machine (env.vector), acted for by the learner's policy.

    One vector step is in flight at a time: ``launch`` sends it before the stream hands Lightning
    the batches it owes and ``receive`` collects it after, so the workers emulate while the
    learner trains.
    """

    def __init__(self, run: RunConfig, policy: EpsilonGreedy, make_envs: MakeEnvs):
        self.run = run
        self.policy = policy
        self.make_envs = make_envs
        self.lanes = run.env.num_envs
        self.restarts = 0
        self.in_flight_steps = 0
        self.envs: gym.vector.VectorEnv | None = None
        self._error: EnvWorkerError | None = None  # the in-flight step's worker error, once seen
        self._recorder = ChunkRecorder(np.arange(self.lanes), run.env.level)
        self._obs: np.ndarray | None = None
        self._actions: np.ndarray | None = None
        self._result: tuple | None = None
        self._in_flight = False
        self._launched_at = 0
        self._pending_workers: list[dict[str, Any]] | None = None
        self.env_seconds = 0.0

    @property
    def is_open(self) -> bool:
        return self.envs is not None

    def acting_epsilon(self, scheduled: float) -> float:
        """The exploration rate the emulators play with: the run's schedule."""
        return scheduled

    def start(self, seed: int, env_steps: int) -> Chunk:
        """Start the workers (with the worker states of a resumed run); every lane begins an episode.

        Raises EnvWorkerError for a worker that dies or raises before its first observation; a
        resumed run's worker states stay this collector's until then, for a checkpoint written
        after the error.
        """
        try:
            self.envs = self.make_envs(self.run.env)
            if self._pending_workers is not None:
                set_worker_states(self.envs, self._pending_workers)
            self._obs, _ = self.envs.reset(seed=seed)
        except ConfigError:
            raise
        except Exception as err:  # a worker's death (ConnectionResetError, EOFError) or its error
            raise self._worker_error(err, env_steps) from err
        self._pending_workers = None
        return self._recorder.start(self._obs)

    def worker_states(self) -> list[dict[str, Any]] | None:
        """Each worker's start-state pool and recent per-level outcomes (levels.LevelSet.worker_state),
        or None when the workers keep none (not started, or an env without levels), or one of them
        is gone or does not answer within WORKER_WAIT_S; the next step then raises EnvWorkerError."""
        if self.envs is None or self._pending_workers is not None:
            return self._pending_workers
        if not keeps_worker_state(self.envs):
            return None
        try:
            if self._error is not None:
                raise self._error
            self._settle(WORKER_WAIT_S)
            return get_worker_states(self.envs, WORKER_WAIT_S)
        except Exception as err:  # a dead or stuck worker: the states are lost with it, the save goes on
            if self._error is None:  # a call that timed out leaves the workers' answers out of step
                self._error = self._worker_error(err, self._launched_at)
            log.warning("the env workers' start states could not be read (%s); saved without them", one_line(err))
            return None

    def restore_worker_states(self, states: list[dict[str, Any]] | None) -> None:
        """Worker states from a checkpoint, handed to the workers when they start."""
        self._pending_workers = states

    def launch(self, epsilon: float, env_steps: int) -> None:
        """Pick actions on the online network and start the vector step (a sync vector env runs it now).
        Raises EnvWorkerError for workers found dead or stuck since the last step."""
        if self._error is not None:
            raise self._error
        self._actions = self.policy(self._obs, epsilon)
        started = time.perf_counter()
        try:
            if hasattr(self.envs, "step_async"):
                self.envs.step_async(self._actions)
                self._in_flight = True
            else:
                self._result = self.envs.step(self._actions)
        except Exception as err:  # a dead worker's pipe: BrokenPipeError
            raise self._worker_error(err, env_steps) from err
        self.env_seconds += time.perf_counter() - started
        self.in_flight_steps = len(self._actions)
        self._launched_at = env_steps

    def _settle(self, timeout_s: float | None = None) -> None:
        """Collect a step the async workers are running, keeping its result for ``receive``: a
        worker answers no other call while a step is in flight. Raises EnvWorkerError for a worker
        that raised or died, or that did not answer within ``timeout_s`` (None: no limit)."""
        if not self._in_flight:
            return
        try:
            self._result = self.envs.step_wait(timeout=timeout_s)
        except Exception as err:  # a worker raised, died and closed its pipe (EOFError), or timed out
            # kept for receive: a save that settled the step and went on without the states
            self._error = self._worker_error(err, self._launched_at)
            raise self._error from err
        finally:
            self._in_flight = False

    def receive(self, env_steps: int) -> Chunk:
        """Collect the step in flight as a chunk of one vector step."""
        started = time.perf_counter()
        self._settle()
        self.env_seconds += time.perf_counter() - started
        if self._result is None and self._error is not None:
            raise self._error
        result, self._result = self._result, None
        self._recorder.step(self._actions, result)
        self._obs = result[0]
        self.in_flight_steps = 0
        return self._recorder.chunk()

    def _worker_error(self, err: Exception, env_steps: int) -> EnvWorkerError:
        env = self.run.env
        levels = ",".join(env.training_levels)
        return EnvWorkerError(
            f"an env worker ({env.game} {levels}) stopped at env step {env_steps}: {type(err).__name__}: {err}"
        )

    def worker_pids(self) -> list[int]:
        """Process ids of the env workers on this machine (none for a sync vector env)."""
        return [p.pid for p in getattr(self.envs, "processes", [])]

    def close(self, timeout_s: float = WORKER_WAIT_S) -> None:
        """Stop the workers, keeping their states for a checkpoint written after; kill them if one
        of them is already gone, or a step in flight does not come back within ``timeout_s``, or
        they do not answer for their states within WORKER_WAIT_S."""
        if self.envs is None:
            return
        try:
            self._settle(timeout_s)
            self._pending_workers = self.worker_states()
            if self._error is not None:
                raise self._error
            self.envs.close(timeout=timeout_s)
        except Exception as err:  # a dead or stuck worker answers nothing; its states are lost with it
            log.warning("the env workers did not close (%s); killed", one_line(err))
            kill_workers(self.envs)
        self.envs = None


def kill_workers(envs: gym.vector.VectorEnv) -> None:
    """End the worker processes of a vector env that cannot close, with SIGKILL, and mark it closed.

    A worker that died in the middle of a call leaves the vector env waiting for its answer, and
    one that is stuck never gives it; Gymnasium's close, even with ``terminate=True``, reads that
    answer first and fails again on the dead pipe, or waits. The workers ignore SIGTERM
    (envs.ignoring_stops).
    """
    processes = getattr(envs, "processes", [])
    for process in processes:
        if process.is_alive():
            process.kill()
    for pipe in getattr(envs, "parent_pipes", []):
        if pipe is not None:
            pipe.close()
    for process in processes:
        process.join(timeout=10)
    envs.closed = True


def ape_x_epsilons(actors: int, base: float, spread: float) -> np.ndarray:
    """Ape-X's fixed per-actor exploration: actor i of N plays with base^(1 + i/(N-1) * spread).

    Horgan et al. 2018 (section 4.1) use base 0.4 and spread 7: actor 0 explores with 0.4, the
    last with 0.4^8 (0.0007). One actor gets ``base``.
    """
    if actors == 1:
        return np.array([base])
    return base ** (1.0 + np.arange(actors) / (actors - 1) * spread)


def actor_seed(seed: int, actor: int, generation: int) -> int:
    """The seed of one start of one actor: distinct for each actor and restart, reproducible from the run's seed."""
    return int(np.random.SeedSequence([seed, actor, generation]).generate_state(1)[0])


class EmulatorActor:
    """One Ray actor: ``env.num_envs`` emulators in a sync vector env, and the epsilon-greedy actor on
    a CPU copy of the online network. Its experience is for replay lanes ``lanes``.

    Made a Ray actor by RayCollector (``ray.remote`` at run time, so this module imports without Ray).
    """

    def __init__(self, env: EnvConfig, dueling: bool, make_envs: MakeEnvs, chunk_steps: int, lanes: np.ndarray):
        torch.set_num_threads(1)  # one emulator process per core: acting is a batch of a few stacks
        self.envs = make_envs(dataclasses.replace(env, vector="sync"))
        actions = num_actions(env.actions)
        self.net = NatureCNN(env.frame_stack, actions, env.frame_size, dueling).requires_grad_(False)
        self.policy = EpsilonGreedy(self.net, actions, seed=0)
        self.chunk_steps = chunk_steps
        self.recorder = ChunkRecorder(lanes, env.level)
        self.obs: np.ndarray | None = None

    def start(self, seed: int, generation: int, worker_states: list[dict[str, Any]] | None = None) -> Chunk:
        """Begin an episode in every emulator from ``seed`` (and saved worker states); their first frames."""
        self.policy.rng = np.random.default_rng(seed)
        if worker_states is not None:
            set_worker_states(self.envs, worker_states)
        self.obs, _ = self.envs.reset(seed=seed)
        return self.recorder.start(self.obs, generation)

    def worker_states(self) -> list[dict[str, Any]] | None:
        """The emulators' start-state pools and level outcomes (see get_worker_states)."""
        return get_worker_states(self.envs)

    def collect(self, epsilon: float, weights: dict[str, torch.Tensor] | None, generation: int) -> Chunk:
        """Play ``chunk_steps`` vector steps with ``epsilon``, first taking ``weights`` if sent."""
        if weights is not None:
            self.net.load_state_dict(weights)
        for _ in range(self.chunk_steps):
            actions = self.policy(self.obs, epsilon)
            result = self.envs.step(actions)
            self.recorder.step(actions, result)
            self.obs = result[0]
        return self.recorder.chunk(generation)


def import_ray() -> Any:
    """The ray module, or a one-line ConfigError naming the requirements file that installs it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


class RayCollector:
    """The emulators in ``collector.actors`` Ray actors of ``env.num_envs`` emulators each (Ape-X's actors).

    ``launch`` keeps ``collector.max_inflight`` chunk requests queued on every actor, so the
    actors run ahead of the learner by at most that many chunks, and sends the online weights
    with the first request after each sync. ``receive`` returns the oldest request of whichever
    actor finishes first. An actor that dies (or whose emulator raises) is restarted by Ray up
    to ``collector.max_restarts`` times; it then plays from a new seed, and its first chunk
    starts its lanes over (the stream cuts their running episodes). Any other loss of the
    cluster, or one restart too many, ends the run with an EnvWorkerError (saved by
    SaveOnInterrupt).

    ``noted_stop`` returns the stop asked for from outside (Ctrl-C, SIGTERM) and not yet
    raised (mario_rl/stopping.py): the learner raises it while it waits on the cluster, whose
    processes the same signal may have ended, and then waits only STOP_STATES_WAIT_S for the
    actors' start states.
    """

    def __init__(self, run: RunConfig, policy: EpsilonGreedy, make_envs: MakeEnvs, noted_stop: NotedStop):
        self.ray = import_ray()
        self.noted_stop = noted_stop
        self.run = run
        self.policy = policy
        self.make_envs = make_envs
        cfg = run.collector
        self.cfg = cfg
        self.lanes = cfg.actors * run.env.num_envs
        self.restarts = 0
        self.in_flight_steps = 0
        self.actors: list[Any] = []
        self._owns_ray = False
        self._fixed = (
            None if cfg.epsilon_spread is None else ape_x_epsilons(cfg.actors, cfg.epsilon_base, cfg.epsilon_spread)
        )
        self._inflight: list[deque] = [deque() for _ in range(cfg.actors)]
        self._generation = [0] * cfg.actors
        self._failures = [0] * cfg.actors
        self._has_version = [-1] * cfg.actors
        self._version = -1
        self._weights: Any = None
        self._synced_at = 0
        self._seed = run.seed
        self._next = 0
        self._pending_workers: list[dict[str, Any]] | None = None
        self._given_up = False  # on the actors' start states, in a stop: not asked again
        self.env_seconds = 0.0

    @property
    def is_open(self) -> bool:
        return bool(self.actors)

    def _raise_noted_stop(self) -> None:
        stop = self.noted_stop()
        if stop is not None:
            raise stop

    def _wait(self, refs: list[Any], num_returns: int, timeout_s: float | None = None, stoppable: bool = True) -> list:
        """``ray.wait`` for ``num_returns`` of ``refs``, in slices of WAIT_SLICE_S: the ready refs,
        fewer after ``timeout_s`` (None: no limit). Between slices a noted stop is raised if
        ``stoppable``, else it cuts the wait to STOP_STATES_WAIT_S."""
        started = time.monotonic()
        while True:
            ready, _ = self.ray.wait(refs, num_returns=num_returns, timeout=WAIT_SLICE_S)
            if len(ready) >= num_returns:
                return ready
            if stoppable:
                self._raise_noted_stop()
            elif self.noted_stop() is not None:
                timeout_s = STOP_STATES_WAIT_S if timeout_s is None else min(timeout_s, STOP_STATES_WAIT_S)
            if timeout_s is not None and time.monotonic() - started >= timeout_s:
                return ready

    def acting_epsilon(self, scheduled: float) -> float:
        """The mean exploration rate the actors play with: the schedule's, or the mean of Ape-X's fixed ones."""
        return scheduled if self._fixed is None else float(self._fixed.mean())

    def _connect(self) -> None:
        ray, cfg = self.ray, self.cfg
        if not ray.is_initialized():
            with keeping_stops_to_this_process():  # Ctrl-C and SIGTERM still save and stop as without Ray
                if cfg.address is None:
                    ray.init(include_dashboard=False, logging_level=logging.WARNING)
                else:
                    import mario_rl

                    # The cluster's nodes get this package from the driver; its dependencies they must have.
                    ray.init(address=cfg.address, runtime_env={"py_modules": [mario_rl]}, logging_level=logging.WARNING)
            self._owns_ray = ray.is_initialized()  # not after a stop that came while Ray started
            self._raise_noted_stop()
        cpus = ray.cluster_resources().get("CPU", 0)
        need = cfg.actors * cfg.actor_cpus
        if need > cpus:
            raise ConfigError(
                f"collector.actors={cfg.actors} x collector.actor_cpus={cfg.actor_cpus} need {need:g} CPUs, "
                f"the Ray cluster has {cpus:g}; lower collector.actor_cpus (e.g. 0.5) to share cores"
            )

    def start(self, seed: int, env_steps: int) -> Chunk:
        """Connect to Ray (or start it), create the actors, send the weights; every lane begins an episode."""
        ray, cfg, env = self.ray, self.cfg, self.run.env
        self._connect()
        remote = ray.remote(
            num_cpus=cfg.actor_cpus,
            resources=dict(cfg.actor_resources) or None,
            max_restarts=cfg.max_restarts,
            max_task_retries=0,
        )(EmulatorActor)
        n = env.num_envs
        self.actors = [
            remote.remote(env, self.run.agent.dueling, self.make_envs, cfg.chunk_steps, np.arange(i * n, (i + 1) * n))
            for i in range(cfg.actors)
        ]
        self._seed = seed
        self._push_weights(env_steps)
        saved = self._pending_workers
        self._pending_workers = None
        states = [
            None if saved is None else (list(saved) + [{}] * self.lanes)[i * n : (i + 1) * n] for i in range(cfg.actors)
        ]
        refs = [a.start.remote(actor_seed(seed, i, 0), 0, states[i]) for i, a in enumerate(self.actors)]
        try:
            self._wait(refs, len(refs))
            chunks = ray.get(refs)
        except ray.exceptions.RayError as err:
            raise EnvWorkerError(f"ray: the actors could not start: {one_line(err)}") from None
        return Chunk.starting(
            np.concatenate([c.lanes for c in chunks]), np.concatenate([c.start_frames for c in chunks])
        )

    def _push_weights(self, env_steps: int) -> None:
        state = {k: v.detach().to("cpu", copy=True) for k, v in self.policy.q_net.state_dict().items()}
        self._weights = self.ray.put(state)
        self._version += 1
        self._synced_at = env_steps

    def launch(self, epsilon: float, env_steps: int) -> None:
        """Send the weights if ``collector.weight_sync_every`` env steps passed; top up every actor's queue."""
        if env_steps - self._synced_at >= self.cfg.weight_sync_every:
            self._push_weights(env_steps)
        for i, actor in enumerate(self.actors):
            while len(self._inflight[i]) < self.cfg.max_inflight:
                weights = self._weights if self._has_version[i] != self._version else None
                self._has_version[i] = self._version
                eps = epsilon if self._fixed is None else float(self._fixed[i])
                self._inflight[i].append(actor.collect.remote(eps, weights, self._generation[i]))

    def receive(self, env_steps: int) -> Chunk:
        """The next chunk of whichever actor finishes first; after a restart, that actor's start chunk."""
        ray = self.ray
        while True:
            # Only each actor's oldest request: its chunks must reach the replay in the order played.
            order = [(self._next + k) % len(self.actors) for k in range(len(self.actors))]
            heads = {self._inflight[i][0]: i for i in order if self._inflight[i]}
            started = time.perf_counter()
            try:
                ready = self._wait(list(heads), 1)
            except ray.exceptions.RayError as err:
                raise self._lost(err, env_steps) from None
            finally:
                self.env_seconds += time.perf_counter() - started
            i = heads[ready[0]]
            self._inflight[i].popleft()
            self._next = (i + 1) % len(self.actors)
            try:
                chunk = ray.get(ready[0])
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as err:
                return self._restart(i, err, env_steps)
            except ray.exceptions.RayError as err:
                raise self._lost(err, env_steps) from None
            if chunk.generation == self._generation[i]:
                return chunk

    def _lost(self, err: Exception, env_steps: int) -> EnvWorkerError:
        return EnvWorkerError(f"ray: lost the cluster at env step {env_steps}: {one_line(err)}")

    def _restart(self, i: int, err: Exception, env_steps: int) -> Chunk:
        ray, cfg = self.ray, self.cfg
        self._failures[i] += 1
        self._inflight[i].clear()
        n = self.run.env.num_envs
        what = f"ray actor {i} (lanes {i * n}-{(i + 1) * n - 1}) failed at env step {env_steps}: {one_line(err)}"
        if self._failures[i] > cfg.max_restarts:
            raise EnvWorkerError(f"{what}; that is more than collector.max_restarts={cfg.max_restarts} restarts")
        if isinstance(err, ray.exceptions.RayTaskError):  # alive, but its emulators raised: have Ray start it anew
            ray.kill(self.actors[i], no_restart=False)
        self.restarts += 1
        self._generation[i] += 1
        self._has_version[i] = -1  # a new process: it needs the weights with its next request
        seed = actor_seed(self._seed, i, self._generation[i])
        deadline = time.monotonic() + RESTART_WAIT_S
        while True:
            ref = self.actors[i].start.remote(seed, self._generation[i])
            if not self._wait([ref], 1, max(deadline - time.monotonic(), 0.0)):
                raise EnvWorkerError(f"{what}; not back after {RESTART_WAIT_S} s")
            try:
                chunk = ray.get(ref)
                break
            except ray.exceptions.ActorUnavailableError as again:  # still restarting
                if time.monotonic() > deadline:
                    raise EnvWorkerError(f"{what}; not back after {RESTART_WAIT_S} s: {one_line(again)}") from None
                time.sleep(0.5)
                self._raise_noted_stop()
            except ray.exceptions.RayError as again:
                raise EnvWorkerError(f"{what}; Ray could not restart it: {one_line(again)}") from None
        log.warning(
            "%s; Ray restarted it (%d of collector.max_restarts=%d), seed %d; its running episodes end as time-outs",
            what,
            self._failures[i],
            cfg.max_restarts,
            seed,
        )
        return chunk

    def worker_states(self) -> list[dict[str, Any]] | None:
        """The emulators' start-state pools and level outcomes, lane by lane, for a checkpoint; each
        actor answers once its queued chunks are played. None where an actor keeps none, or is gone,
        or does not answer within STATES_WAIT_S (STOP_STATES_WAIT_S once a stop is noted; after a
        stop that went unanswered, they are not asked again)."""
        if not self.actors:
            return self._pending_workers
        if self._given_up:
            return None
        refs = [a.worker_states.remote() for a in self.actors]
        why = "no answer within the wait"
        try:
            if len(self._wait(refs, len(refs), STATES_WAIT_S, stoppable=False)) == len(refs):
                per_actor = self.ray.get(refs)
                if any(states is None for states in per_actor):
                    return None
                return [state for states in per_actor for state in states]
        except self.ray.exceptions.RayError as err:
            why = one_line(err)
        self._given_up = self.noted_stop() is not None
        log.warning("ray: the actors' start states are not saved: %s", why)
        return None

    def restore_worker_states(self, states: list[dict[str, Any]] | None) -> None:
        """Worker states from a checkpoint, dealt out to the actors' emulators when they start."""
        self._pending_workers = states

    def worker_pids(self) -> list[int]:
        """Actors may run on other machines: no process of this one to report."""
        return []

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the actors, keeping their worker states for a checkpoint written after (they answer
        within STATES_WAIT_S or are saved without); shut Ray down if this collector started it.
        ``timeout_s`` is the local collector's: killing an actor does not wait for it."""
        if self.actors:
            self._pending_workers = self.worker_states()
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
        self._inflight = [deque() for _ in range(self.cfg.actors)]
        if self._owns_ray:
            self.ray.shutdown()
            self._owns_ray = False


Collector = LocalCollector | RayCollector


def make_collector(run: RunConfig, policy: EpsilonGreedy, make_envs: MakeEnvs, noted_stop: NotedStop) -> Collector:
    """The collector ``run.collector.kind`` names; ``noted_stop`` is for Ray's (see RayCollector)."""
    if run.collector.kind == "ray":
        return RayCollector(run, policy, make_envs, noted_stop)
    return LocalCollector(run, policy, make_envs)
