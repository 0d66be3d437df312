"""One input / device / baseline policy for every attribution method (and the pipelines).

Why one module: the gradient methods, KernelSHAP and the pipeline each had their own idea of where the model
lives, which inputs are accepted and what a baseline may be, so the same call could pass in one method and fail
in another. Precision is *not* decided here: the model adapter owns it (``model.precision``) and a bare network
runs as given; :func:`run_description` only records what ran.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DeviceError, GeometryMismatchError, InvalidVolumeError, ModelCapabilityError

if TYPE_CHECKING:
    import torch


def is_adapter(model: Any) -> bool:
    """A model adapter (it owns precision and sliding window), as opposed to a bare network or function."""
    return callable(getattr(model, "run_network", None)) and callable(getattr(model, "precision_context", None))


def _network(model: Any):
    """The ``nn.Module`` whose parameters tell device and dtype: the model itself or an adapter's ``network``."""
    import torch

    for candidate in (model, getattr(model, "network", None) if is_adapter(model) else None):
        if isinstance(candidate, torch.nn.Module):
            return candidate
    return None


def model_device(model: Any) -> "torch.device | None":
    """Where the model computes: an adapter's ``device``, else its first parameter's; None for plain functions."""
    import torch

    device = getattr(model, "device", None)
    if is_adapter(model) and device is not None:
        return torch.device(device)
    network = _network(model)
    if network is not None:
        for parameter in network.parameters():
            return parameter.device
    return None


def choose_device(model: Any, x: Any, device: Any = None) -> "torch.device":
    """The requested device, else the model's, else the input's; a request that contradicts the model fails."""
    import torch

    from ..device import resolve_device

    own = model_device(model)
    if device is None:
        if own is not None:
            return own
        return x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
    wanted = resolve_device(device)
    different_index = own is not None and None not in (own.index, wanted.index) and own.index != wanted.index
    if own is not None and (own.type != wanted.type or different_index):
        raise DeviceError(
            f"The model lives on {own} but device={wanted} was requested; load the model on {wanted} "
            f"(e.g. SegmentationModel.load(path, device='{wanted}')) or pass device=None."
        )
    return wanted


def prepare_input(model: Any, x: Any, device: "torch.device") -> "torch.Tensor":
    """``x`` as a detached (1, C, D, H, W) floating tensor on ``device`` in the network's parameter dtype.

    Arrays are copied (the caller's data is never aliased, let alone modified); NaN/Inf are refused up front
    because they would silently turn every attribution into NaN.
    """
    import torch

    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.array(x))
    if not isinstance(x, torch.Tensor):
        raise InvalidVolumeError(f"x must be a torch.Tensor of shape (1, channels, D, H, W), got {type(x).__name__}.")
    if x.ndim != 5 or x.shape[0] != 1:
        raise InvalidVolumeError(
            f"x must have shape (1, channels, D, H, W) (one volume, batch axis first), got {tuple(x.shape)}. "
            "Use SegmentationModel.to_tensor(volume) or x[None, None] for a (D, H, W) array."
        )
    if not torch.is_floating_point(x):
        x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise InvalidVolumeError("x contains NaN or infinite voxels; fix or mask them before explaining.")
    x = x.detach().to(device)
    network = _network(model)
    if network is not None:
        for parameter in network.parameters():
            if torch.is_floating_point(parameter) and parameter.dtype != x.dtype:
                x = x.to(parameter.dtype)  # float64 arrays into a float32 network, and the like
            break
    return x


def baseline_tensor(baseline: Any, x: "torch.Tensor") -> "torch.Tensor":
    """The reference input: a number (constant volume) or a volume/tensor that broadcasts to ``x``.

    Returned with ``x``'s shape, dtype and device, so every method interpolates or masks with the same thing.
    """
    import torch

    if isinstance(baseline, bool):
        raise InvalidVolumeError("baseline must be a number or a volume, not a bool.")
    if isinstance(baseline, (int, float, np.integer, np.floating)):
        return torch.full_like(x, float(baseline))
    if isinstance(baseline, np.ndarray):
        baseline = torch.from_numpy(np.array(baseline))
    if not isinstance(baseline, torch.Tensor):
        raise InvalidVolumeError(f"baseline must be a number or a tensor, got {type(baseline).__name__}.")
    try:
        expanded = baseline.detach().to(device=x.device, dtype=x.dtype).expand_as(x)
    except RuntimeError:
        raise GeometryMismatchError(
            f"baseline has shape {tuple(baseline.shape)} but x has shape {tuple(x.shape)}; give a number or a volume "
            "of the same grid."
        ) from None
    if not bool(torch.isfinite(expanded).all()):
        raise InvalidVolumeError("baseline contains NaN or infinite values.")
    return expanded.clone()


def check_target(target: Any) -> None:
    """A target must name its K scores (see :class:`~.targets.Target`); say how to build one otherwise."""
    if getattr(target, "names", None) is None or not callable(target):
        raise ModelCapabilityError(
            "target must be a Target (ClassAggregate, RegressionScore, OutputMask or a score function with .names); "
            "e.g. ClassAggregate.from_logits(model(x), classes, label_names)."
        )


def describe_baseline(baseline: Any) -> "float | str":
    """Provenance of a baseline: the number, or 'tensor'."""
    return float(baseline) if isinstance(baseline, (int, float, np.integer, np.floating)) else "tensor"


def run_description(model: Any) -> dict[str, Any]:
    """What precision and attention the network ran with: the adapter's word for it, or 'as given'."""
    if not is_adapter(model):
        return {"precision": "as given (bare network: the caller's dtype and autocast)"}
    return {"precision": str(getattr(model, "precision", "float32")),
            "fused_attention": bool(getattr(model, "fused_attention", False))}


__all__ = ["baseline_tensor", "check_target", "choose_device", "describe_baseline", "is_adapter", "model_device",
           "prepare_input", "run_description"]
