"""Adapters whose outputs are not a label map: regression (B, T), classification (B, K), image-to-image.

They share the base adapter's loading, device, precision and preprocessing; each adds the check that the
network's output matches the names in the config (a mismatch means the JSON describes another network) and a
``predict`` that returns named values, or volumes on the input grid.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..errors import ModelConfigError
from ..volume import Volume, resample_to_reference
from .base import ModelAdapter


def _check_vector(out, count: int, what: str, kind: str) -> None:
    if out.ndim != 2 or out.shape[1] != count:
        raise ModelConfigError(f"The network returned shape {tuple(out.shape)} but the model JSON names {count} "
                               f"{what}; a {kind} network must return (batch, {count}).")


class RegressionModel(ModelAdapter):
    """A network predicting T named values with units (volume in ml, age in years...) from a volume."""

    kind: ClassVar[str] = "regression"
    sliding_window = None  # a (B, T) output cannot be stitched from windows

    @property
    def target_names(self) -> list[str]:
        return list(self.config.target_names)

    @property
    def target_units(self) -> list[str]:
        return list(self.config.target_units)

    def _check_output(self, out, x) -> None:
        _check_vector(out, len(self.config.target_names), "targets ('target_names')", "regression")

    def predict(self, volume: Volume) -> dict[str, float]:
        """Target name → predicted value (in the unit of :attr:`target_units`)."""
        import torch

        with torch.no_grad():
            values = self.forward(self.to_tensor(self.preprocess(volume)))[0]
        return {name: float(v) for name, v in zip(self.target_names, values)}


class ClassifierModel(ModelAdapter):
    """A network scoring K named classes for a whole volume; the config declares logits or probabilities."""

    kind: ClassVar[str] = "classifier"
    sliding_window = None

    @property
    def label_names(self) -> list[str]:
        return list(self.config.label_names)

    def _check_output(self, out, x) -> None:
        _check_vector(out, self.config.num_classes, "classes ('label_names')", "classifier")

    def probabilities(self, x):
        """Softmax of the logits, or the output itself when the network already returns probabilities."""
        import torch

        out = self.forward(x)
        return out if self.config.output == "probabilities" else torch.softmax(out, dim=1)

    def predict(self, volume: Volume) -> dict[str, float]:
        """Class name → probability."""
        import torch

        with torch.no_grad():
            probabilities = self.probabilities(self.to_tensor(self.preprocess(volume)))[0]
        return {name: float(p) for name, p in zip(self.label_names, probabilities)}


class ImageToImageModel(ModelAdapter):
    """A network returning C′ volumes (denoised image, synthetic CT, dose map...), possibly on a coarser grid.

    An output whose spatial size differs from the input's is taken to cover the same field of view (as pooling,
    strided convolutions and ``Resize`` do): its spacing is scaled by input size / output size and its first
    voxel centre moved accordingly. :meth:`output_grid` makes this mapping explicit.
    """

    kind: ClassVar[str] = "image_to_image"

    @property
    def channel_names(self) -> list[str]:
        return list(self.config.channel_names)

    def _check_output(self, out, x) -> None:
        expected = self.config.num_outputs
        if out.ndim != 5 or (expected is not None and out.shape[1] != expected):
            raise ModelConfigError(
                f"The network returned shape {tuple(out.shape)}; the model JSON names {expected} output channel(s) "
                "('channel_names'), and an image-to-image network must return (batch, channels, D, H, W)."
            )

    def output_grid(self, model_space: Volume, output_shape_zyx: tuple[int, int, int]) -> Volume:
        """A zero volume on the grid of an output of ``output_shape_zyx`` computed from ``model_space``."""
        n_in = np.array(model_space.size_xyz, dtype=float)
        n_out = np.array(output_shape_zyx[::-1], dtype=float)
        spacing_in = np.array(model_space.spacing)
        spacing_out = spacing_in * n_in / n_out
        direction = np.asarray(model_space.direction).reshape(3, 3)
        origin = np.array(model_space.origin) + direction @ ((spacing_out - spacing_in) / 2)
        return Volume(np.zeros(tuple(output_shape_zyx), np.float32), tuple(spacing_out), tuple(origin),
                      model_space.direction, dict(model_space.metadata))

    def output_volumes(self, output, model_space: Volume) -> list[Volume]:
        """A (1, C′, ...) network output as C′ model-space volumes on the output grid."""
        array = self.to_array(output[0])  # (C', z, y, x)
        grid = self.output_grid(model_space, array.shape[1:])
        return [grid.with_array(channel.astype(np.float32)) for channel in array]

    def predict(self, volume: Volume, interpolator: str = "linear") -> dict[str, Volume]:
        """Channel name → output volume on the input's own grid."""
        import torch

        model_space = self.preprocess(volume)
        with torch.no_grad():
            output = self.forward(self.to_tensor(model_space))
        names = self.channel_names or [f"channel_{c}" for c in range(output.shape[1])]
        return {name: resample_to_reference(channel, volume, interpolator)
                for name, channel in zip(names, self.output_volumes(output, model_space))}
