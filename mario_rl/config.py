"""Typed, validated view of the Hydra config.

The YAML files in conf/ are the interface and hold every default; these dataclasses are their
schema and hold none (``yaml_defaults``). ``load`` runs
once at start-up, before any env or network exists, and turns every bad value into a
ConfigError whose one-line message names the key and what is allowed.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mario_rl.errors import UserError

GAMES = ("smb", "lost_levels")
ACTIONS = ("right_only", "simple", "complex")
REWARDS = ("classic", "package")
VECTORS = ("async", "sync")
LEVEL_SAMPLINGS = ("uniform", "adaptive")
START_STATES = ("off", "frontier")
EPSILON_SCHEDULES = ("linear", "exponential")
COLLECTORS = ("local", "ray")
# One line for a run asked to use Ray where it is not installed.
RAY_MISSING = "collector=ray needs Ray, which is not installed: pip install -r requirements-ray.txt"
WORLDS = {"smb": "12345678", "lost_levels": "123456789ABCD"}


VIDEO_FORMATS = ("gif", "mp4")
# Seeds go to numpy's and Lightning's seeding, which take 0 .. 2**32 - 1.
SEED_LIMIT = 2**32


def auto_precision(accelerator: str) -> str:
    """Lightning precision for ``accelerator`` (cpu | gpu): bf16 autocast only where the hardware
    computes in bf16.

    Elsewhere bf16 is emulated: on an AVX2-only CPU a batch-32 update ran 1.1/s in bf16 against
    16/s in fp32, while a CPU with AVX-512 BF16 ran bf16 1.35x faster than fp32
    (docs/BENCHMARKS.md). torch is imported here, when the Trainer is built, not at validation.
    """
    import torch

    if accelerator == "gpu":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16-mixed"
        return "16-mixed"
    native_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return "bf16-mixed" if native_bf16 else "32-true"


OmegaConf.register_new_resolver("auto_precision", auto_precision, replace=True)


class ConfigError(UserError):
    """A user-facing configuration mistake; its message is the one line to print."""


# The one place defaults live: the YAML files, as conf/train.yaml and conf/evaluate.yaml compose them.
CONF = Path(__file__).resolve().parents[1] / "conf"


def yaml_defaults(entry: str) -> DictConfig:
    """The defaults of entry config ``entry`` (``train`` or ``evaluate``) as conf/ holds them: the
    entry file's own keys and, under their group's name, those of the group files its defaults
    list picks (``env: mario`` -> conf/env/mario.yaml). Interpolations stay unresolved.

    The dataclasses below are the schema of these values and hold none of their own, so a
    default changed in YAML is the default everywhere: in a run, in a checkpoint saved before a
    key existed, and in tests that build configs through ``default_run``.
    """
    plain = OmegaConf.to_container(OmegaConf.load(CONF / f"{entry}.yaml"), resolve=False)
    merged = OmegaConf.create({key: value for key, value in plain.items() if key != "defaults"})
    for item in plain.get("defaults", []):
        if not isinstance(item, dict):  # _self_
            continue
        ((group, choice),) = item.items()
        path = CONF / group / f"{choice}.yaml"
        if choice is not None and path.is_file():
            merged = OmegaConf.merge(merged, {group: _group_file(path)})
    return merged


def _group_file(path: Path) -> DictConfig:
    """A group file with the files of its own group that its defaults list names merged first, as
    Hydra composes it (conf/collector/local.yaml takes the Ray keys of ray.yaml)."""
    plain = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    merged = OmegaConf.create({})
    for item in plain.pop("defaults", []):
        if item != "_self_":
            merged = OmegaConf.merge(merged, _group_file(path.with_name(f"{item}.yaml")))
    return OmegaConf.merge(merged, plain)


@dataclass
class EnvConfig:
    game: str
    level: str
    levels: list[str] | None
    level_sampling: str
    level_window: int
    level_floor: float
    start_states: str
    start_state_prob: float
    start_state_pool: int
    start_state_lead: int
    actions: str
    reward: str
    frame_skip: int
    frame_stack: int
    frame_size: int
    crop: bool
    max_episode_steps: int | None
    stuck_patience: int | None
    release_jump: bool
    num_envs: int
    vector: str

    @property
    def training_levels(self) -> list[str]:
        """The levels training episodes are drawn from: ``levels`` when given, else ``[level]``."""
        return list(self.levels) if self.levels else [self.level]


@dataclass
class AgentConfig:
    gamma: float
    lr: float
    adam_eps: float
    grad_clip_norm: float | None
    huber_delta: float
    batch_size: int
    train_every: int
    learning_starts: int
    target_sync: int
    n_step: int
    dueling: bool
    double_q: bool
    random_shift: int
    epsilon_schedule: str
    epsilon_start: float
    epsilon_end: float
    epsilon_decay_steps: int
    epsilon_decay: float


@dataclass
class ReplayConfig:
    capacity: int
    save: bool
    max_ram_fraction: float
    prioritized: bool
    priority_alpha: float
    priority_beta_start: float
    priority_eps: float


@dataclass
class CollectorConfig:
    """Who runs the emulators (conf/collector/): ``local`` worker processes or ``ray`` actors.

    The ray keys are read only when kind is ray; conf/collector/ray.yaml says what each means.
    """

    kind: str
    address: str | None
    actors: int
    actor_cpus: float
    actor_resources: dict[str, float]
    chunk_steps: int
    weight_sync_every: int
    max_inflight: int
    epsilon_spread: float | None
    epsilon_base: float
    max_restarts: int


@dataclass
class RunConfig:
    env: EnvConfig
    agent: AgentConfig
    replay: ReplayConfig
    collector: CollectorConfig
    env_steps: int
    seed: int
    checkpoint_every: int


@dataclass
class EvaluateLevels:
    level: str | None
    levels: list[str] | None


@dataclass
class EvaluateConfig:
    """evaluate.py's settings; the env and network settings come from the checkpoint."""

    ckpt_path: str
    episodes: int
    epsilon: float
    seed: int
    video: bool
    video_format: str
    env: EvaluateLevels

    @property
    def requested_levels(self) -> list[str] | None:
        """The levels asked for, or None for the checkpoint's training level."""
        return [self.env.level] if self.env.level else self.env.levels


def game_levels(game: str) -> list[str]:
    """Every single-stage level of a game, e.g. ['1-1', ..., '8-4']."""
    return [f"{w}-{s}" for w in WORLDS[game] for s in "1234"]


def _one_of(key: str, value: str, allowed: tuple[str, ...] | list[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {', '.join(allowed)}")


def _check(key: str, ok: bool, allowed: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed; it must be {allowed}")


def check_level(game: str, level: str, key: str = "env.level") -> None:
    """Reject a level the game does not have, listing the ones it does.

    A level is W-S of ``game``, or ``<game>:W-S`` of another (``lost_levels:1-1`` in an smb run).
    """
    level = str(level)
    own, stage = level.split(":", 1) if ":" in level else (game, level)
    if own not in GAMES:
        raise ConfigError(f"{key}={level!r} names no game; use W-S, or <game>:W-S with game one of {', '.join(GAMES)}")
    if not re.fullmatch(r"[0-9A-D]-[1-4]", stage) or stage not in game_levels(own):
        worlds = WORLDS[own]
        raise ConfigError(
            f"{key}={level!r} is not a level of {own}; use W-S with W in {worlds[0]}..{worlds[-1]} "
            "and S in 1..4, e.g. 1-1"
        )


def check_levels(game: str, names: list[str] | None, key: str) -> None:
    """A list of levels: non-empty, each a level (check_level), none twice."""
    if names is None:
        return
    _check(key, len(names) >= 1, "a non-empty list of levels, e.g. [1-1,1-2]", names)
    for name in names:
        check_level(game, name, key=key)
    repeated = sorted({str(n) for n in names if list(names).count(n) > 1})
    if repeated:
        raise ConfigError(f"{key}={list(names)!r} lists {', '.join(repeated)} more than once; give each level once")


def check_level_overrides(overrides: list[str] | tuple[str, ...]) -> None:
    """``env.level`` and ``env.levels`` on one command line: one of them would be ignored."""
    keys = {o.lstrip("+~").split("=", 1)[0] for o in overrides}
    if {"env.level", "env.levels"} <= keys:
        raise ConfigError("env.level and env.levels are both set; give one level or a list, not both")


def lanes(run: RunConfig) -> int:
    """Emulators of the run, one replay lane each: env.num_envs, times collector.actors with Ray."""
    actors = run.collector.actors if run.collector.kind == "ray" else 1
    return actors * run.env.num_envs


def validate_collector(collector: CollectorConfig) -> None:
    """The collector's keys; Ray itself must be installed for ``collector=ray``."""
    _one_of("collector.kind", collector.kind, COLLECTORS)
    if collector.kind != "ray":
        return
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(RAY_MISSING)
    _check("collector.actors", collector.actors >= 1, "an integer >= 1", collector.actors)
    _check("collector.actor_cpus", collector.actor_cpus > 0, "> 0", collector.actor_cpus)
    for name, amount in collector.actor_resources.items():
        _check(f"collector.actor_resources.{name}", amount > 0, "> 0", amount)
    _check("collector.chunk_steps", collector.chunk_steps >= 1, "an integer >= 1 (vector steps)", collector.chunk_steps)
    every = collector.weight_sync_every
    _check("collector.weight_sync_every", every >= 1, "an integer >= 1 (env steps)", every)
    _check("collector.max_inflight", collector.max_inflight >= 1, "an integer >= 1 (chunks)", collector.max_inflight)
    spread = collector.epsilon_spread
    _check("collector.epsilon_spread", spread is None or spread >= 0, "null (the run's schedule) or >= 0", spread)
    _check("collector.epsilon_base", 0.0 <= collector.epsilon_base <= 1.0, "in [0, 1]", collector.epsilon_base)
    _check("collector.max_restarts", collector.max_restarts >= 0, "an integer >= 0", collector.max_restarts)


def validate(run: RunConfig) -> None:
    """Range checks the type system cannot express."""
    env, agent, replay = run.env, run.agent, run.replay
    _one_of("env.game", env.game, GAMES)
    check_level(env.game, env.level)
    check_levels(env.game, env.levels, "env.levels")
    _one_of("env.level_sampling", env.level_sampling, LEVEL_SAMPLINGS)
    _check("env.level_window", env.level_window >= 1, "an integer >= 1 (episodes)", env.level_window)
    _check("env.level_floor", 0.0 < env.level_floor <= 1.0, "in (0, 1]", env.level_floor)
    _one_of("env.start_states", env.start_states, START_STATES)
    _check("env.start_state_prob", 0.0 <= env.start_state_prob <= 1.0, "in [0, 1]", env.start_state_prob)
    _check(
        "env.start_state_pool", env.start_state_pool >= 1, "an integer >= 1 (states per level)", env.start_state_pool
    )
    _check("env.start_state_lead", env.start_state_lead >= 1, "an integer >= 1 (agent steps)", env.start_state_lead)
    _one_of("env.actions", env.actions, ACTIONS)
    _one_of("env.reward", env.reward, REWARDS)
    _one_of("env.vector", env.vector, VECTORS)
    _check("env.frame_skip", env.frame_skip >= 2, "an integer >= 2", env.frame_skip)
    _check("env.frame_stack", env.frame_stack >= 1, "an integer >= 1", env.frame_stack)
    _check("env.frame_size", 36 <= env.frame_size <= 240, "an integer in [36, 240]", env.frame_size)
    _check("env.num_envs", env.num_envs >= 1, "an integer >= 1", env.num_envs)
    for key in ("max_episode_steps", "stuck_patience"):
        value = getattr(env, key)
        _check(f"env.{key}", value is None or value >= 1, "null or an integer >= 1", value)

    _check("agent.gamma", 0.0 < agent.gamma <= 1.0, "in (0, 1]", agent.gamma)
    _check("agent.lr", agent.lr > 0, "> 0", agent.lr)
    _check("agent.adam_eps", agent.adam_eps > 0, "> 0", agent.adam_eps)
    clip = agent.grad_clip_norm
    _check("agent.grad_clip_norm", clip is None or clip > 0, "null (no clipping) or > 0", clip)
    _check("agent.huber_delta", agent.huber_delta > 0, "> 0 (reward units)", agent.huber_delta)
    _check("agent.batch_size", agent.batch_size >= 1, "an integer >= 1", agent.batch_size)
    _check("agent.train_every", agent.train_every >= 1, "an integer >= 1", agent.train_every)
    _check("agent.learning_starts", agent.learning_starts >= 0, "an integer >= 0", agent.learning_starts)
    _check("agent.target_sync", agent.target_sync >= 1, "an integer >= 1 (env steps)", agent.target_sync)
    _check("agent.n_step", agent.n_step >= 1, "an integer >= 1", agent.n_step)
    limit = env.frame_size // 2
    _check("agent.random_shift", 0 <= agent.random_shift < limit, f"an integer in [0, {limit})", agent.random_shift)
    _one_of("agent.epsilon_schedule", agent.epsilon_schedule, EPSILON_SCHEDULES)
    for key in ("epsilon_start", "epsilon_end"):
        value = getattr(agent, key)
        _check(f"agent.{key}", 0.0 <= value <= 1.0, "in [0, 1]", value)
    _check("agent.epsilon_decay_steps", agent.epsilon_decay_steps >= 1, "an integer >= 1", agent.epsilon_decay_steps)
    _check("agent.epsilon_decay", 0.0 < agent.epsilon_decay <= 1.0, "in (0, 1]", agent.epsilon_decay)

    validate_collector(run.collector)
    _check("replay.capacity", replay.capacity >= 1, "an integer >= 1", replay.capacity)
    streams = lanes(run)
    needed = env.frame_stack + agent.n_step + 1
    emulators = "env.num_envs" if run.collector.kind == "local" else "collector.actors * env.num_envs"
    _check(
        "replay.capacity",
        replay.capacity // streams >= needed,
        f">= {emulators} * (env.frame_stack + agent.n_step + 1) = {streams * needed}",
        replay.capacity,
    )
    _check(
        "agent.batch_size",
        agent.batch_size <= replay.capacity,
        f"<= replay.capacity ({replay.capacity})",
        agent.batch_size,
    )
    _check("replay.max_ram_fraction", 0 < replay.max_ram_fraction <= 1, "in (0, 1]", replay.max_ram_fraction)
    _check("replay.priority_alpha", 0.0 <= replay.priority_alpha <= 1.0, "in [0, 1]", replay.priority_alpha)
    beta = replay.priority_beta_start
    _check("replay.priority_beta_start", 0.0 <= beta <= 1.0, "in [0, 1]", beta)
    _check("replay.priority_eps", replay.priority_eps > 0, "> 0", replay.priority_eps)
    _check("env_steps", run.env_steps >= 1, "an integer >= 1", run.env_steps)
    _check("checkpoint_every", run.checkpoint_every >= 1, "an integer >= 1 (env steps)", run.checkpoint_every)
    check_seed("seed", run.seed)


def check_seed(key: str, seed: int, count: int = 1) -> None:
    """Reject a seed numpy cannot take; ``count`` seeds seed, seed + 1, ... are used from it."""
    _check(key, 0 <= seed <= SEED_LIMIT - count, f"an integer in [0, {SEED_LIMIT - count}]", seed)


def check_budget(run: RunConfig) -> None:
    """A budget that ends before the first update trains nothing: say so before the run starts."""
    first = max(run.agent.learning_starts, run.agent.batch_size)
    _check(
        "env_steps",
        run.env_steps > first,
        f"> {first}, the env step of the first update (max of agent.learning_starts and agent.batch_size); "
        "a shorter run makes no update",
        run.env_steps,
    )


def _typed[T](schema: type[T], cfg: DictConfig) -> T:
    """The keys of ``cfg`` that ``schema`` knows, over their YAML defaults, typed by ``schema``;
    type errors become ConfigErrors. A key ``cfg`` lacks keeps its default from conf/.

    trainer, logger, callbacks, paths and hydra are ``_target_`` blocks that Lightning and Hydra
    validate themselves.
    """
    entry = "evaluate" if schema is EvaluateConfig else "train"
    defaults = yaml_defaults(entry)
    known = [f.name for f in fields(schema)]  # type: ignore[arg-type]
    base = {name: defaults[name] for name in known if name in defaults}
    picked = {name: cfg[name] for name in known if name in cfg}
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), base, picked))  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "config"
        reason = str(err).splitlines()[0]
        raise ConfigError(f"{key}: {reason}") from None


def default_run(**overrides: Any) -> RunConfig:
    """The run conf/train.yaml describes, with ``overrides`` on top (``env={"num_envs": 2}``,
    ``env_steps=400``); not range-checked (``validate`` does that). For code that needs a run
    config without a Hydra command line: tests, benchmarks, checkpoints saved before a key existed.
    """
    return _typed(RunConfig, OmegaConf.create(overrides))


def load(cfg: DictConfig) -> RunConfig:
    """Merge the Hydra config onto the schema and validate it, alone and as a training budget.

    With ``env.levels`` given, ``env.level`` is set to its first level, the one a single-level
    consumer (the evaluation GIF, error messages) names.
    """
    run = _typed(RunConfig, cfg)
    validate(run)
    check_budget(run)
    if run.env.levels:
        run.env.levels = [str(level) for level in run.env.levels]
        run.env.level = run.env.levels[0]
    return run


def _integer(key: str, value: Any, minimum: int, nullable: bool = False) -> None:
    if nullable and value is None:
        return
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    _check(key, ok, f"{'null or ' * nullable}an integer >= {minimum}", value)


def _real(key: str, value: Any, ok: bool, allowed: str) -> None:
    _check(key, isinstance(value, int | float) and not isinstance(value, bool) and ok, allowed, value)


def check_training_blocks(cfg: DictConfig, run: RunConfig) -> None:
    """The numbers of train.py that are not the run's own: learner threads, the trainer's logging
    interval, and the callbacks of conf/callbacks (each checked only where the config has it).

    Lightning and Hydra would reject some of them only after the run is built, wrapped in a
    traceback; the evaluation's seeds must also fit numpy's seeding.
    """
    _integer("torch_threads", cfg.get("torch_threads"), 1, nullable=True)
    trainer = cfg.get("trainer") or {}
    if "log_every_n_steps" in trainer:
        _integer("trainer.log_every_n_steps", trainer.log_every_n_steps, 1)
    callbacks = cfg.get("callbacks") or {}
    if callbacks.get("eval"):  # first: the checkpoint blocks interpolate its period
        _check_evaluation(callbacks.eval, run)
    for name in ("model_checkpoint", "best_checkpoint"):
        if "every" in (callbacks.get(name) or {}):
            _integer(f"callbacks.{name}.every", callbacks[name].every, 1)
    if "window_s" in (callbacks.get("throughput") or {}):
        window = callbacks.throughput.window_s
        _real("callbacks.throughput.window_s", window, isinstance(window, int | float) and window > 0, "> 0 (seconds)")
    if "refresh_rate" in (callbacks.get("progress_bar") or {}):
        _integer("callbacks.progress_bar.refresh_rate", callbacks.progress_bar.refresh_rate, 0)


def _check_evaluation(block: DictConfig, run: RunConfig) -> None:
    """conf/callbacks' evaluation during training (mario_rl.callbacks.Evaluation)."""
    key = "callbacks.eval"
    _integer(f"{key}.every", block.get("every"), 1)
    episodes = block.get("episodes")
    _integer(f"{key}.episodes", episodes, 1)
    epsilon = block.get("epsilon")
    _real(f"{key}.epsilon", epsilon, isinstance(epsilon, int | float) and 0 <= epsilon <= 1, "in [0, 1]")
    for name in ("max_episode_steps", "stuck_patience"):
        _integer(f"{key}.{name}", block.get(name), 1, nullable=True)
    seed = block.get("seed", 0)
    _integer(f"{key}.seed", seed, 0)
    check_seed(f"{key}.seed", seed, episodes)
    for level in block.get("levels") or []:
        check_level(run.env.game, str(level), key=f"{key}.levels")


def load_train(cfg: DictConfig) -> RunConfig:
    """train.py's whole config: the run (``load``) and the numbers around it (``check_training_blocks``)."""
    run = load(cfg)
    check_training_blocks(cfg, run)
    return run


def run_dict(run: RunConfig) -> dict[str, Any]:
    """Plain-dict form of the run config, as stored in checkpoints, exports and TensorBoard hparams."""
    return asdict(run)


def run_config_from(hparams: dict[str, Any]) -> RunConfig:
    """Rebuild the typed RunConfig saved in a checkpoint's hyperparameters (not validated).

    A key the file lacks gets its default from conf/. Except one: a file saved before
    ``env.release_jump`` existed was trained on the raw pad, so it gets ``false``, not today's
    default: its agent then plays as it learned.
    """
    run = default_run(**hparams["run"])
    if "release_jump" not in hparams["run"].get("env", {}):
        run.env.release_jump = False
    return run


def load_evaluate(cfg: DictConfig) -> EvaluateConfig:
    """The evaluate config, typed and range-checked. Levels are checked later, against the
    game the checkpoint was trained on."""
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.get("ckpt_path"):
        raise ConfigError(
            "ckpt_path is required: a .ckpt written by train.py or a .safetensors file from "
            "python -m mario_rl.export, e.g. ckpt_path=outputs/<date>/<time>/checkpoints/last.ckpt"
        )
    settings = _typed(EvaluateConfig, cfg)
    _check("episodes", settings.episodes >= 1, "an integer >= 1", settings.episodes)
    check_seed("seed", settings.seed, settings.episodes)  # episode i plays with seed + i
    _check("epsilon", 0.0 <= settings.epsilon <= 1.0, "in [0, 1]", settings.epsilon)
    _one_of("video_format", settings.video_format, VIDEO_FORMATS)
    if settings.env.level and settings.env.levels:
        raise ConfigError("env.level and env.levels are both set; give one level or a list, not both")
    repeated = settings.env.levels and len(set(settings.env.levels)) < len(settings.env.levels)
    _check(
        "env.levels",
        settings.requested_levels is None or (len(settings.requested_levels) >= 1 and not repeated),
        "a non-empty list of distinct levels",
        settings.requested_levels,
    )
    return settings
