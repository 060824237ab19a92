"""The whole pipeline learns: the real stream, replay, DQN module and Lightning Trainer solve a corridor.

As Tianshou and Stable-Baselines3 test their algorithms: a small env, a fixed budget, a stated
return. The corridor (tests/corridor.py) has one action sequence of 5 steps that reaches the
goal, return 5; a random policy reaches it once in 3,125 episodes, and the untrained network
does not. Within 2,000 env steps (438 updates of 32) the greedy agent walks it end to end; seeds 1, 2
and 3 first did at 644-1,244 env steps. About 40 s of one core.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from mario_rl.config import load, run_dict
from mario_rl.evaluation import play_episode
from mario_rl.module import DQN
from tests.conftest import compose_train
from tests.corridor import PATH, corridor, corridor_envs

LEARN = [
    "env.num_envs=4",
    "env.vector=sync",
    "env_steps=2000",
    "agent.learning_starts=250",
    "agent.target_sync=250",
    "agent.epsilon_decay_steps=1000",
    "agent.lr=1e-3",
    "replay.capacity=4000",
    "replay.save=false",
]


def greedy_return(module: DQN) -> tuple[float, bool]:
    record = play_episode(corridor(module.run.env.frame_stack), module.online, epsilon=0.0, seed=0)
    return record.episode_return, record.clear


def test_dqn_learns_the_corridor_within_2000_env_steps(tmp_path: Path):
    run = load(compose_train(LEARN, tmp_path))
    pl.seed_everything(run.seed, verbose=False)
    module = DQN(run_dict(run), make_envs=corridor_envs)
    assert greedy_return(module) != (len(PATH), True)  # not solved before training
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=-1,
        precision="32-true",
        gradient_clip_val=run.agent.grad_clip_norm,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module)
    assert (module.stream.env_steps, trainer.global_step) == (2000, 438)
    assert greedy_return(module) == (len(PATH), True)
