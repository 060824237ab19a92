"""evaluate(cfg): play a trained agent on its levels and say how well it did, as a table and videos.

People judge an agent by x_pos reached and levels cleared, and by watching it, more than
by its return. Every episode's seed is recorded, and episode i of a level is a function of
its seed alone (the emulator is deterministic; the seed drives epsilon's coin flips), so any
row of results.json can be played again.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from omegaconf import DictConfig
from torch import nn

from mario_rl.config import ConfigError, EnvConfig, check_level, load_evaluate
from mario_rl.envs import make_env
from mario_rl.episodes import Episode
from mario_rl.export import load_agent
from mario_rl.levels import level_tag
from mario_rl.policy import EpsilonGreedy
from mario_rl.video import open_writer, record_episode

log = logging.getLogger(__name__)

RESULTS = "results"
COLUMNS = {  # summary key -> markdown header and format
    "level": ("level", "{}"),
    "episodes": ("episodes", "{}"),
    "return_mean": ("return mean", "{:.1f}"),
    "return_median": ("return median", "{:.1f}"),
    "x_pos_mean": ("x_pos mean", "{:.1f}"),
    "x_pos_max": ("x_pos max", "{}"),
    "clear_rate": ("clear rate", "{:.0%}"),
    "length_mean": ("length mean", "{:.1f}"),
    "steps_per_s": ("steps/s", "{:.0f}"),
}


# An evaluated episode's fields in results.json's records, in this order.
RECORD_FIELDS = ("seed", "episode_return", "length", "x_pos", "clear", "terminated")


def row(record: Episode) -> dict[str, Any]:
    """An evaluated episode as a row of results.json's records."""
    return {key: getattr(record, key) for key in RECORD_FIELDS}


def play_episode(env: gym.Env, net: nn.Module, epsilon: float, seed: int) -> Episode:
    """One episode, epsilon-greedy on ``net``, all of its randomness drawn from ``seed``."""
    policy = EpsilonGreedy(net, int(env.action_space.n), seed=seed)
    obs, info = env.reset(seed=seed)
    actions: list[int] = []
    total = 0.0
    terminated = truncated = False
    while not (terminated or truncated):
        action = int(policy(obs[None], epsilon)[0])
        obs, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        actions.append(action)
    return Episode(
        episode_return=total,
        length=len(actions),
        x_pos=int(info["x_pos"]),
        clear=bool(info["flag_get"]),
        seed=seed,
        terminated=bool(terminated),
        actions=actions,
    )


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Batch-1 forwards run fastest on one thread: on two, each op waits for the thread that a
    busy core (a training run, env workers) pre-empted. The caller's thread count comes back after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def play_level(
    env_cfg: EnvConfig,
    level: str,
    net: nn.Module,
    episodes: int,
    epsilon: float,
    seed: int,
    before_episode: Callable[[], None] | None = None,
) -> tuple[list[Episode], float]:
    """``episodes`` episodes with seeds seed, seed + 1, ... on a fresh env; and the seconds they took.
    ``before_episode`` runs before each one and may raise to abandon the level (a training run's
    noted stop, which then waits one episode at most, not the whole evaluation)."""
    env = make_env(env_cfg, level)
    started = time.perf_counter()
    records = []
    try:
        with one_torch_thread():
            for i in range(episodes):
                if before_episode is not None:
                    before_episode()
                records.append(play_episode(env, net, epsilon, seed + i))
    finally:
        env.close()
    return records, time.perf_counter() - started


def summarize(level: str, records: list[Episode], seconds: float) -> dict[str, Any]:
    """One row of the results table."""
    returns = [r.episode_return for r in records]
    xs = [r.x_pos for r in records]
    return {
        "level": level,
        "episodes": len(records),
        "return_mean": statistics.fmean(returns),
        "return_median": statistics.median(returns),
        "x_pos_mean": statistics.fmean(xs),
        "x_pos_max": max(xs),
        "clear_rate": statistics.fmean(r.clear for r in records),
        "length_mean": statistics.fmean(r.length for r in records),
        "steps_per_s": sum(r.length for r in records) / seconds,
    }


def best_index(records: list[Episode]) -> int:
    """The episode that got furthest (then: highest return; then: the earliest)."""
    return max(range(len(records)), key=lambda i: (records[i].x_pos, records[i].episode_return, -i))


def save_video(env_cfg: EnvConfig, level: str, record: Episode, path: Path) -> dict[str, Any]:
    """Play ``record`` again into a video at ``path`` (GIF or MP4 by suffix), checking it is the same episode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = open_writer(path)
    seen = record_episode(env_cfg, level, record.seed, record.actions, writer)
    if (seen.length, seen.x_pos) != (record.length, record.x_pos) or not math.isclose(
        seen.episode_return, record.episode_return, abs_tol=1e-6
    ):
        raise RuntimeError(f"the second play of {level} seed {record.seed} for {path} diverged: {seen} vs {record}")
    return {"nes_frames": seen.nes_frames, "video_frames": writer.frames, "bytes": path.stat().st_size}


def markdown(summary: list[dict[str, Any]]) -> str:
    """The results table as GitHub markdown."""
    head = "| " + " | ".join(name for name, _ in COLUMNS.values()) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    rows = ["| " + " | ".join(fmt.format(row[k]) for k, (_, fmt) in COLUMNS.items()) + " |" for row in summary]
    return "\n".join([head, rule, *rows]) + "\n"


def _write(out: Path, results: dict[str, Any]) -> None:
    (out / f"{RESULTS}.json").write_text(json.dumps(results, indent=2) + "\n")
    with (out / f"{RESULTS}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(results["summary"])
    (out / f"{RESULTS}.md").write_text(
        f"{results['ckpt_path']}: {results['episodes']} episodes per level, epsilon {results['epsilon']}, "
        f"{results['reward']} reward\n\n{markdown(results['summary'])}"
    )


def _videos(
    env_cfg: EnvConfig, level: str, records: list[Episode], out: Path, video_format: str
) -> Iterator[dict[str, Any]]:
    """The first and the best episode of a level (one file when they are the same episode)."""
    roles: dict[int, list[str]] = {0: ["first"]}
    roles.setdefault(best_index(records), []).append("best")
    for i, names in roles.items():
        path = out / "videos" / f"{level_tag(level)}_ep{i:02d}_{'-'.join(names)}.{video_format}"
        facts = save_video(env_cfg, level, records[i], path)
        log.info("video %s: %d NES frames, %.1f MB", path, facts["nes_frames"], facts["bytes"] / 1e6)
        yield {"level": level, "episode": i, "roles": names, "path": str(path.relative_to(out)), **facts}


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Play ``episodes`` episodes on each level, write results.{json,csv,md} [and videos] to the run dir.

    Returns what results.json holds: the settings, one summary row per level, every
    episode's record and the videos written.
    """
    settings = load_evaluate(cfg)
    out = Path(cfg.paths.output_dir)
    if (out / f"{RESULTS}.json").exists():
        raise ConfigError(f"{out} already holds {RESULTS}.json; each evaluation writes to a new dir")
    run, net = load_agent(settings.ckpt_path)
    levels = [str(level) for level in settings.requested_levels or run.env.training_levels]
    for level in levels:
        check_level(run.env.game, level, key="env.level" if settings.env.level else "env.levels")
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "ckpt_path": settings.ckpt_path,
        "game": run.env.game,
        "reward": run.env.reward,
        "episodes": settings.episodes,
        "epsilon": settings.epsilon,
        "seed": settings.seed,
        "env": asdict(run.env),
        "summary": [],
        "records": [],
        "videos": [],
    }
    for level in levels:
        records, seconds = play_level(run.env, level, net, settings.episodes, settings.epsilon, settings.seed)
        results["summary"].append(summarize(level, records, seconds))
        results["records"] += [{"level": level, "episode": i, **row(r)} for i, r in enumerate(records)]
        if settings.video:
            results["videos"] += list(_videos(run.env, level, records, out, settings.video_format))
    _write(out, results)
    log.info("results in %s", out)
    return results
