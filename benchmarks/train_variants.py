"""Env steps/s of real training runs under several sets of overrides, interleaved, side by side.

    python benchmarks/train_variants.py --rounds 2 base= plain=agent.dueling=false \\
        one_thread=torch_threads=1      # ~2.5 minutes per run; one JSON line per run
    python benchmarks/train_variants.py --copies 1,2 base= one_thread=torch_threads=1

Each variant is ``name=override[,override...]`` (``name=`` alone is the default config). The
variants run in turn, ``--rounds`` times, so a neighbour's load hits them alike; each line is
the steady state of one run (benchmarks/throughput.py's ``train_run``). ``--copies 1,2`` runs
each variant alone and then as two identical runs started together on the same cores: what
a run does when another job shares the machine. A copy that finishes first leaves the other
alone for its last env steps, so the shared figures are an upper bound.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
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


def parse_copies(text: str) -> list[int]:
    """'1,2' -> [1, 2]: how many identical runs share the cores, one count after the other."""
    try:
        counts = [int(c) for c in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"counts of runs of at least 1, separated by commas, got {text!r}")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", type=parse_variant, help="name=override[,override...]")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved runs per variant")
    parser.add_argument("--warmup", type=int, default=2000, help="env steps before the first update")
    parser.add_argument("--train-steps", type=int, default=4000, help="env steps of each run after warm-up")
    parser.add_argument(
        "--copies", type=parse_copies, default=[1], help="identical runs started together, in turn for each count: 1,2"
    )
    args = parser.parse_args()
    budget = warm_budget(args.warmup, args.train_steps)
    for round_ in range(args.rounds):
        for name, overrides in args.variants:
            for copies in args.copies:
                with ThreadPoolExecutor(copies) as pool:  # threads only wait on the train.py processes
                    runs = list(pool.map(train_run, [[*budget, *overrides]] * copies))
                for copy, figures in enumerate(runs):
                    line = {"round": round_, "variant": name, "overrides": overrides, "copies": copies, "copy": copy}
                    line.update({k: round(figures[k], 2) for k in ("env_steps_per_s", "updates_per_s")})
                    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
