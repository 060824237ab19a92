"""Random-shift augmentation of replay batches (DrQ, Kostrikov et al. 2021).

Each stack is padded by repeating its border and cropped back to its size at a random
offset, so the Q-network sees Mario a few pixels off where he was stored and cannot key
its values to exact pixel positions. It runs on the learner's uint8 batches; replay and
actor are untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def shift(obs: torch.Tensor, pad: int, offsets: torch.Tensor) -> torch.Tensor:
    """Crops of the border-padded stacks: ``offsets[i] = (dy, dx)`` in [0, 2 * pad] picks the
    window of stack i, so (pad, pad) returns it unchanged."""
    height, width = obs.shape[-2:]
    padded = F.pad(obs, (pad, pad, pad, pad), mode="replicate")
    return torch.stack([padded[i, ..., y : y + height, x : x + width] for i, (y, x) in enumerate(offsets.tolist())])


def random_shift(obs: torch.Tensor, pad: int) -> torch.Tensor:
    """Each stack of the batch shifted by up to ``pad`` pixels each way, drawn from torch's RNG
    (seeded by the run and saved in its checkpoints)."""
    offsets = torch.randint(0, 2 * pad + 1, (obs.shape[0], 2))
    return shift(obs, pad, offsets)
