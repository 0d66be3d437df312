"""The demo regression CNN: grey-matter, white-matter and CSF fractions of a 32³ T1 patch (2 mm, MNI152).

Small on purpose (about 101 k parameters, trains on one CPU thread in minutes with ``tools/train_tissue_regressor.py``)
and built for layer methods: three named blocks whose outputs are post-ReLU feature maps at 16³, 8³ and 8³, then
global average pooling and one linear layer, so ``block3`` is the classic Grad-CAM layer and ``block1 block2
block3`` a LayerCAM stack. The shipped weights and their JSON are in ``Resources/TissueRegressor/``; the JSON names
this class as ``XAIExplainerLib.extras.tissue_regressor:TissueRegressor`` so the :class:`RegressionModel` adapter
rebuilds it.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from ..volume import Volume

#: Where the shipped weights, their JSON and the evaluation record live.
RESOURCE_DIR = Path(__file__).resolve().parent.parent / "Resources" / "TissueRegressor"
WEIGHTS_FILE = RESOURCE_DIR / "tissue_regressor.pt"
#: Layers the demo explains: Grad-CAM++ on the last block, LayerCAM over all three.
CAM_LAYER = "block3"
LAYERCAM_LAYERS = ("block1", "block2", "block3")


def _conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU()]


def scale_to_percentile(volume: "Volume", percentile: float = 99.5) -> "Volume":
    """The regressor's input scaling as a config preprocessing step: divide by the ``percentile``-th percentile of
    the input, clip at 0 (the rule :func:`datasets.tissue.mni152_tissues` applied to the whole training T1).

    Why in the config: a user's patch in scanner units (0-4000) must reach the network on the training scale. On a
    whole skull-stripped brain it is the training rule exactly; on a 32³ patch the percentile is the patch's own, a
    close approximation (held-out R² in ``evaluation.json`` under ``float16_config_preprocessing``).
    """
    data = volume.array.astype("float32")
    scale = max(float(np.percentile(data, percentile)), 1e-6)
    return volume.with_array(np.clip(data / scale, 0.0, None).astype("float32"))


class TissueRegressor(nn.Module):
    """(B, 1, 32, 32, 32) T1 scaled to its 99.5th percentile → (B, 3) GM, WM, CSF fractions of the patch."""

    def __init__(self, in_channels: int = 1, out_channels: int = 3, width: int = 8, **_: object) -> None:
        super().__init__()
        w = int(width)
        self.block1 = nn.Sequential(*_conv(in_channels, w), *_conv(w, 2 * w, stride=2))  # 16³
        self.block2 = nn.Sequential(*_conv(2 * w, 4 * w), *_conv(4 * w, 4 * w, stride=2))  # 8³
        self.block3 = nn.Sequential(*_conv(4 * w, 8 * w))  # 8³
        self.head = nn.Linear(8 * w, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.block3(self.block2(self.block1(x)))
        return self.head(features.mean(dim=(2, 3, 4)))


__all__ = ["CAM_LAYER", "LAYERCAM_LAYERS", "RESOURCE_DIR", "TissueRegressor", "WEIGHTS_FILE", "scale_to_percentile"]
