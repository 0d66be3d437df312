"""Vanilla Gradient (Simonyan et al. 2014): ∂score_k/∂x for every target, one forward and K backward passes."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from . import gradient_engine as engine
from .registry import MethodSpec, OptionSpec, register_method
from .result import AttributionResult

if TYPE_CHECKING:
    from ..models.sliding_window import SlidingWindow

#: Shared by the three gradient methods: how the K backward passes are run.
GRAD_STRATEGY_OPTION = OptionSpec(
    "grad_strategy", str, "loop", "per-class backward passes: a loop (less memory, the faster on CPU) or one "
    "vmapped backward", label="Backward strategy", choices=engine.GRAD_STRATEGIES)


def vanilla_gradient(
    model: Any,
    x: Any,
    target: Any,
    *,
    device: Any = None,
    batch_size: int | None = None,
    window: "SlidingWindow | str | None" = "auto",
    grad_strategy: str = "loop",
    progress: engine.Progress | None = None,
    cancel: engine.Cancel | None = None,
) -> AttributionResult:
    """∂score_k/∂x for every target k of ``target`` (e.g. every class of a :class:`ClassAggregate`).

    ``model`` is an adapter (run in its own precision; explained window by window when its sliding window does
    not cover ``x``, see ``window``) or a bare network/function, differentiated as given.
    """
    started = time.perf_counter()
    x, network, window = engine.prepare(model, x, target, device, window)
    acc, _scores, info = engine.accumulate(
        network, x, target, method="vanilla_gradient", make_sample=lambda i: x, sample_weights=[1.0],
        window=window, batch_size=batch_size, grad_strategy=grad_strategy, progress=progress, cancel=cancel,
    )
    params = {"window": engine.window_params(window), "grad_strategy": grad_strategy}
    return engine.finish(acc, target, model, "vanilla_gradient", params, info, started, None)


register_method(MethodSpec(
    "vanilla_gradient", "Vanilla gradient",
    "Gradient of each class score with respect to the input voxels: one forward, one backward per class.",
    "Simonyan, Vedaldi & Zisserman 2014, Deep Inside Convolutional Networks, arXiv:1312.6034",
    vanilla_gradient, ("segmentation",), (GRAD_STRATEGY_OPTION,), deterministic=True), replace=True)
