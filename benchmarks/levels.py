"""What switching level and starting from a saved state cost a worker.

    python benchmarks/levels.py            # ~30 seconds; prints one JSON line

One LevelSet (mario_rl/levels.py) over World 1, as a training worker holds it. Per reset it
times a reset on the same level, a reset that switches to another level whose emulator is
already built (what every level switch costs once each level has been played), and the
first build of a level's emulator (once per level and worker). For start states it times
``dump_state`` and ``load_state`` of a snapshot, the resident memory of one snapshot (the
growth of the process holding ``--snapshots`` of them), and the rate at which a saved
prefix is replayed to rebuild a snapshot after a resume. Rounds alternate the two kinds of
reset, so a neighbour's load hits both alike; each figure is the median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mario_rl.levels import LevelSet, StartState  # noqa: E402

LEVELS = ["1-1", "1-2", "1-3", "1-4"]
RIGHT = 0b10000000
RIGHT_JUMP = 0b10000011


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resets", type=int, default=200, help="resets of each kind")
    parser.add_argument("--snapshots", type=int, default=2_000, help="snapshots held to measure their memory")
    parser.add_argument("--prefix-frames", type=int, default=2_000, help="NES frames of the replayed prefix")
    args = parser.parse_args(argv)

    build = []
    env = LevelSet("smb", LEVELS)
    for level in LEVELS[1:]:
        build.append(timed(lambda level=level: env._emulator(level)))
    same, switch = [], []
    for i in range(args.resets):
        same.append(timed(lambda: env.reset(options={"level": env.level})))
        other = LEVELS[(LEVELS.index(env.level) + 1 + i % 3) % len(LEVELS)]
        switch.append(timed(lambda other=other: env.reset(options={"level": other})))

    env.reset(options={"level": "1-1"})
    for _ in range(100):
        env.step(RIGHT)
    dumps = [timed(env.nes.dump_state) for _ in range(200)]
    snapshot = env.nes.dump_state()
    loads = [timed(lambda: env.nes.load_state(snapshot)) for _ in range(200)]
    before = resident_bytes()
    held = [env.nes.dump_state() for _ in range(args.snapshots)]
    snapshot_bytes = (resident_bytes() - before) / len(held)
    del held

    # A prefix the game really played (standing still, a goomba ends the episode): walk and jump.
    env.reset(options={"level": "1-1"})
    for t in range(args.prefix_frames):
        if env.step(RIGHT | (RIGHT_JUMP if t % 40 < 20 else 0))[2]:
            break
    prefix = StartState(0, np.asarray(env._buttons[:-1], dtype=np.uint8))
    env.reset(options={"level": "1-1"})
    replay_s = timed(lambda: env._restore(prefix))
    env.close()

    figures = {
        "reset_same_level_ms": 1e3 * statistics.median(same),
        "reset_switch_level_ms": 1e3 * statistics.median(switch),
        "switch_over_same": statistics.median(switch) / statistics.median(same),
        "first_build_of_a_level_ms": 1e3 * statistics.median(build),
        "dump_state_us": 1e6 * statistics.median(dumps),
        "load_state_us": 1e6 * statistics.median(loads),
        "snapshot_bytes": snapshot_bytes,
        "prefix_replay_nes_frames_per_s": len(prefix.prefix) / replay_s,
    }
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))
    return figures


if __name__ == "__main__":
    main()
