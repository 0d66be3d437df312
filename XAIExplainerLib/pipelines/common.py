"""The path every explainer product shares: a volume through a model adapter and an attribution method to maps on
the input grid, with provenance.

Data flow (one way)::

    Volume ─check→ ─preprocess→ model space ─to_tensor→ x ─forward, no grad→ clean output   (prepare_input, predict)
    method(forward, x, target, **options) → AttributionResult ─to_array→ maps (K, z, y, x) in model space  (run_method)
    maps ─to_input_grid→ volumes on the input grid                                            (to_input_grid)
    provenance.run_provenance(...) → what ran, on what, how long

A product (Agg2Exp in :mod:`.agg2exp`) builds its target from the clean output and adds its own aggregation;
nothing here knows about RoIs or classes, so a regression or image-to-image explainer reuses every step.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import numpy as np

from ..errors import DeviceError, InvalidVolumeError
from ..progress import CancelCallback, ProgressCallback
from ..volume import Volume

if TYPE_CHECKING:
    from ..attribution.registry import MethodSpec
    import torch

__all__ = ["ModelInput", "Timings", "check_device", "model_device", "model_forward",
           "prepare_input", "predict", "require_volume", "resolve_method", "run_method", "to_array", "to_input_grid"]


class Timings(dict):
    """Seconds per pipeline step (``{"preprocess_s": ..., ...}``), recorded in the provenance."""

    @contextlib.contextmanager
    def measure(self, key: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self[key] = time.perf_counter() - started


@dataclass
class ModelInput:
    """The input as the network sees it, next to the user's volume (which is never modified)."""

    volume: Volume  # the user's input, on its own grid
    model_space: Volume  # preprocessed (orientation, spacing, intensity): the grid the maps are computed on
    x: "torch.Tensor"  # (1, C_in, ...) on ``device``
    device: "torch.device"


# ---- checks ------------------------------------------------------------------------------------------------------
def require_volume(volume: Any, caller: str = "explain_volume") -> Volume:
    """The input must be a :class:`Volume` (geometry travels with the array; a bare array would lose it)."""
    if not isinstance(volume, Volume):
        raise InvalidVolumeError(f"{caller} needs a Volume, got {type(volume).__name__}; use read_volume().")
    return volume


def model_device(model: Any) -> "torch.device":
    """Where the model's weights live: its ``device`` attribute, else its first parameter's, else the CPU."""
    import torch

    dev = getattr(model, "device", None)
    if dev is not None:
        return torch.device(dev)
    try:
        return next(model.network.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def check_device(model: Any, requested: "str | None") -> "torch.device":
    """The model's device; a different explicit request is refused (weights and inputs must share one device)."""
    from ..device import resolve_device

    dev = model_device(model)
    if requested is not None and str(requested).lower() != "auto" and resolve_device(requested) != dev:
        raise DeviceError(
            f"The model was loaded on {dev} but device '{requested}' was requested; load the model with "
            f"SegmentationModel.load(path, device='{requested}') so that weights and inputs share one device."
        )
    return dev


# ---- model -------------------------------------------------------------------------------------------------------
def model_forward(model: Any) -> Callable:
    """The differentiable function methods explain: a segmentation adapter's ``logits``, else the model itself."""
    return getattr(model, "logits", None) or model


def to_array(model: Any, tensor: "torch.Tensor") -> np.ndarray:
    """A (..., D, H, W) tensor as numpy in (z, y, x) order, through the adapter's axis convention when it has one."""
    convert = getattr(model, "to_array", None)
    return convert(tensor) if convert is not None else tensor.detach().float().cpu().numpy()


def prepare_input(volume: Volume, model: Any, device: "str | None", report: ProgressCallback,
                  timings: Timings) -> ModelInput:
    """Check the device, preprocess into model space and build the network's input tensor."""
    dev = check_device(model, device)
    with timings.measure("preprocess_s"):
        report(0.0, "preprocessing")
        model_space = model.preprocess(volume)
        x = model.to_tensor(model_space).to(dev)
    return ModelInput(volume, model_space, x, dev)


def predict(model: Any, x: "torch.Tensor") -> "torch.Tensor":
    """The clean (unperturbed) output, without a graph: targets fix their masks from it."""
    import torch

    with torch.no_grad():
        return model_forward(model)(x)


# ---- method ------------------------------------------------------------------------------------------------------
def resolve_method(method: "str | Callable") -> "MethodSpec":
    """The registry's spec for a method name, a registered function, or a user's own callable (validated later)."""
    from ..attribution.registry import get_method

    return get_method(method)


def run_method(spec: "MethodSpec", model: Any, inputs: ModelInput, target: Any, params: Mapping[str, Any],
               method_inputs: Mapping[str, Any], *, batch_size: int | None, progress: ProgressCallback,
               cancel: "CancelCallback | None", seed: int, timings: Timings) -> tuple[Any, np.ndarray]:
    """Run the attribution method on the model's forward function; ``(result, maps)`` with maps (K, z, y, x) float32
    in model space (the tensor's axes brought to volume order). ``method_inputs`` are what the spec ``needs`` from
    the pipeline (e.g. the clean ``label_map``)."""
    from ..attribution.registry import call_method

    with timings.measure("attribution_s"):
        result = call_method(spec, model_forward(model), inputs.x, target, dict(params), device=inputs.device,
                             batch_size=batch_size, progress=progress, cancel=cancel, seed=seed, **method_inputs)
    return result, to_array(model, result.attributions).astype(np.float32)


# ---- back to the input grid --------------------------------------------------------------------------------------
def to_input_grid(model: Any, inputs: ModelInput, array: np.ndarray, interpolator: str, dtype: Any,
                  **metadata: Any) -> Volume:
    """A model-space array (z, y, x) resampled onto the user's input grid, cast to ``dtype``.

    ``nearest`` for label maps (labels stay labels), ``linear`` for maps; the adapter knows the inverse of its
    preprocessing (orientation, spacing, crop).
    """
    out = model.to_input_grid(inputs.model_space.with_array(array), inputs.volume, interpolator=interpolator)
    return out.with_array(np.asarray(out.array).astype(dtype, copy=False), **metadata)
