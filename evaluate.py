"""Play a trained agent and tabulate how it did: ``python evaluate.py ckpt_path=... [overrides]``.

See conf/evaluate.yaml. Writes results.{json,csv,md} (and videos with video=true) to
outputs/evaluate/<date>/<time>/ and prints the table.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mario_rl.config import load_evaluate
from mario_rl.errors import user_errors_exit


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with user_errors_exit():
        load_evaluate(cfg)  # fail on a bad value in a second, before torch is even imported
        from mario_rl.evaluation import evaluate, markdown

        results = evaluate(cfg)
    print(markdown(results["summary"]), end="")


if __name__ == "__main__":
    main()
