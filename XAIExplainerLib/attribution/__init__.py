"""Voxel attributions of 3D networks for all requested targets at once (Agg2Exp, issue 3).

Every method has the signature ``method(model, x, target, **options) -> AttributionResult`` where ``model``
maps (B, C_in, D, H, W) to its output, ``x`` is one volume (1, C_in, D, H, W) and ``target`` turns the output
into (B, K) scores (e.g. a :class:`ClassAggregate` built from the clean prediction). Importing this package
registers the built-in methods in :mod:`.registry`; :data:`ATTRIBUTION_METHODS` is a read-only
``name -> function`` view of it kept for old code.
"""
# one file per method; importing them registers them, in this (menu) order
from .vanilla_gradient import vanilla_gradient  # noqa: I001
from .smoothgrad import smoothgrad
from .integrated_gradients import integrated_gradients
from .kernel_shap import kernel_shap, kernel_shap_cubes, kernel_shap_semantic
from .lime import image_reg_lime
from .counterfactual import counterfactual
from ..models.sliding_window import SlidingWindow
from .registry import (
    MethodFunctions,
    MethodSpec,
    OptionSpec,
    available_methods,
    call_method,
    get_method,
    register_method,
    unregister_method,
)
from .result import AttributionResult
from .targets import ClassAggregate, OutputMask, RegressionScore, Target

#: Read-only live view ``name -> function`` of the method registry (use :func:`available_methods` in new code).
ATTRIBUTION_METHODS = MethodFunctions()

__all__ = [
    "ATTRIBUTION_METHODS",
    "AttributionResult",
    "counterfactual",
    "ClassAggregate",
    "MethodSpec",
    "OptionSpec",
    "OutputMask",
    "RegressionScore",
    "SlidingWindow",
    "Target",
    "available_methods",
    "call_method",
    "get_method",
    "image_reg_lime",
    "integrated_gradients",
    "kernel_shap",
    "kernel_shap_cubes",
    "kernel_shap_semantic",
    "register_method",
    "smoothgrad",
    "unregister_method",
    "vanilla_gradient",
]
