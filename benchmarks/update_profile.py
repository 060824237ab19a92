"""What one gradient update costs, phase by phase, for torch's CPU layouts and thread counts.

    python benchmarks/update_profile.py        # ~1 minute on 2 cores; prints one JSON line

The update of the plain-head config at SB3's work (batch 32, Double-DQN: the online net on s
with gradients, the online and target nets on s' without, SmoothL1, backward, norm clipping
at 10, fused Adam), timed phase by phase in milliseconds. Each variant runs ``--updates``
updates after two untimed ones, in turn with the others for ``--rounds`` rounds; a phase's
figure is the lower quartile of its times over all rounds, the least disturbed by a neighbour.
Variants: one and two threads, oneDNN (mkldnn) convolutions off (torch's own kernels), and
the nets and batches in channels-last memory format.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.peers import cpu_features  # noqa: E402
from mario_rl.config import default_run  # noqa: E402
from mario_rl.losses import dqn_loss  # noqa: E402
from mario_rl.nets import NatureCNN  # noqa: E402

PHASES = ("online_s", "online_s_next", "target_s_next", "loss", "backward", "clip", "adam", "update")
VARIANTS = {
    "one_thread": {"threads": 1},
    "two_threads": {"threads": 2},
    "one_thread_no_mkldnn": {"threads": 1, "mkldnn": False},
    "one_thread_channels_last": {"threads": 1, "channels_last": True},
}


def phase_times(updates: int, threads: int, mkldnn: bool = True, channels_last: bool = False) -> dict[str, list[float]]:
    """Milliseconds of each phase of ``updates`` updates of one variant."""
    torch.set_num_threads(threads)
    mkldnn_before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = mkldnn
    agent = default_run().agent
    torch.manual_seed(0)
    online, target = NatureCNN(4, 5), NatureCNN(4, 5).requires_grad_(False)
    obs, next_obs = (torch.randint(0, 256, (agent.batch_size, 4, 84, 84), dtype=torch.uint8) for _ in "ab")
    if channels_last:
        online, target = online.to(memory_format=torch.channels_last), target.to(memory_format=torch.channels_last)
        obs, next_obs = (x.contiguous(memory_format=torch.channels_last) for x in (obs, next_obs))
    optimizer = torch.optim.Adam(online.parameters(), lr=agent.lr, eps=agent.adam_eps, fused=True)
    actions, returns = torch.randint(0, 5, (agent.batch_size,)), torch.randn(agent.batch_size)
    discounts = torch.full((agent.batch_size,), agent.gamma)
    times: dict[str, list[float]] = {phase: [] for phase in PHASES}
    try:
        for i in range(updates + 2):
            marks = [time.perf_counter()]
            q = online(obs)
            marks.append(time.perf_counter())
            with torch.no_grad():
                next_online = online(next_obs)
                marks.append(time.perf_counter())
                next_target = target(next_obs)
            marks.append(time.perf_counter())
            loss, _ = dqn_loss(q, actions, next_online, next_target, returns, discounts)
            marks.append(time.perf_counter())
            optimizer.zero_grad()
            loss.backward()
            marks.append(time.perf_counter())
            torch.nn.utils.clip_grad_norm_(online.parameters(), agent.grad_clip_norm)
            marks.append(time.perf_counter())
            optimizer.step()
            marks.append(time.perf_counter())
            if i >= 2:
                spans = [b - a for a, b in itertools.pairwise(marks)] + [marks[-1] - marks[0]]
                for phase, span in zip(PHASES, spans, strict=True):
                    times[phase].append(span * 1000)
    finally:
        torch.backends.mkldnn.enabled = mkldnn_before
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=10, help="timed updates per variant and round")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of every variant")
    args = parser.parse_args()
    times: dict[str, dict[str, list[float]]] = {name: {p: [] for p in PHASES} for name in VARIANTS}
    for _ in range(args.rounds):
        for name, variant in VARIANTS.items():
            for phase, spans in phase_times(args.updates, **variant).items():
                times[name][phase].extend(spans)
    line: dict[str, object] = {}
    for name, phases in times.items():
        for phase, spans in phases.items():
            line[f"{name}_{phase}_ms"] = round(sorted(spans)[len(spans) // 4], 2)
    line |= {"updates": args.updates, "rounds": args.rounds, "torch": torch.__version__}
    print(json.dumps(line | cpu_features()))


if __name__ == "__main__":
    main()
