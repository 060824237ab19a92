"""The record of one played episode, shared by training, evaluation and videos.

Training keeps the last episodes for the ``rollout/*`` means (and in checkpoints), evaluation
tabulates them and plays the best one again for a video, and the second play reports what it
saw so that evaluation can check it is the same episode. Each fills the fields it knows; the
rest keep their defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Episode:
    """One played episode.

    ``episode_return``: the sum of its rewards (the env's reward, e.g. classic); ``length``: its
    agent steps; ``x_pos``: Mario's x in the level where it ended; ``clear``: it reached the
    flag; ``level``: the level it played ('' in checkpoints from before several levels).
    Training: ``env_steps``, the run's env-step count when it ended, and ``restored``, it began
    from a start state, not the level start. Evaluation: ``seed``, which alone decides the
    episode, ``terminated`` (a death or the flag, not a time-out) and ``actions``, to play it
    again. A second play for a video: ``nes_frames``, the NES frames it showed.
    """

    episode_return: float
    length: int
    x_pos: int
    clear: bool = False
    level: str = ""
    env_steps: int = 0
    restored: bool = False
    seed: int = 0
    terminated: bool = False
    nes_frames: int = 0
    actions: list[int] = field(default_factory=list, repr=False)
