"""The trained agent as a file: read a training checkpoint or an exported .safetensors, write the latter.

A Lightning checkpoint carries the optimizer, the target net and the stream's state for
resuming; playing needs only the online net and the settings it was trained with. The export
keeps just those: the online weights as safetensors (no pickle, so opening a file from
someone else runs no code) and the RunConfig as JSON in the file's metadata.

    python -m mario_rl.export outputs/<date>/<time>/checkpoints/best.ckpt agent.safetensors [--dtype float16]

``--dtype float16`` halves the file (the dueling net: 13.2 -> 6.6 MB) for shipping; loading
casts back to float32, so only the weights' last bits differ.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from omegaconf.errors import OmegaConfBaseException
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from mario_rl import atomic
from mario_rl.checkpointing import load_checkpoint
from mario_rl.config import ConfigError, RunConfig, run_config_from, run_dict, validate
from mario_rl.envs import num_actions
from mario_rl.errors import one_line, user_errors_exit
from mario_rl.nets import NatureCNN

RUN_KEY = "mario_rl.run"
DTYPES = {"float32": torch.float32, "float16": torch.float16}
ONLINE_PREFIX = "online."


def _read_ckpt(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    ckpt = load_checkpoint(path)
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: not a mario-rl checkpoint (it has no state_dict)")
    online = {k.removeprefix(ONLINE_PREFIX): v for k, v in state.items() if k.startswith(ONLINE_PREFIX)}
    return ckpt["hyper_parameters"], online


def _read_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            weights = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError) as err:
        raise ConfigError(f"{path}: truncated or not a safetensors file ({one_line(err)})") from None
    if RUN_KEY not in metadata:
        raise ConfigError(f"{path}: not a mario-rl export (no {RUN_KEY!r} in its metadata)")
    return {"run": json.loads(metadata[RUN_KEY])}, weights


def load_agent(path: str | Path) -> tuple[RunConfig, NatureCNN]:
    """The online net, in eval mode on the CPU, and the RunConfig it was trained with.

    Every way the file can be wrong (missing, truncated, foreign, holding pickled code, weights
    that do not fit the network its config describes) is a ConfigError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ConfigError(f"{path}: the file is empty")
    read = _read_safetensors if path.suffix == ".safetensors" else _read_ckpt
    hparams, weights = read(path)
    try:
        run = run_config_from(hparams)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{path}: its run config does not fit this mario-rl ({one_line(err)})") from None
    try:
        validate(run)
    except ConfigError as err:
        raise ConfigError(f"{path}: its run config is invalid ({err})") from None
    net = NatureCNN(run.env.frame_stack, num_actions(run.env.actions), run.env.frame_size, run.agent.dueling)
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        raise ConfigError(f"{path}: its weights do not fit the network of its config ({one_line(err)})") from None
    return run, net.eval()


def export(ckpt_path: str | Path, out_path: str | Path, dtype: str = "float32") -> Path:
    """Write the online net of ``ckpt_path``, as ``dtype``, and its RunConfig to ``out_path`` (.safetensors)."""
    out = Path(out_path)
    if out.suffix != ".safetensors":
        raise ConfigError(f"{out}: the export must end in .safetensors (evaluate.py tells the formats by suffix)")
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r} is not allowed; choose one of: {', '.join(DTYPES)}")
    run, net = load_agent(ckpt_path)
    weights = {name: tensor.to(DTYPES[dtype]).contiguous() for name, tensor in net.state_dict().items()}
    atomic.write_bytes(out, save(weights, metadata={RUN_KEY: json.dumps(run_dict(run))}))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mario_rl.export", description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", help="a .ckpt written by train.py")
    parser.add_argument("out", help="the .safetensors file to write")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32", help="weight precision in the file")
    args = parser.parse_args(argv)
    with user_errors_exit():
        out = export(args.ckpt, args.out, args.dtype)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
