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
from ..volume import Volume, label_dtype, labels_on_grid
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

    def output_to_probabilities(self, out):
        """Class probabilities from a forward output: softmax of logits, or the output itself when the config
        declares probabilities (``explain`` uses this too, so both commands derive labels from the same numbers)."""
        import torch

        return out if self.config.output == "probabilities" else torch.softmax(out, dim=1)

    def probabilities(self, x):
        """Class probabilities of ``x`` (one forward pass)."""
        return self.output_to_probabilities(self.forward(x))

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
        model_labels = model_space.with_array(probs.argmax(0).astype(label_dtype(probs.shape[0])), space="model")
        report(0.7, "resampling to the input grid")
        # one label-map rule for segment and explain (volume.labels_on_grid): argmax of resampled probabilities
        labels, on_input = labels_on_grid(probs, model_space, volume, keep_probabilities=return_probabilities)
        report(1.0, "resampling to the input grid")
        return SegmentationResult(labels, on_input, model_labels, self.label_names)
