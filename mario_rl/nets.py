"""Q-networks. They take uint8 stacks and divide by 255 themselves, so replay, batches and
the actor all move bytes, not floats."""

from __future__ import annotations

import torch
from torch import nn


class NatureCNN(nn.Module):
    """The DQN Nature torso (3 convs, 512 hidden) with a plain or dueling Q head.

    The dueling head splits value and advantage streams (Wang et al. 2016) and recombines
    them with the mean advantage subtracted, so Q stays identifiable.

    Under mixed precision (autocast) the torso may compute in bf16 or fp16, but the head
    always runs in fp32 and returns float32 Q-values: a bf16 Q-value between 64 and 128 has
    steps of 0.5, so 87.3 and 87.6 would both read 87.5 and the greedy action among close
    ones would be a rounding artefact. The head is two small matrix products; fp32 costs
    little there.
    """

    def __init__(self, in_channels: int, num_actions: int, frame_size: int = 84, dueling: bool = False):
        super().__init__()
        self.torso = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.torso(torch.zeros(1, in_channels, frame_size, frame_size)).shape[1]
        self.dueling = dueling
        self.head = nn.Sequential(nn.Linear(flat, 512), nn.ReLU(), nn.Linear(512, num_actions))
        if dueling:
            self.value = nn.Sequential(nn.Linear(flat, 512), nn.ReLU(), nn.Linear(512, 1))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """uint8 stacks (batch, in_channels, frame_size, frame_size) -> float32 Q-values (batch, num_actions)."""
        features = self.torso(obs.float() / 255.0)
        with torch.autocast(features.device.type, enabled=False):
            features = features.float()
            q = self.head(features)
            if self.dueling:
                q = self.value(features) + q - q.mean(dim=1, keepdim=True)
        return q
