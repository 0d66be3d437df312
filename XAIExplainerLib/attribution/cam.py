"""Grad-CAM++ and LayerCAM on named layers of a 3D (or single-slice 2D) network, every target from one forward.

For a layer with activations ``A_c`` (channel c) and the gradient ``g_kc = ∂score_k/∂A_c`` of target k:

* **Grad-CAM++** (Chattopadhyay et al. 2018, eq. 19 with the exponential score's closed form):
  ``α_kc(v) = g² / (2g² + Σ_u A_c(u)·g³) = 1 / (2 + Σ_u A_c(u)·g_kc(v))`` where ``g_kc(v) > 0`` (0 elsewhere),
  ``w_kc = Σ_v α_kc(v)·ReLU(g_kc(v))`` and the map ``ReLU(Σ_c w_kc A_c)``.
* **LayerCAM** (Jiang et al. 2021): ``ReLU(Σ_c ReLU(g_kc) ⊙ A_c)`` per layer; several layers are fused by the
  element-wise MAXIMUM of the layer maps, each first divided by its own maximum (the paper's eq. 1.9 in the
  thesis; option ``tanh_gamma`` > 0 applies tanh(γ·M/max M) instead, the scaling LayerCAM uses for shallow layers,
  γ = 2 in its implementations). pytorch-grad-cam averages min–max-normalised layer maps instead.

Numerics, on purpose unlike MONAI's ``GradCAMpp``: the score is never exponentiated. MONAI multiplies the
gradient by ``exp(score)`` (NaN for scores above ~88.7 in float32, an all-zero map below ~−103) — a positive
factor that only rescales the map, so it is dropped here, as pytorch-grad-cam drops it. α is computed as
``1 / (2 + ΣA·g)`` (g² cancelled) instead of ``g² / (2g² + ΣA·g³ + ε)``, so it does not depend on the
gradients' magnitude (pytorch-grad-cam's ε = 1e-6 dominates for gradients below ~1e-3); where ``2 + ΣA·g ≤ 0``
(possible only for a layer with negative activations) α is set to 0, counted in ``alpha_undefined``.

Sign convention: maps are ≥ 0 and positive where strengthening the layer's features raises the SCORE —
``higher``: raises ŷ, ``lower``: lowers ŷ, ``closeness``: moves ŷ towards a*. CAM never shows evidence against
(the ReLU drops it): explain ``score=lower`` for what lowers ŷ. With one layer the map keeps the score's units
(comparable between targets); with several it is the fused, per-layer-normalised map in [0, 1].

Upsampling: the layer map is interpolated to the input grid with ``torch.nn.functional.interpolate``
(trilinear; bilinear for a 2D layer of a single-slice input), which never undershoots zero, unlike the cubic
spline ``scipy.ndimage.zoom`` of pytorch-grad-cam. A map that is zero everywhere is reported, not shown as an
empty image: ``CamResult.blank`` per target, the reason (e.g. "every channel weight is <= 0") in
``params["blank_targets"]`` and a :class:`BlankMapWarning`.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import InvalidVolumeError, MethodParameterError
from . import layer_hooks as hooks
from .inputs import check_target, choose_device, is_adapter, prepare_input, run_description
from .registry import MethodSpec, OptionSpec, register_method
from .result import AttributionResult

if TYPE_CHECKING:
    import torch

CAM_METHODS = ("gradcampp", "layercam")


class BlankMapWarning(UserWarning):
    """A CAM map is zero everywhere (the thesis' "mostly blank" Grad-CAM++); the message says why."""


@dataclass
class CamResult(AttributionResult):
    """Maps ``(K, D, H, W)`` plus, per layer, the un-normalised map at the layer's own resolution (what
    pytorch-grad-cam's ``get_cam_image`` returns before its ReLU) and per-target statistics."""

    layer_maps: dict[str, "torch.Tensor"] = field(default_factory=dict)
    blank: list[bool] = field(default_factory=list)
    blank_reasons: dict[str, str] = field(default_factory=dict)
    layer_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    scores: list[float] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ formulas
def gradcampp_weights(acts: "torch.Tensor", grads: "torch.Tensor") -> tuple["torch.Tensor", int]:
    """Channel weights ``(K, C)`` of Grad-CAM++ from activations ``(C, *s)`` and gradients ``(K, C, *s)``, and the
    number of voxels where ``2 + ΣA·g ≤ 0`` left α undefined (set to 0)."""
    import torch

    spatial = tuple(range(2, grads.ndim))
    sum_a = acts.flatten(1).sum(1).view((1, -1) + (1,) * (grads.ndim - 2))
    denominator = 2.0 + sum_a * grads
    positive = grads > 0
    defined = positive & (denominator > 0)
    alpha = torch.where(defined, 1.0 / torch.where(defined, denominator, torch.ones_like(denominator)),
                        torch.zeros_like(grads))
    weights = (alpha * grads.clamp_min(0)).sum(spatial)
    return weights, int((positive & ~defined).sum())


def layer_map(method: str, acts: "torch.Tensor", grads: "torch.Tensor") -> tuple["torch.Tensor", dict[str, Any]]:
    """The pre-ReLU layer map ``(K, *s)`` (pytorch-grad-cam's ``get_cam_image``) and per-target statistics."""
    if method == "gradcampp":
        weights, undefined = gradcampp_weights(acts, grads)
        shape = weights.shape + (1,) * (acts.ndim - 1)
        raw = (weights.view(shape) * acts.unsqueeze(0)).sum(1)
        positive = [int(n) for n in (weights > 0).sum(1).tolist()]
        return raw, {"positive_channel_weights": positive, "channels": int(acts.shape[0]),
                     "alpha_undefined": undefined}
    weighted = grads.clamp_min(0) * acts.unsqueeze(0)  # LayerCAM: element-wise weights ReLU(g)
    raw = weighted.sum(1)
    active = (grads > 0) & (acts.unsqueeze(0) != 0)
    positive = [int(n) for n in active.flatten(2).any(2).sum(1).tolist()]
    return raw, {"positive_channel_weights": positive, "channels": int(acts.shape[0])}


def upsample(maps: "torch.Tensor", spatial: Sequence[int]) -> "torch.Tensor":
    """``(K, *s)`` layer maps → ``(K, *spatial)`` by trilinear (3D layer) or bilinear (2D layer, single-slice
    input) interpolation; non-negative in, non-negative out."""
    import torch.nn.functional as F

    spatial = tuple(int(s) for s in spatial)
    if maps.ndim - 1 == len(spatial):
        if tuple(maps.shape[1:]) == spatial:
            return maps
        return F.interpolate(maps[None], size=spatial, mode="trilinear", align_corners=False)[0]
    if maps.ndim - 1 == 2 and len(spatial) == 3 and spatial[0] == 1:
        return F.interpolate(maps[None], size=spatial[1:], mode="bilinear", align_corners=False)[0].unsqueeze(1)
    raise InvalidVolumeError(f"a layer map of shape {tuple(maps.shape[1:])} cannot be mapped onto an input of "
                             f"{spatial}: 2D layers need a single-slice input (D = 1).")


def fuse(maps: Sequence["torch.Tensor"], tanh_gamma: float = 0.0) -> "torch.Tensor":
    """One layer: the map itself (score units). Several: element-wise max of the per-target normalised maps
    (M / max M, or tanh(γ·M / max M) for γ > 0); a layer map that is zero stays zero."""
    import torch

    if len(maps) == 1:
        return maps[0]
    normalised = []
    for m in maps:
        peak = m.flatten(1).amax(1).view((-1,) + (1,) * (m.ndim - 1))
        scaled = torch.where(peak > 0, m / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(m))
        normalised.append(torch.tanh(tanh_gamma * scaled) if tanh_gamma > 0 else scaled)
    return torch.stack(normalised).amax(0)


# ------------------------------------------------------------------------------------------------ blank maps
def blank_reason(method: str, stats: dict[str, dict[str, Any]], k: int) -> str:
    """Why target k's map is zero, from the layers' statistics."""
    parts = []
    for layer, s in stats.items():
        if s["positive_channel_weights"][k] == 0:
            what = ("every channel weight is <= 0 (no feature has a positive gradient)" if method == "gradcampp"
                    else "every element-wise weight ReLU(dscore/dA) is 0 where the layer is active")
        else:
            what = (f"{s['positive_channel_weights'][k]} of {s['channels']} channels have positive weight but the "
                    "weighted sum of activations is <= 0 everywhere")
        parts.append(f"layer {layer}: {what}")
    return "; ".join(parts)


def _blank_report(method: str, names: Sequence[str], fused: "torch.Tensor", stats: dict, skip: Sequence[bool]
                  ) -> tuple[list[bool], dict[str, str]]:
    blank, reasons = [], {}
    for k, name in enumerate(names):
        is_blank = not bool((fused[k] > 0).any())
        blank.append(is_blank)
        if is_blank:
            reasons[name] = ("the target is absent (its score is identically 0)" if skip and skip[k]
                             else blank_reason(method, stats, k))
            warnings.warn(f"{method}: the map of '{name}' is blank — {reasons[name]}. The score would not rise by "
                          "strengthening any feature of these layers; try another layer, score or method "
                          "(SmoothGrad).", BlankMapWarning, stacklevel=3)
    return blank, reasons


# ------------------------------------------------------------------------------------------------ the method
def _prepare(model: Any, x: Any, target: Any, device: Any, layers: "str | Sequence[str]"):
    check_target(target)
    x = prepare_input(model, x, choose_device(model, x, device))
    forward = model if is_adapter(model) else hooks.hooked_network(model)
    names = hooks.parse_layer_names(layers)
    if names == [hooks.AUTO]:
        names = [hooks.last_spatial_layer(model, forward, x)]
    elif hooks.AUTO in names:
        raise MethodParameterError("layers: 'auto' cannot be combined with named layers; name them all.")
    hooks.find_layers(model, names)  # unknown names and TorchScript: before the forward with gradients
    return x, forward, names


def class_activation_map(model: Any, x: Any, target: Any, *, method: str, layers: "str | Sequence[str]" = "auto",
                         tanh_gamma: float = 0.0, device: Any = None, progress: Any = None, cancel: Any = None
                         ) -> CamResult:
    """Grad-CAM++ (``method="gradcampp"``) or LayerCAM (``"layercam"``) of every target on ``layers``."""
    import torch

    if method not in CAM_METHODS:
        raise MethodParameterError(f"method must be one of {', '.join(CAM_METHODS)}, got {method!r}.")
    started = time.perf_counter()
    x, forward, names = _prepare(model, x, target, device, layers)
    if progress is not None:
        progress(0.0, f"{method}: forward and {len(target.names)} backward passes")
    if cancel is not None and cancel():
        from ..errors import CancelledError

        raise CancelledError(f"{method} cancelled.")
    skip = [n in set(getattr(target, "absent", [])) for n in target.names]
    lg = hooks.layer_gradients(model, forward, x, target, names, skip)
    spatial = tuple(x.shape[2:])
    raw_maps, up, stats = {}, [], {}
    for name, acts, grads in zip(lg.names, lg.activations, lg.gradients):
        raw, stats[name] = layer_map(method, acts, grads)
        raw_maps[name] = raw.detach().cpu()
        up.append(upsample(raw.clamp_min(0), spatial))
    fused = fuse(up, tanh_gamma).clamp_min(0)
    blank, reasons = _blank_report(method, list(target.names), fused, stats, skip)
    if progress is not None:
        progress(1.0, f"{method}: done")
    params = {"layers": list(names), "layer_set": "+".join(names), "fusion": "max of per-layer normalised maps"
              if len(names) > 1 else "single layer (score units)", "tanh_gamma": float(tanh_gamma),
              "upsampling": "trilinear (torch)", "blank_targets": dict(reasons),
              "layer_shapes": {n: list(a.shape[1:]) for n, a in zip(lg.names, lg.activations)},
              **run_description(model)}
    out = fused.detach().cpu()
    out = out.double() if x.dtype == torch.float64 else out.float()
    return CamResult(out, list(target.names), method, params, n_model_evaluations=1,
                     seconds=time.perf_counter() - started, seed=None, layer_maps=raw_maps, blank=blank,
                     blank_reasons=reasons, layer_stats=stats, scores=[float(s) for s in lg.scores])


def gradcampp(model: Any, x: Any, target: Any, *, layers: "str | Sequence[str]" = "auto", device: Any = None,
              progress: Any = None, cancel: Any = None) -> CamResult:
    """Grad-CAM++ maps of every target of ``target`` on ``layers`` (see the module docstring for the formula,
    the sign convention and the numerics)."""
    return class_activation_map(model, x, target, method="gradcampp", layers=layers, device=device,
                                progress=progress, cancel=cancel)


def layercam(model: Any, x: Any, target: Any, *, layers: "str | Sequence[str]" = "auto", tanh_gamma: float = 0.0,
             device: Any = None, progress: Any = None, cancel: Any = None) -> CamResult:
    """LayerCAM maps of every target, several layers fused by element-wise max of their normalised maps."""
    return class_activation_map(model, x, target, method="layercam", layers=layers, tanh_gamma=tanh_gamma,
                                device=device, progress=progress, cancel=cancel)


_LAYERS_OPTION = OptionSpec(
    "layers", str, hooks.AUTO, "layer names as in named_modules(), space- or comma-separated ('auto': the last "
    "spatial feature map before pooling)", label="Layers")
_PLUMBING = ("device", "progress", "cancel")
_KINDS = ("regression", "classifier")

register_method(MethodSpec(
    "gradcampp", "Grad-CAM++",
    "Layer activations weighted by alpha-weighted positive gradients (no exp of the score: stable for any output).",
    "Chattopadhyay et al. 2018, Grad-CAM++: Generalized Gradient-based Visual Explanations, arXiv:1710.11063",
    gradcampp, _KINDS, (_LAYERS_OPTION,), deterministic=True, plumbing=_PLUMBING), replace=True)

register_method(MethodSpec(
    "layercam", "LayerCAM",
    "Activations weighted element-wise by positive gradients; several layers fused by element-wise maximum.",
    "Jiang et al. 2021, LayerCAM: Exploring Hierarchical Class Activation Maps for Localization, IEEE TIP 30",
    layercam, _KINDS, (_LAYERS_OPTION, OptionSpec(
        "tanh_gamma", float, 0.0, "0: fuse layer maps divided by their maxima; > 0: tanh(gamma*M/max M) first "
        "(LayerCAM's scaling of shallow layers, gamma 2)", label="Fusion tanh gamma", minimum=0.0, maximum=100.0)),
    deterministic=True, plumbing=_PLUMBING), replace=True)

__all__ = ["BlankMapWarning", "CAM_METHODS", "CamResult", "class_activation_map", "fuse", "gradcampp",
           "gradcampp_weights", "layer_map", "layercam", "upsample"]
