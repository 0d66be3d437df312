"""Integrated Gradients (Sundararajan et al. 2017) for every target from one forward per path point."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import MethodParameterError
from . import gradient_engine as engine
from .inputs import baseline_tensor, describe_baseline
from .registry import MethodSpec, OptionSpec, register_method
from .result import AttributionResult
from .vanilla_gradient import GRAD_STRATEGY_OPTION

if TYPE_CHECKING:
    import torch

    from ..models.sliding_window import SlidingWindow

IG_RULES = ("trapezoid", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def integration_rule(rule: str, n_steps: int) -> tuple[list[float], list[float]]:
    """(step sizes, alphas) of a path-integral rule over [0, 1].

    ``riemann_*`` and ``gausslegendre`` reproduce captum's ``method`` of the same name number for number (alphas
    from ``torch.linspace`` in float32, as captum does), so float64 runs match captum to rounding. Beware that
    captum's ``riemann_trapezoid`` uses step 1/n on n points with halved end weights: its weights sum to
    1 − 1/n, so even for a linear model Σ attributions = (1 − 1/n)·(f̂(x) − f̂(x')). ``trapezoid`` is the
    composite trapezoidal rule on the same n equispaced points (step 1/(n−1), weights sum to 1), exact for
    linear models, and therefore the default of :func:`integrated_gradients`.
    """
    import torch

    if rule not in IG_RULES:
        raise MethodParameterError(f"Unknown integration rule {rule!r}; choose one of {', '.join(IG_RULES)}.")
    n = int(n_steps)
    if rule == "gausslegendre":
        if n < 1:
            raise MethodParameterError(f"option 'n_steps' got {n}; gausslegendre needs n_steps >= 1.")
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return (0.5 * weights).tolist(), (0.5 * (1 + nodes)).tolist()
    if n < 2:
        raise MethodParameterError(f"option 'n_steps' got {n}; rule {rule} needs n_steps >= 2.")
    if rule == "trapezoid":
        steps = [1.0 / (n - 1)] * n
        steps[0] /= 2
        steps[-1] /= 2
        return steps, np.linspace(0.0, 1.0, n).tolist()
    steps = [1.0 / n] * n
    if rule == "riemann_trapezoid":
        steps[0] /= 2
        steps[-1] /= 2
        alphas = torch.linspace(0, 1, n).tolist()
    elif rule == "riemann_left":
        alphas = torch.linspace(0, 1 - 1 / n, n).tolist()
    elif rule == "riemann_middle":
        alphas = torch.linspace(1 / (2 * n), 1 - 1 / (2 * n), n).tolist()
    else:
        alphas = torch.linspace(1 / n, 1, n).tolist()
    return steps, alphas


def integrated_gradients(
    model: Any,
    x: Any,
    target: Any,
    *,
    baseline: "float | torch.Tensor" = 0.0,
    n_steps: int = 20,
    rule: str = "trapezoid",
    device: Any = None,
    batch_size: int | None = None,
    window: "SlidingWindow | str | None" = "auto",
    grad_strategy: str = "loop",
    progress: engine.Progress | None = None,
    cancel: engine.Cancel | None = None,
) -> AttributionResult:
    """(x − x') · Σ_i s_i ∇score_k(x' + α_i (x − x')) for every target.

    ``rule`` is ``"trapezoid"`` (default, completeness-exact for linear models) or one of captum's ``method``
    names to reproduce captum exactly; see :func:`integration_rule`. ``params["completeness_gap"]`` reports, per
    target, Σ attributions − (score(x) − score(x')): the integration error to look at before trusting the map.
    The two end-point scores are free with the trapezoid rule and cost two extra forwards otherwise.
    """
    import torch

    started = time.perf_counter()
    x, network, window = engine.prepare(model, x, target, device, window)
    base = baseline_tensor(baseline, x)
    steps, alphas = integration_rule(rule, n_steps)
    delta = x - base
    acc, scores, info = engine.accumulate(
        network, x, target, method="integrated_gradients", make_sample=lambda i: base + alphas[i] * delta,
        sample_weights=steps, window=window, batch_size=batch_size, grad_strategy=grad_strategy,
        progress=progress, cancel=cancel,
    )
    acc = acc * delta.to(acc.dtype)  # (K, C, D, H, W) * (1, C, D, H, W)
    if alphas[0] == 0.0 and alphas[-1] == 1.0:  # completeness from the path's own end points
        f_x, f_base = scores[-1], scores[0]
    else:
        (f_x, f_base), extra = engine.scores_without_graph(network, [x, base], target, window)
        info["n_evaluations"] += extra
    gap = (acc.flatten(1).sum(1).to(torch.float64).cpu() - (f_x - f_base)).tolist()
    params = {"baseline": describe_baseline(baseline), "n_steps": int(n_steps), "rule": rule,
              "completeness_gap": {name: float(g) for name, g in zip(target.names, gap)},
              "window": engine.window_params(window), "grad_strategy": grad_strategy}
    return engine.finish(acc, target, model, "integrated_gradients", params, info, started, None)


register_method(MethodSpec(
    "integrated_gradients", "Integrated Gradients",
    "Gradients integrated along the straight path from a constant baseline to the input.",
    "Sundararajan, Taly & Yan 2017, Axiomatic Attribution for Deep Networks, ICML, arXiv:1703.01365",
    integrated_gradients, ("segmentation",), (
        OptionSpec("n_steps", int, 20, "points on the path from the baseline to the input", label="Steps",
                   minimum=1, cli_flag="--samples"),
        OptionSpec("rule", str, "trapezoid", "integration rule (trapezoid is exact for linear models; the others "
                   "reproduce captum)", label="Integration rule", choices=IG_RULES),
        OptionSpec("baseline", float, 0.0, "constant model-space intensity the path starts from", label="Baseline",
                   allow_array=True),
        GRAD_STRATEGY_OPTION,
    ), deterministic=True), replace=True)
