"""Resume a run: which checkpoint, what a resume may change, and what it restores.

``python train.py ckpt_path=last [overrides]`` continues a run where its checkpoint left it,
in the run's own directory. ``prepare`` does everything that can be decided before the Trainer
exists, so a resume that cannot work says why in one line before any emulator starts:

1. ``resolve_ckpt_path``: ``last`` is this run dir's last.ckpt, else the newest one under
   outputs/; a run dir (or its checkpoints/) stands for its last.ckpt.
2. ``read_resumable``: only a full training checkpoint resumes. A weights-only best.ckpt, an
   exported .safetensors, a foreign, truncated or empty file is refused, naming the file.
3. ``resumed_run``: the checkpoint's run config, plus the run keys this command line names.
   A key that sizes the network (``NETWORK``) cannot change; one that lays out the saved replay
   (``REPLAY_LAYOUT``) cannot change while that replay is restored; the budget must lie beyond
   the checkpoint (and beyond the refill of a replay that is gone).
4. ``continue_in``: that run, and the evaluation settings the run had, go into the Hydra config,
   so the callbacks built from it follow the run, not this command's defaults, unless the
   command names them; the run dir becomes the output dir.

Lightning then restores both networks, the optimizer (with the run's lr and eps), the update
count and the callbacks' state (the best evaluation score). Once the stream exists,
``restore_stream`` puts back its counters and random states and the replay; without a saved
replay the stream collects a warm-up's worth of env steps before updates resume.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from mario_rl.checkpointing import LAST, load_checkpoint
from mario_rl.config import ConfigError, RunConfig, check_training_blocks, lanes, load, run_config_from, run_dict
from mario_rl.errors import one_line
from mario_rl.replay import saved_replay

if TYPE_CHECKING:
    from mario_rl.data import ExperienceStream

log = logging.getLogger(__name__)

_RUN_KEYS = {f.name for f in fields(RunConfig)}
_UNSET = object()
REPLAY = Path("checkpoints") / "replay"  # inside the run dir
EVAL_BLOCK = "eval"  # conf/callbacks' key of the evaluation callback
EVAL_STATE = "Evaluation"  # its state key in a checkpoint: Lightning's default, the class name

# Keys a resume cannot change, and what they size.
NETWORK = {
    "env.frame_stack": "the network's input channels",
    "env.frame_size": "the network's input and the replay's frames",
    "env.actions": "the network's output, one Q-value per action",
    "agent.dueling": "the network's head",
}
REPLAY_LAYOUT = {
    "env.num_envs": "the saved replay holds one ring of frames per worker",
    "collector.actors": "with collector=ray the saved replay holds one ring of frames per emulator of each actor",
    "replay.capacity": "the saved replay's rings hold replay.capacity / emulators slots each",
}


@dataclass
class Resume:
    """A resume that can go ahead: the checkpoint, the run it continues and where it writes."""

    ckpt_path: Path
    run: RunConfig
    run_dir: Path
    replay: Path | None  # the saved replay restore_stream will load; None: refilled


def resolve_ckpt_path(value: str | None, run_dir: Path, outputs: Path = Path("outputs")) -> Path | None:
    """``ckpt_path`` as given: null, a file, a run dir (or its checkpoints/), or ``last``.

    ``last`` is this run dir's last.ckpt when there is one (``hydra.run.dir=<old run>``),
    else the newest last.ckpt under outputs/.
    """
    if value is None:
        return None
    if value == "last":
        own = run_dir / "checkpoints" / LAST
        if own.is_file():
            return own
        found = sorted(outputs.glob(f"**/checkpoints/{LAST}"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ConfigError(f"ckpt_path=last: no checkpoints/{LAST} in {run_dir} or under {outputs}/ to resume from")
        return found[-1]
    path = Path(value)
    if path.is_dir():
        for candidate in (path / "checkpoints" / LAST, path / LAST):
            if candidate.is_file():
                return candidate
        raise ConfigError(
            f"ckpt_path={value}: a directory without checkpoints/{LAST} or {LAST}; "
            "give a run dir, its checkpoints/ dir or a .ckpt file"
        )
    if not path.is_file():
        raise ConfigError(f"ckpt_path={value}: no such file")
    return path


def _is_safetensors(path: Path) -> bool:
    """A safetensors file starts with its header's length (8 bytes, little-endian), then the JSON header."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def read_resumable(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path``, if it can resume a run; else a ConfigError saying what it is."""
    if path.stat().st_size == 0:
        raise ConfigError(f"checkpoint {path}: the file is empty (a save that never finished?)")
    if _is_safetensors(path):
        raise ConfigError(
            f"checkpoint {path}: an exported model (online weights and run config): evaluate.py plays it, "
            f"but a resume needs a training checkpoint such as <run>/checkpoints/{LAST}"
        )
    ckpt = load_checkpoint(path)
    if "optimizer_states" not in ckpt:
        raise ConfigError(
            f"checkpoint {path}: weights only (best.ckpt keeps the weights of the best evaluation, for evaluate.py "
            f"and mario_rl.export); resume from {LAST} or an env_steps_<N>.ckpt of the run"
        )
    if not isinstance(ckpt.get("stream"), dict):
        raise ConfigError(f"checkpoint {path}: no stream state (env steps, random states) to continue from")
    return ckpt


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def resumed_run(ckpt: dict[str, Any], cfg: DictConfig, overrides: Sequence[str], path: Path) -> RunConfig:
    """The run config a resume continues with: the checkpoint's, plus what this command line set.

    So ``python train.py ckpt_path=last`` continues the run as it was configured, and
    ``ckpt_path=last env_steps=2000000`` only extends its budget. Keys in ``NETWORK`` must
    stay as the checkpoint has them.
    """
    try:
        saved = run_config_from(ckpt["hyper_parameters"])
    except OmegaConfBaseException as err:
        raise ConfigError(f"checkpoint {path}: its run config does not fit this mario-rl ({one_line(err)})") from None
    merged = OmegaConf.create(run_dict(saved))
    keys = set()
    for override in overrides:
        key = _key(override)
        value = OmegaConf.select(cfg, key, default=_UNSET)
        if key.split(".")[0] in _RUN_KEYS and value is not _UNSET:  # null is a value: agent.grad_clip_norm=null
            OmegaConf.update(merged, key, value, force_add=True)
            keys.add(key)
    if "env.level" in keys and "env.levels" not in keys:  # one level now replaces the run's list
        OmegaConf.update(merged, "env.levels", None, force_add=True)
    run = load(merged)
    check_unchanged(saved, run, path, NETWORK, "leave it out to continue, or start a new run")
    return run


def check_unchanged(saved: RunConfig, run: RunConfig, path: Path, keys: dict[str, str], way_out: str) -> None:
    """One line naming the first of ``keys`` that differs between the checkpoint's run and this one."""
    for key, what in keys.items():
        old, new = OmegaConf.select(OmegaConf.structured(saved), key), OmegaConf.select(OmegaConf.structured(run), key)
        if key == "collector.actors":  # Ray's actors each bring env.num_envs rings; local workers are one set
            old, new = lanes(saved) // saved.env.num_envs, lanes(run) // run.env.num_envs
        if key == "replay.capacity":  # what lays the replay out is the slots per emulator
            old, new = old // lanes(saved), new // lanes(run)
            if old == new:
                continue
            old, new = saved.replay.capacity, run.replay.capacity
        if old != new:
            raise ConfigError(
                f"{key}={new!r} cannot change on resume: checkpoint {path} has {key}={old!r} ({what}); {way_out}"
            )


def continue_in(cfg: DictConfig, run: RunConfig, ckpt: dict[str, Any], overrides: Sequence[str]) -> None:
    """Write the resumed run into ``cfg``, so what interpolates it follows the run, not this
    command's defaults: the checkpoint cadence (a resumed ``experiment=seed_notebook`` run saves
    every 10,000 env steps as configured), the trainer's gradient clipping. The evaluation
    callback's settings come back as the run had them (episodes, epsilon, step caps, levels,
    seed, cadence), so eval/* keeps its meaning along the curve; the ones this command names apply.
    """
    named = {_key(o) for o in overrides}
    with open_dict(cfg):
        for key, value in run_dict(run).items():
            cfg[key] = value
        block = (cfg.get("callbacks") or {}).get(EVAL_BLOCK)
        saved = (ckpt.get("callbacks") or {}).get(EVAL_STATE) or {}
        for name, value in saved.items():
            if block is None or f"callbacks.{EVAL_BLOCK}.{name}" in named:
                continue
            if name == "every" and "checkpoint_every" in named:  # it interpolates checkpoint_every
                continue
            block[name] = value


def run_dir_of(ckpt: Path) -> Path | None:
    """The run directory a checkpoint belongs to (…/<run>/checkpoints/x.ckpt), if it has one."""
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None


def prepare(cfg: DictConfig, overrides: Sequence[str]) -> Resume | None:
    """Everything a resume decides before the Trainer exists; None when ``ckpt_path`` is null.

    Rewrites ``cfg`` to continue the run (``continue_in``) in its own dir. Raises a ConfigError
    for a file that cannot resume, a key that cannot change, or a budget with nothing left.
    """
    path = resolve_ckpt_path(cfg.get("ckpt_path"), Path(cfg.paths.output_dir))
    if path is None:
        return None
    ckpt = read_resumable(path)
    run = resumed_run(ckpt, cfg, overrides, path)
    saved = run_config_from(ckpt["hyper_parameters"])
    run_dir = run_dir_of(path) or Path(cfg.paths.output_dir)
    replay = saved_replay(run_dir / REPLAY)
    if replay is not None:
        check_unchanged(
            saved, run, path, REPLAY_LAYOUT, f"leave it out, or delete {replay} to resume with an empty replay"
        )
    at = int(ckpt["stream"]["env_steps"])
    if run.env_steps <= at:
        raise ConfigError(
            f"env_steps={run.env_steps}: checkpoint {path} is already at {at} env steps; give a larger env_steps"
        )
    refilled = at + max(run.agent.learning_starts, run.agent.batch_size)
    if replay is None and run.env_steps <= refilled:
        raise ConfigError(
            f"env_steps={run.env_steps}: no saved replay in {run_dir / REPLAY}, so the run refills it until env "
            f"step {refilled} before its next update; give env_steps above that"
        )
    continue_in(cfg, run, ckpt, overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)  # the same checkpoints, replay and event files
    check_training_blocks(cfg, run)
    return Resume(path, run, run_dir, replay)


def restore_stream(stream: ExperienceStream, saved: dict[str, Any], replay_dir: Path | None) -> None:
    """Put a checkpoint's stream state (``saved``: its stream, global_step and replay_written) into
    a new stream, with the replay saved in ``replay_dir``; without one, the stream refills first."""
    state = dict(saved["stream"])
    # Lightning fetches one batch ahead of training, so the stream counted a batch that was
    # never trained on; the trained count is the global step.
    state["updates"] = saved["global_step"]
    stream.load_state_dict(state)
    found = saved_replay(replay_dir) if replay_dir else None
    if found is None:
        warmup = stream.refill()
        log.warning(
            "replay: none saved in %s (replay.save=false, or deleted); collecting %d env steps, to env step %d, "
            "before updates resume",
            replay_dir,
            warmup,
            stream.learning_from,
        )
        return
    stream.replay.load(found)
    written = saved.get("replay_written")
    if written is not None and stream.replay.written.tolist() != written:
        log.warning(
            "replay in %s was saved at another point than the checkpoint (slots written %s, checkpoint %s); "
            "using it anyway",
            found,
            stream.replay.written.tolist(),
            written,
        )
