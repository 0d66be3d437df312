"""The segmentation-model adapter: preprocessing, sliding-window inference and results on the input grid.

Explainers see one callable, :meth:`SegmentationModel.logits` ((B,1,D,H,W) → (B,C,D,H,W), differentiable), so
they work the same for a Swin UNETR loaded from a state dict, a MONAI bundle or a TorchScript file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..device import resolve_device
from ..errors import DeviceError, InvalidVolumeError
from ..volume import Volume, resample_to_reference
from .config import ModelConfig
from .preprocessing import preprocess

from ..progress import ProgressCallback  # noqa: E402 (declared once)


@dataclass
class SegmentationResult:
    """Labels (and optionally per-class probabilities) on the input grid, plus the model-space prediction."""

    labels: Volume
    probabilities: np.ndarray | None  # (C, z, y, x) float32 on the input grid
    model_space_labels: Volume
    label_names: list[str]


class SegmentationModel:
    """A segmentation network with the preprocessing and sliding window it was trained with."""

    def __init__(self, network: Any, config: ModelConfig, device: Any = "cpu", source: str = "", sha256: str = "",
                 kind: str = "module") -> None:
        import torch

        self.device = resolve_device(device)
        self.network = network.to(self.device).eval()
        for parameter in self.network.parameters():
            parameter.requires_grad_(False)  # explainers need input gradients only
        self.config = config
        self.source = source
        self.sha256 = sha256
        self.kind = kind
        self.use_autocast = self.device.type == "cuda"
        #: MONAI Swin window attention through torch's fused kernel (same arithmetic, less time and memory)
        self.fused_attention = True
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    # ---- construction -----------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, device: Any = "auto", config: ModelConfig | None = None) -> "SegmentationModel":
        """Load a state dict / checkpoint (+ JSON), a MONAI bundle folder or a TorchScript file."""
        from .weights import load_weights

        loaded = load_weights(path, config)
        return cls(loaded.network, loaded.config, device, str(loaded.source), loaded.sha256, loaded.kind)

    @classmethod
    def from_network(cls, network: Any, config: ModelConfig, device: Any = "cpu") -> "SegmentationModel":
        """Wrap an in-memory network (tests, notebooks); its hash is taken from the parameters."""
        from ..provenance import IN_MEMORY, sha256_state_dict

        return cls(network, config, device, IN_MEMORY, sha256_state_dict(network.state_dict()), "module")

    @property
    def label_names(self) -> list[str]:
        return list(self.config.label_names)

    def describe(self) -> dict[str, Any]:
        """Provenance entry for result files."""
        return {"source": self.source, "sha256": self.sha256, "kind": self.kind, "device": str(self.device),
                "config": self.config.to_dict()}

    # ---- tensors ----------------------------------------------------------------------------------------------
    def preprocess(self, volume: Volume) -> Volume:
        """Input volume → model space (orientation, spacing, intensity); the input is not modified."""
        return preprocess(volume, self.config)

    def to_tensor(self, model_space: Volume):
        """Model-space volume → (1, 1, ...) float32 tensor in the network's axis order, on the model's device."""
        import torch

        array = model_space.array.astype(np.float32, copy=False)
        if self.config.axis_order == "xyz":
            array = array.transpose(2, 1, 0)
        return torch.from_numpy(np.ascontiguousarray(array))[None, None].to(self.device)

    def to_array(self, tensor) -> np.ndarray:
        """Inverse of :meth:`to_tensor` for a (..., D, H, W) tensor: numpy in (z, y, x) order."""
        array = tensor.detach().float().cpu().numpy()
        if self.config.axis_order == "xyz":
            array = np.swapaxes(array, -1, -3)
        return np.ascontiguousarray(array)

    def logits(self, x):
        """Differentiable logits (B, C, ...): the network directly when ``x`` fits the ROI, else a sliding window."""
        import torch

        if x.ndim != 5 or x.shape[1] != self.config.in_channels:
            raise InvalidVolumeError(
                f"Model input must be (batch, {self.config.in_channels}, D, H, W); got shape {tuple(x.shape)}."
            )
        from .fused_attention import fused_window_attention

        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_autocast), \
                fused_window_attention(self.network, self.fused_attention):
            if tuple(x.shape[2:]) == tuple(self.config.roi_size):
                out = self.network(x)
            else:
                from monai.inferers import sliding_window_inference

                out = sliding_window_inference(
                    x, self.config.roi_size, self.config.sw_batch_size, self.network,
                    overlap=self.config.overlap, mode="gaussian",
                )
        return out.float()

    __call__ = logits

    # ---- segmentation -----------------------------------------------------------------------------------------
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
                probabilities = torch.softmax(self.logits(self.to_tensor(model_space)), dim=1)[0]
        except torch.OutOfMemoryError:
            raise DeviceError(
                f"Out of memory on {self.device} while segmenting a {model_space.shape} volume. Lower sw_batch_size "
                "in the model JSON or use --device cpu."
            ) from None
        probs = self.to_array(probabilities)  # (C, z, y, x), model space
        model_labels = model_space.with_array(probs.argmax(0).astype(np.uint8), space="model")
        report(0.7, "resampling to the input grid")
        # Probabilities are resampled channel by channel (linear), then the argmax is taken on the input grid: this
        # gives smoother borders than nearest-neighbour resampling of the model-space label map.
        best = np.full(volume.shape, -1.0, dtype=np.float32)
        labels = np.zeros(volume.shape, dtype=np.uint8)
        on_input = np.empty((probs.shape[0], *volume.shape), np.float32) if return_probabilities else None
        for c in range(probs.shape[0]):
            channel = resample_to_reference(model_space.with_array(probs[c]), volume, "linear").array
            better = channel > best
            labels[better] = c
            best[better] = channel[better]
            if on_input is not None:
                on_input[c] = channel
            report(0.7 + 0.3 * (c + 1) / probs.shape[0], "resampling to the input grid")
        label_volume = volume.with_array(labels, kind="labels")
        return SegmentationResult(label_volume, on_input, model_labels, self.label_names)

    def to_input_grid(self, model_space_volume: Volume, reference: Volume, interpolator: str = "linear") -> Volume:
        """Map a model-space volume (heatmap, labels) back onto the input volume's grid and geometry."""
        return resample_to_reference(model_space_volume, reference, interpolator)
