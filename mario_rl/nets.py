"""Q-networks. They take uint8 stacks and divide by 255 themselves, so replay, batches and
the actor all move bytes, not floats."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pixel_conv(conv: nn.Conv2d, obs: torch.Tensor) -> torch.Tensor:
    """``conv(obs / 255)`` for uint8 ``obs``, with the 1/255 folded into the weights instead.

    The same function up to float rounding, one pass over the batch fewer: dividing a batch of
    32 stacks of 4x84x84 is 903,168 elements per forward, against 8,192 weights of the Nature
    torso's first conv. That pass was 17% of the CPU time of an update of the small network in
    benchmarks/pipeline_ceiling.py (torch profiler). Under bf16 autocast the uint8 values 0-255
    stay exact.
    """
    return F.conv2d(obs.float(), conv.weight * (1.0 / 255.0), conv.bias, conv.stride, conv.padding)


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
        features = self.torso[1:](pixel_conv(self.torso[0], obs))
        with torch.autocast(features.device.type, enabled=False):
            features = features.float()
            q = self.head(features)
            if self.dueling:
                q = self.value(features) + q - q.mean(dim=1, keepdim=True)
        return q
