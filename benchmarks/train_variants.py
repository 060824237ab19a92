"""Env steps/s of real training runs under several sets of overrides, interleaved, side by side.

    python benchmarks/train_variants.py --rounds 2 base= plain=agent.dueling=false \\
        one_thread=torch_threads=1      # ~2.5 minutes per run; one JSON line per run

Each variant is ``name=override[,override...]`` (``name=`` alone is the default config). The
variants run in turn, ``--rounds`` times, so a neighbour's load hits them alike; each line is
the steady state of one run (benchmarks/throughput.py's ``train_run``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.throughput import train_run, warm_budget  # noqa: E402


def parse_variant(text: str) -> tuple[str, list[str]]:
    """'plain=agent.dueling=false,torch_threads=1' -> ('plain', ['agent.dueling=false', 'torch_threads=1'])."""
    name, sep, overrides = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"a variant is name=override[,override...], got {text!r}")
    return name, [o for o in overrides.split(",") if o]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", type=parse_variant, help="name=override[,override...]")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved runs per variant")
    parser.add_argument("--warmup", type=int, default=2000, help="env steps before the first update")
    parser.add_argument("--train-steps", type=int, default=4000, help="env steps of each run after warm-up")
    args = parser.parse_args()
    budget = warm_budget(args.warmup, args.train_steps)
    for round_ in range(args.rounds):
        for name, overrides in args.variants:
            figures = train_run([*budget, *overrides])
            line = {"round": round_, "variant": name, "overrides": overrides}
            line.update({k: round(figures[k], 2) for k in ("env_steps_per_s", "updates_per_s")})
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
