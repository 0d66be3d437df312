"""A small 3D CNN that tells a brain patch with a lesion from a healthy one (the counterfactual experiment's model).

Three resolutions (32³ → 16³ → 8³ for the shipped 32³ patches) of 3×3×3 convolutions with batch norm, a last
convolution kept at 8³ so that Grad-CAM on it (``"last_conv"``) has a usable resolution, then global average
pooling plus global max pooling (a lesion fills a few hundred of 32 768 voxels: the average alone dilutes it, the
maximum finds it) and one linear layer. Grad-CAM weighs ``last_conv``'s channels by their mean gradient, which
is defined for this head as for any other. Loaded through the
:class:`~XAIExplainerLib.models.outputs.ClassifierModel` adapter with
``"architecture": "XAIExplainerLib.models.lesion_cnn:LesionCNN3d"`` in the JSON.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm3d(c_out), nn.ReLU(inplace=True))


class LesionCNN3d(nn.Module):
    """(B, in_channels, D, H, W) → (B, num_classes) logits; any D, H, W divisible by 4."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, channels: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__()
        c1, c2, c3 = (int(c) for c in channels)
        self.features = nn.Sequential(_block(in_channels, c1), nn.MaxPool3d(2), _block(c1, c2), nn.MaxPool3d(2),
                                      _block(c2, c3))
        self.last_conv = nn.Conv3d(c3, c3, 3, padding=1)
        self.head = nn.Linear(2 * c3, num_classes)
        #: Training only: a 1×1×1 convolution predicting, from ``last_conv``'s features, which cells (4³ input voxels
        #: each) hold lesion (deep supervision, as the paper pre-trained its classifier on mass/background patches).
        #: Not used by forward.
        self.evidence = nn.Conv3d(c3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.feature_map(x))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The rectified ``last_conv`` features (B, C, D/4, H/4, W/4)."""
        return torch.relu(self.last_conv(self.features(x)))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from the features: mean and max over space, then the linear head."""
        pooled = torch.cat([features.mean(dim=(2, 3, 4)), features.amax(dim=(2, 3, 4))], dim=1)
        return self.head(pooled)
