"""KernelSHAP on supervoxels for all classes from ONE set of coalition forwards (Agg2Exp, issue 3).

captum's ``KernelShap`` explains one output at a time: for C classes it samples and evaluates C separate sets of
coalitions and fits C regressions. The coalitions and the model outputs do not depend on the class, so here one
set of coalition forwards is scored by a multi-output target (:class:`ClassAggregate`: every class in one call)
and a single multi-output weighted least-squares fit gives all K classes — 1/K of captum's model evaluations.

The estimator is captum's, so that both agree given the same coalitions:

- sampling: the first coalition is "all features on", the second "all off", then ``k ~ p(k) ∝ (M-1)/(k(M-k))``
  features chosen uniformly (``torch.multinomial`` then the top-k of ``torch.randn``, drawn in captum's order from
  a ``torch.Generator`` seeded with ``seed``, so ``torch.manual_seed(seed)`` before captum yields the same rows);
- weights: 1 for sampled coalitions (the Shapley kernel is already in the sampling distribution) and 10⁶ for the
  two end points, which makes the fit satisfy efficiency Σφ = f(x) − f(baseline) up to ~10⁻⁶;
- solver: scikit-learn ``LinearRegression`` (with intercept) and ``sample_weight``, as captum uses, but in float64
  and with all classes as columns of one multi-output fit.

The masked forwards and the fit are the perturbation engine's (:mod:`.perturbation_engine`); this file holds
only what is KernelSHAP's own: the coalition sampling, the Shapley kernel weights and the supervoxel variants.
"""
from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any, Callable

from ..errors import InvalidVolumeError, MethodParameterError
from .inputs import baseline_tensor, check_target, choose_device, describe_baseline, prepare_input, run_description
from .perturbation_engine import masked_scores, weighted_least_squares
from .registry import MethodSpec, OptionSpec, register_method
from .result import AttributionResult
from .supervoxels import cube_grid_size, cube_supervoxels, semantic_supervoxels, validate_supervoxels

if TYPE_CHECKING:
    import torch

from ..progress import ProgressCallback  # noqa: E402 (declared once)

#: captum's weight of the all-on / all-off coalitions (``KernelShap.inf_weight``).
ENDPOINT_WEIGHT = 1_000_000.0


# --------------------------------------------------------------------------------------------- coalitions
def sample_coalitions(n_features: int, n_samples: int, seed: int = 0) -> "torch.Tensor":
    """``(n_samples, n_features)`` binary coalitions drawn exactly as captum's ``KernelShap`` draws them.

    Uses a private ``torch.Generator`` (the global RNG is left alone); its stream equals the global one after
    ``torch.manual_seed(seed)``, which is what makes the rows identical to captum's.
    """
    import torch

    if n_features < 2:
        raise ValueError(f"KernelSHAP needs at least 2 features, got {n_features}.")
    if n_samples < 2:
        raise ValueError(f"n_samples must be at least 2 (the all-on and all-off coalitions), got {n_samples}.")
    generator = torch.Generator().manual_seed(int(seed))
    k = torch.arange(n_features, dtype=torch.float)
    probs = torch.tensor(n_features - 1) / (k * (n_features - k))  # p(k) ∝ (M-1)/(k(M-k)), k = 0..M-1
    probs[0] = 0.0
    probs = probs / probs.sum(-1, keepdim=True)  # as torch.distributions.Categorical normalises
    rows = torch.zeros(n_samples, n_features, dtype=torch.long)
    rows[0] = 1
    for i in range(2, n_samples):  # sequential draws in captum's order (k, then the random vector) — cheap
        n_on = int(torch.multinomial(probs.unsqueeze(0), 1, True, generator=generator).item())
        rand_vals = torch.randn(1, n_features, generator=generator)
        threshold = torch.kthvalue(rand_vals, n_features - n_on).values.item()
        rows[i] = (rand_vals[0] > threshold).long()
    return rows


def coalition_weights(coalitions: "torch.Tensor") -> "torch.Tensor":
    """captum's similarity weights: 10⁶ for the all-on / all-off rows, 1 for every sampled coalition."""
    import torch

    n_on = coalitions.sum(1)
    endpoint = (n_on == 0) | (n_on == coalitions.shape[1])
    return torch.where(endpoint, ENDPOINT_WEIGHT, 1.0).double()


def solve_shapley(coalitions: "torch.Tensor", scores: "torch.Tensor", weights: "torch.Tensor") -> "torch.Tensor":
    """φ ``(K, F)`` float64 from one multi-output weighted fit ``scores ≈ b + coalitions @ φ`` (captum's solver)."""
    return weighted_least_squares(coalitions, scores, weights, fit_intercept=True)


def _check_coalitions(coalitions, n_features: int) -> "torch.Tensor":
    import numpy as np
    import torch

    if isinstance(coalitions, np.ndarray):
        coalitions = torch.from_numpy(coalitions)
    if not isinstance(coalitions, torch.Tensor) or coalitions.ndim != 2 or coalitions.shape[1] != n_features:
        shape = tuple(coalitions.shape) if hasattr(coalitions, "shape") else type(coalitions).__name__
        raise ValueError(
            f"coalitions must be a binary (S, {n_features}) tensor (one column per supervoxel), got {shape}."
        )
    if not bool(((coalitions == 0) | (coalitions == 1)).all()):
        raise ValueError("coalitions must hold only 0 (feature set to the baseline) and 1 (feature kept).")
    if coalitions.shape[0] < 2:
        raise ValueError("coalitions needs at least 2 rows.")
    return coalitions.detach().cpu().long()


# --------------------------------------------------------------------------------------------- methods
def _coalitions_for(n_features: int, n_samples: int, seed: int, coalitions) -> "torch.Tensor":
    """The given coalitions (checked) or ``n_samples`` drawn as captum draws them."""
    if coalitions is not None:
        return _check_coalitions(coalitions, n_features)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 3:
        raise MethodParameterError(f"n_samples must be an integer >= 3, got {n_samples!r}.")
    return sample_coalitions(n_features, n_samples, seed)


def kernel_shap(
    model,
    x: "torch.Tensor",
    target,
    *,
    supervoxels,
    n_samples: int = 1000,
    baseline: "float | torch.Tensor" = 0.0,
    seed: int = 0,
    batch_size: int | None = None,
    device: Any = None,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    coalitions: "torch.Tensor | None" = None,
) -> AttributionResult:
    """KernelSHAP values of every target score for every supervoxel, spread over its voxels.

    ``model`` maps ``(B, channels, D, H, W)`` to its output (an adapter runs in its own precision; a bare network
    as given); ``target`` maps the output to ``(B, K)`` scores (e.g. a :class:`ClassAggregate`). ``coalitions``
    (``(S, F)`` binary) replaces sampling, e.g. to feed captum's exact coalitions; ``n_samples`` is then ignored.
    Model evaluations: one per coalition (``n_samples``, end points included), whatever K.
    """
    t0 = time.perf_counter()
    check_target(target)
    x = prepare_input(model, x, choose_device(model, x, device))
    ids, n_features = validate_supervoxels(supervoxels, x.shape[2:])
    given = coalitions is not None
    coalitions = _coalitions_for(n_features, n_samples, seed, coalitions)
    if coalitions.shape[0] < n_features + 1:
        warnings.warn(
            f"{coalitions.shape[0]} coalitions for {n_features} supervoxels: the regression is underdetermined and "
            "returns the minimum-norm solution; use n_samples > n_features for Shapley estimates.",
            stacklevel=2,
        )
    scores = masked_scores(model, x, baseline_tensor(baseline, x), ids, coalitions, target, method="KernelSHAP",
                           batch_size=batch_size, progress=progress, cancel=cancel)
    phi = solve_shapley(coalitions, scores, coalition_weights(coalitions))  # (K, F)
    params = {
        "n_samples": int(coalitions.shape[0]), "n_features": int(n_features), "baseline": describe_baseline(baseline),
        "batch_size": batch_size, **run_description(model), "endpoint_weight": ENDPOINT_WEIGHT,
        "solver": "sklearn.LinearRegression(fit_intercept=True, sample_weight), float64, multi-output",
        "coalitions": "given" if given else "sampled", "absent_targets": list(getattr(target, "absent", [])),
    }
    return AttributionResult(
        attributions=phi.float()[:, ids].contiguous(),  # (K, D, H, W): each supervoxel's value on its voxels
        target_names=list(target.names), method="kernel_shap", params=params,
        n_model_evaluations=int(coalitions.shape[0]), seconds=time.perf_counter() - t0,
        seed=None if given else int(seed),
    )


def kernel_shap_cubes(
    model,
    x: "torch.Tensor",
    target,
    *,
    n_cubes: int = 512,
    n_samples: int = 1000,
    baseline: "float | torch.Tensor" = 0.0,
    seed: int = 0,
    batch_size: int | None = None,
    device: Any = None,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
) -> AttributionResult:
    """Agg2Exp's KernelSHAP on a grid of cubes (512 = 8³ by default, 1000 coalitions), all classes at once."""
    _check_input_shape(x)
    supervoxels = cube_supervoxels(x.shape[2:], n_cubes)
    result = kernel_shap(
        model, x, target, supervoxels=supervoxels, n_samples=n_samples, baseline=baseline, seed=seed,
        batch_size=batch_size, device=device, progress=progress, cancel=cancel,
    )
    result.method = "kernel_shap_cubes"
    result.params["n_cubes"] = int(n_cubes)
    result.params["cubes_per_axis"] = cube_grid_size(n_cubes)
    return result


def kernel_shap_semantic(
    model,
    x: "torch.Tensor",
    target,
    *,
    label_map=None,
    n_samples: int = 200,
    baseline: "float | torch.Tensor" = 0.0,
    seed: int = 0,
    batch_size: int | None = None,
    device: Any = None,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
) -> AttributionResult:
    """Agg2Exp's KernelSHAP on semantic supervoxels: one feature per label of the clean prediction (200 coalitions).

    Without ``label_map`` the argmax of the clean output is used, which costs one extra model evaluation (the
    registry declares that pipelines supply it: ``needs=("label_map",)``).
    """
    import torch

    _check_input_shape(x)
    extra = 0
    if label_map is None:
        xin = prepare_input(model, x, choose_device(model, x, device))
        with torch.no_grad():
            label_map = model(xin)[0].argmax(0).cpu()
        extra = 1
    result = kernel_shap(
        model, x, target, supervoxels=semantic_supervoxels(label_map), n_samples=n_samples, baseline=baseline,
        seed=seed, batch_size=batch_size, device=device, progress=progress, cancel=cancel,
    )
    result.method = "kernel_shap_semantic"
    result.n_model_evaluations += extra
    result.params["label_map"] = "given" if extra == 0 else "clean prediction (argmax)"
    return result


def _check_input_shape(x) -> None:
    if not hasattr(x, "shape") or len(x.shape) != 5:
        raise InvalidVolumeError(f"x must be a tensor (1, channels, D, H, W), got shape {getattr(x, 'shape', None)}.")


__all__ = [
    "coalition_weights",
    "kernel_shap",
    "kernel_shap_cubes",
    "kernel_shap_semantic",
    "sample_coalitions",
    "solve_shapley",
]


# --------------------------------------------------------------------------------------------- registry
_AGG2EXP = "Chrabaszcz et al. 2024, Aggregated Attributions for Explanatory Analysis of 3D Segmentation Models " \
           "(Agg2Exp), arXiv:2407.16653"
_KERNEL_SHAP = "Lundberg & Lee 2017, A Unified Approach to Interpreting Model Predictions, NeurIPS"


def _coalitions_option(default: int) -> OptionSpec:
    return OptionSpec("n_samples", int, default, "coalitions evaluated (all-on and all-off included); more than "
                      "the number of supervoxels for Shapley estimates", label="Coalitions", minimum=3,
                      cli_flag="--samples")


def _baseline_option() -> OptionSpec:
    return OptionSpec("baseline", float, 0.0, "model-space intensity a supervoxel takes when it is left out",
                      label="Baseline", allow_array=True)


def _register_kernel_shap_methods() -> None:
    """Agg2Exp's two KernelSHAP variants with the paper's defaults."""
    register_method(MethodSpec(
        "kernel_shap_cubes", "KernelSHAP (cubes)",
        "Shapley values of a grid of cubic supervoxels, all classes from one set of coalition forwards.",
        f"{_KERNEL_SHAP}; {_AGG2EXP}", kernel_shap_cubes, ("segmentation",), (
            _coalitions_option(1000),
            OptionSpec("n_cubes", int, 512, "number of cubes (rounded to a cube of a whole number per axis)",
                       label="Cubes", minimum=8, cli_flag="--cubes"),
            _baseline_option(),
        ), deterministic=False), replace=True)
    register_method(MethodSpec(
        "kernel_shap_semantic", "KernelSHAP (semantic)",
        "Shapley values of the predicted segments as supervoxels, all classes from one set of coalition forwards.",
        f"{_KERNEL_SHAP}; {_AGG2EXP}", kernel_shap_semantic, ("segmentation",),
        (_coalitions_option(200), _baseline_option()), deterministic=False, needs=("label_map",)), replace=True)


_register_kernel_shap_methods()
