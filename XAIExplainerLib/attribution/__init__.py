"""Voxel attributions of segmentation models for all requested classes at once (Agg2Exp, issue 3).

Every method has the signature ``method(model, x, target, **options) -> AttributionResult`` where ``model``
maps (B, C_in, D, H, W) to logits (B, C, D, H, W), ``x`` is one volume (1, C_in, D, H, W) and ``target`` is a
:class:`ClassAggregate` built from the clean prediction. :data:`ATTRIBUTION_METHODS` lists them by name.
"""
from typing import Callable

from .gradients import SlidingWindow, integrated_gradients, smoothgrad, vanilla_gradient
from .kernel_shap import KERNEL_SHAP_METHODS, kernel_shap, kernel_shap_cubes, kernel_shap_semantic
from .result import AttributionResult
from .targets import ClassAggregate

ATTRIBUTION_METHODS: "dict[str, Callable[..., AttributionResult]]" = {
    "vanilla_gradient": vanilla_gradient,
    "smoothgrad": smoothgrad,
    "integrated_gradients": integrated_gradients,
    **KERNEL_SHAP_METHODS,  # kernel_shap_cubes, kernel_shap_semantic
}

__all__ = [
    "ATTRIBUTION_METHODS",
    "AttributionResult",
    "ClassAggregate",
    "SlidingWindow",
    "integrated_gradients",
    "kernel_shap",
    "kernel_shap_cubes",
    "kernel_shap_semantic",
    "smoothgrad",
    "vanilla_gradient",
]
