"""Gradient updates/s of the learner alone, by precision, Adam kernel and Q head, side by side.

    python benchmarks/learner.py               # ~2 minutes; prints one JSON line
    python benchmarks/learner.py --threads 2   # as train.py's default torch_threads

One thread unless told (``--threads``), batch 32, a full Double-DQN update (three forwards,
SmoothL1, backward, norm clip, Adam step) on random uint8 stacks. The variants run in turn, ``--rounds`` times each,
interleaved, so a neighbour's load hits them alike; the figure is the best round of each.
``default`` is what train.py picks on this CPU (mario_rl.config.auto_precision).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mario_rl.config import auto_precision, default_run  # noqa: E402
from mario_rl.losses import dqn_loss  # noqa: E402
from mario_rl.module import adam_kernel  # noqa: E402
from mario_rl.nets import NatureCNN  # noqa: E402


def updates_per_s(
    seconds: float,
    threads: int,
    precision: str,
    fused_adam: bool | None = None,
    dueling: bool | None = None,
    double_q: bool = True,
    nets: tuple[torch.nn.Module, torch.nn.Module] | None = None,
    device: str = "cpu",
) -> float:
    """Updates/s of batch 32 for one learner variant; None means the default config's choice.

    ``double_q=False`` updates towards DQN's target: no online forward pass on the next states.
    ``nets`` (online, target) replaces the Nature CNNs, with 5 actions; ``device`` holds the nets
    and the batch, and on a GPU the clock waits for its kernels.
    """
    torch.set_num_threads(threads)
    agent = default_run().agent
    dueling = agent.dueling if dueling is None else dueling
    kernel = adam_kernel(precision) if fused_adam is None else {"fused": fused_adam, "foreach": not fused_adam}
    online, target = nets or (NatureCNN(4, 5, dueling=dueling), NatureCNN(4, 5, dueling=dueling))
    online, target = online.to(device), target.to(device)
    optimizer = torch.optim.Adam(online.parameters(), lr=agent.lr, eps=agent.adam_eps, **kernel)
    obs = torch.randint(0, 256, (32, 4, 84, 84), dtype=torch.uint8, device=device)
    next_obs = torch.randint(0, 256, (32, 4, 84, 84), dtype=torch.uint8, device=device)
    actions, returns = torch.randint(0, 5, (32,), device=device), torch.randn(32, device=device)
    discounts = torch.full((32,), agent.gamma**agent.n_step, device=device)
    kind = torch.device(device).type

    def update() -> None:
        with torch.autocast(kind, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            q = online(obs)
            with torch.no_grad():
                next_online, next_target = online(next_obs) if double_q else None, target(next_obs)
            loss, _ = dqn_loss(q, actions, next_online, next_target, returns, discounts)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(online.parameters(), 10.0)
        optimizer.step()

    update()
    if kind == "cuda":
        torch.cuda.synchronize()
    updates, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        update()
        updates += 1
    if kind == "cuda":
        torch.cuda.synchronize()
    return updates / (time.perf_counter() - started)


VARIANTS = {
    "default": {"precision": auto_precision("cpu")},
    "fp32_fused_adam": {"precision": "32-true", "fused_adam": True},
    "fp32_foreach_adam": {"precision": "32-true", "fused_adam": False},
    "bf16_autocast_foreach_adam": {"precision": "bf16-mixed", "fused_adam": False},
    "fp32_fused_adam_plain_head": {"precision": "32-true", "fused_adam": True, "dueling": False},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of one round of one variant")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per variant")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the learner")
    args = parser.parse_args()
    best = dict.fromkeys(VARIANTS, 0.0)
    for _ in range(args.rounds):
        for name, variant in VARIANTS.items():
            best[name] = max(best[name], updates_per_s(args.seconds, args.threads, **variant))
    figures = {f"{name}_updates_per_s": round(rate, 2) for name, rate in best.items()}
    figures["threads"] = args.threads
    figures["default_precision"] = VARIANTS["default"]["precision"]
    figures["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
