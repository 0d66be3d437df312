"""The segmentation-model adapter: (B, C, D, H, W) logits or probabilities, labels on the input grid.

Explainers see one callable, :meth:`SegmentationModel.logits` (= :meth:`ModelAdapter.forward`: (B,1,D,H,W) →
(B,C,D,H,W), differentiable, float32), so they work the same for a Swin UNETR loaded from a state dict, a MONAI
bundle or a TorchScript file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import DeviceError, ModelConfigError
from ..progress import ProgressCallback
from ..volume import Volume, resample_to_reference
from .base import ModelAdapter



@dataclass
class SegmentationResult:
    """Labels (and optionally per-class probabilities) on the input grid, plus the model-space prediction."""

    labels: Volume
    probabilities: np.ndarray | None  # (C, z, y, x) float32 on the input grid
    model_space_labels: Volume
    label_names: list[str]


class SegmentationModel(ModelAdapter):
    """A segmentation network with the preprocessing, precision and sliding window it was trained with."""

    kind: ClassVar[str] = "segmentation"

    @property
    def label_names(self) -> list[str]:
        return list(self.config.label_names)

    #: The README's name for the differentiable forward pass.
    logits = ModelAdapter.forward

    def _check_output(self, out, x) -> None:
        if out.ndim != 5 or out.shape[1] != self.config.num_classes:
            raise ModelConfigError(
                f"The network returned shape {tuple(out.shape)} but the model JSON names {self.config.num_classes} "
                f"labels; a segmentation network must return (batch, {self.config.num_classes}, D, H, W)."
            )

    def probabilities(self, x):
        """Class probabilities: softmax of logits, or the output itself when the config declares probabilities."""
        import torch

        out = self.forward(x)
        return out if self.config.output == "probabilities" else torch.softmax(out, dim=1)

    def segment(self, volume: Volume, progress: ProgressCallback | None = None,
                return_probabilities: bool = True) -> SegmentationResult:
        """Segment ``volume``; labels and probabilities come back on the input's own grid."""
        import torch

        report = progress or (lambda fraction, message: None)
        report(0.0, "preprocessing")
        model_space = self.preprocess(volume)
        report(0.15, "running the network")
        try:
            with torch.no_grad():
                probabilities = self.probabilities(self.to_tensor(model_space))[0]
        except torch.OutOfMemoryError:
            raise DeviceError(
                f"Out of memory on {self.device} while segmenting a {model_space.shape} volume. Lower sw_batch_size "
                "in the model JSON or use --device cpu."
            ) from None
        probs = self.to_array(probabilities)  # (C, z, y, x), model space
        model_labels = model_space.with_array(probs.argmax(0).astype(np.uint8), space="model")
        report(0.7, "resampling to the input grid")
        labels, on_input = _labels_on_input(probs, model_space, volume, return_probabilities, report)
        return SegmentationResult(volume.with_array(labels, kind="labels"), on_input, model_labels, self.label_names)


def _labels_on_input(probs: np.ndarray, model_space: Volume, volume: Volume, keep: bool,
                     report: ProgressCallback) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities resampled channel by channel (linear), then the argmax on the input grid.

    This gives smoother borders than nearest-neighbour resampling of the model-space label map.
    """
    best = np.full(volume.shape, -1.0, dtype=np.float32)
    labels = np.zeros(volume.shape, dtype=np.uint8)
    on_input = np.empty((probs.shape[0], *volume.shape), np.float32) if keep else None
    for c in range(probs.shape[0]):
        channel = resample_to_reference(model_space.with_array(probs[c]), volume, "linear").array
        better = channel > best
        labels[better] = c
        best[better] = channel[better]
        if on_input is not None:
            on_input[c] = channel
        report(0.7 + 0.3 * (c + 1) / probs.shape[0], "resampling to the input grid")
    return labels, on_input


