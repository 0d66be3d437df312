"""One sliding window for inference (the adapter's forward) and for attribution (per-window gradients).

With MONAI's blending, the full-volume output is ``F(x)(v) = Σ_w i_w(v)·N(x_w)(v) / Σ_w i_w(v)`` where ``i_w`` is
the window's importance map (constant or Gaussian). :meth:`SlidingWindow.infer` runs exactly that through MONAI's
``sliding_window_inference``; :meth:`SlidingWindow.layout` exposes the same windows, padding, importance map and
overlap count so that an explainer can write a score linear in the output as a sum of per-window terms, free each
window's graph before the next and skip windows its score does not look at. Both share these numbers, so the
gradients of the windowed attribution equal differentiating :meth:`infer` up to floating-point rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    import torch

MODES = ("constant", "gaussian")


@dataclass(frozen=True)
class WindowLayout:
    """Where the windows of one volume lie: padding (``F.pad`` order), crop back, window slices, blending."""

    pad: tuple[int, ...]
    crop: tuple[slice, slice, slice]
    padded: tuple[int, int, int]
    slices: list[tuple[slice, slice, slice]]
    importance: "torch.Tensor"  # (roi) importance map of every window
    count: "torch.Tensor"  # (padded) Σ_w importance: the blending divisor

    def window(self, index: int) -> tuple[slice, ...]:
        """Index of window ``index`` in a ``(B, C, *padded)`` tensor."""
        return (slice(None), slice(None)) + self.slices[index]

    def pad_tensor(self, tensor: "torch.Tensor") -> "torch.Tensor":
        """Pad the last three axes the way MONAI pads a volume smaller than the ROI."""
        import torch

        return torch.nn.functional.pad(tensor, list(self.pad)) if any(self.pad) else tensor


@dataclass(frozen=True)
class SlidingWindow:
    """MONAI-style sliding window over a network that only accepts ``roi_size`` inputs."""

    roi_size: tuple[int, int, int]
    overlap: float = 0.25
    mode: str = "constant"
    sigma_scale: float = 0.125

    def __post_init__(self) -> None:
        if len(self.roi_size) != 3 or any(int(r) < 1 for r in self.roi_size):
            raise ValueError(f"roi_size must be three positive ints, got {self.roi_size!r}.")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}.")
        if self.mode not in MODES:
            raise ValueError(f"mode must be 'constant' or 'gaussian', got {self.mode!r}.")

    def covers(self, spatial: Sequence[int]) -> bool:
        """True when a volume of this spatial shape is exactly one window (no sliding needed)."""
        return tuple(int(r) for r in self.roi_size) == tuple(int(s) for s in spatial)

    def describe(self) -> dict:
        """JSON-able provenance entry."""
        return {"roi_size": [int(r) for r in self.roi_size], "overlap": self.overlap, "mode": self.mode,
                "sigma_scale": self.sigma_scale}

    def layout(self, spatial: Sequence[int], device, dtype) -> WindowLayout:
        """The windows MONAI's ``sliding_window_inference`` uses on a volume of shape ``spatial``."""
        import torch
        from monai.data.utils import compute_importance_map, dense_patch_slices

        roi = tuple(int(r) for r in self.roi_size)
        pad: list[int] = []  # F.pad order: last dim first
        for k in (2, 1, 0):
            diff = max(roi[k] - int(spatial[k]), 0)
            pad.extend([diff // 2, diff - diff // 2])
        padded = tuple(int(spatial[k]) + pad[2 * (2 - k)] + pad[2 * (2 - k) + 1] for k in range(3))
        crop = tuple(slice(pad[2 * (2 - k)], pad[2 * (2 - k)] + int(spatial[k])) for k in range(3))
        interval = [roi[k] if roi[k] == padded[k] else max(int(roi[k] * (1 - self.overlap)), 1) for k in range(3)]
        slices = [tuple(s) for s in dense_patch_slices(padded, roi, interval, return_slice=True)]
        importance = compute_importance_map(roi, mode=self.mode, sigma_scale=self.sigma_scale, device=device,
                                            dtype=dtype).reshape(roi)
        count = torch.zeros(padded, device=device, dtype=dtype)
        for s in slices:
            count[s] += importance
        return WindowLayout(tuple(pad), crop, padded, slices, importance, count)  # type: ignore[arg-type]

    def infer(self, run_network: Callable[["torch.Tensor"], "torch.Tensor"], x: "torch.Tensor",
              batch_size: int = 1) -> "torch.Tensor":
        """The blended output of ``run_network`` over all windows of ``x`` (differentiable, MONAI underneath)."""
        from monai.inferers import sliding_window_inference

        return sliding_window_inference(x, tuple(int(r) for r in self.roi_size), int(batch_size), run_network,
                                        overlap=self.overlap, mode=self.mode, sigma_scale=self.sigma_scale)


__all__ = ["SlidingWindow", "WindowLayout"]
