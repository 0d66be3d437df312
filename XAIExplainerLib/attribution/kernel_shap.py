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
"""
from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any, Callable

from ..errors import CancelledError, DeviceError, InvalidVolumeError, MethodParameterError
from ..models.fused_attention import fused_window_attention
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
    """One multi-output weighted least-squares fit ``scores ≈ b + coalitions @ φ``; returns φ as ``(K, F)`` float64.

    Every column of ``scores (S, K)`` is a class; the fit is captum's (``LinearRegression`` with intercept and
    ``sample_weight``), done once for all K columns in float64.
    """
    import torch
    from sklearn.linear_model import LinearRegression

    X = coalitions.detach().double().cpu().numpy()
    Y = scores.detach().double().cpu().numpy()
    w = weights.detach().double().cpu().numpy()
    fit = LinearRegression().fit(X, Y, sample_weight=w)
    return torch.from_numpy(fit.coef_.reshape(Y.shape[1], X.shape[1]).copy())


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


# --------------------------------------------------------------------------------------------- model plumbing
def _model_device(model) -> "torch.device | None":
    import torch

    owner = getattr(model, "__self__", model)  # a bound method such as SegmentationModel.logits
    device = getattr(owner, "device", None)
    if isinstance(device, torch.device):
        return device
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return None


def _prepare_input(model, x, device) -> "torch.Tensor":
    import torch

    from ..device import resolve_device

    if not isinstance(x, torch.Tensor):
        raise InvalidVolumeError(f"x must be a torch.Tensor (1, channels, D, H, W), got {type(x).__name__}.")
    if x.ndim != 5 or x.shape[0] != 1:
        raise InvalidVolumeError(f"x must have shape (1, channels, D, H, W) (one volume), got {tuple(x.shape)}.")
    if not x.is_floating_point() or not bool(torch.isfinite(x).all()):
        raise InvalidVolumeError("x must be a finite floating-point tensor (no NaN/Inf); check the preprocessing.")
    model_device = _model_device(model)
    target_device = resolve_device(device) if device is not None else (model_device or x.device)
    if model_device is not None and model_device.type != target_device.type:
        raise DeviceError(
            f"The model lives on {model_device} but device={target_device} was requested; load the model on "
            f"{target_device} (e.g. SegmentationModel.load(path, device='{target_device}')) or pass device=None."
        )
    return x.detach().to(target_device)


def _baseline_tensor(baseline, x: "torch.Tensor") -> "torch.Tensor":
    import torch

    if isinstance(baseline, (int, float)):
        return torch.full((1,) * x.ndim, float(baseline), dtype=x.dtype, device=x.device)
    if isinstance(baseline, torch.Tensor):
        try:
            torch.broadcast_shapes(baseline.shape, x.shape)
        except RuntimeError:
            raise InvalidVolumeError(
                f"baseline of shape {tuple(baseline.shape)} does not broadcast to the input {tuple(x.shape)}."
            ) from None
        return baseline.detach().to(device=x.device, dtype=x.dtype)
    raise InvalidVolumeError(f"baseline must be a number or a tensor, got {type(baseline).__name__}.")


def _evaluate_coalitions(model, x, baseline, ids, coalitions, target, batch_size, autocast, progress, cancel):
    """Scores ``(S, K)`` of every coalition; masks are built per batch from the ``(D, H, W)`` ids (no loops).

    Without ``batch_size``: 2 per forward on the CPU (batching barely helps there), and on CUDA one coalition is
    run first while the allocator peak is measured, which sizes the remaining batches from free memory. A CUDA
    out-of-memory halves the batch down to 1, then raises :class:`DeviceError`.
    """
    import torch

    from . import _batching
    from .gradients import _autocast_context

    ids_dev = ids.to(x.device)
    n = coalitions.shape[0]
    probe = None
    if batch_size is None:
        if x.device.type == "cuda":
            probe, batch_size = _batching.MemoryProbe(x.device), 1
        else:
            batch_size = 2
    scores: list[torch.Tensor] = []
    start = 0
    while start < n:
        if cancel is not None and cancel():
            raise CancelledError("KernelSHAP was cancelled.")
        rows = coalitions[start:start + batch_size].to(x.device).bool()
        keep = rows[:, ids_dev].unsqueeze(1)  # (b, 1, D, H, W): voxel kept iff its supervoxel is in the coalition
        try:
            autocast_ctx, _ = _autocast_context(x.device, autocast)
            with torch.no_grad(), autocast_ctx:
                if probe is not None:
                    with probe.measure():
                        out = target(model(torch.where(keep, x, baseline)))
                else:
                    out = target(model(torch.where(keep, x, baseline)))
        except Exception as error:  # noqa: BLE001 — only out-of-memory is handled, everything else re-raised
            if not _batching.is_out_of_memory(error):
                raise
            del keep
            _batching.release_cached_memory(x.device)
            if batch_size == 1:
                raise DeviceError(
                    f"Out of memory on {x.device} evaluating one coalition of a {tuple(x.shape[2:])} volume; "
                    "use a smaller ROI / sliding window or device='cpu'."
                ) from None
            batch_size = max(1, batch_size // 2)
            continue
        scores.append(out.detach().double().cpu())
        start += rows.shape[0]
        if probe is not None:
            batch_size = _batching.batch_size_from_memory(x.device, probe.bytes, n - start or 1)
            probe = None
        if progress is not None:
            progress(start / n, f"KernelSHAP: {start}/{n} coalitions")
    return torch.cat(scores)


# --------------------------------------------------------------------------------------------- methods
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
    autocast: bool | None = None,
    fused_attention: bool = True,
) -> AttributionResult:
    """KernelSHAP values of every target score for every supervoxel, spread over its voxels.

    ``model`` maps ``(B, channels, D, H, W)`` to logits ``(B, C, D, H, W)`` (a :class:`SegmentationModel` or an
    ``nn.Module``); ``target`` maps logits to ``(B, K)`` scores (a :class:`ClassAggregate`). ``autocast``
    (default: on for CUDA, bfloat16) is the gradient methods' option; pass False for float32 forwards. ``coalitions``
    (``(S, F)`` binary) replaces sampling, e.g. to feed captum's exact coalitions; ``n_samples`` is then ignored.
    Model evaluations: one per coalition (``n_samples``, end points included), whatever K. ``fused_attention``
    runs MONAI Swin window attention through torch's fused kernel (same arithmetic; see
    :mod:`XAIExplainerLib.models.fused_attention`).
    """
    t0 = time.perf_counter()
    x = _prepare_input(model, x, device)
    ids, n_features = validate_supervoxels(supervoxels, x.shape[2:])
    given = coalitions is not None
    if not given:
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 3:
            raise MethodParameterError(f"n_samples must be an integer >= 3, got {n_samples!r}.")
        coalitions = sample_coalitions(n_features, n_samples, seed)
    else:
        coalitions = _check_coalitions(coalitions, n_features)
    if batch_size is not None and batch_size < 1:
        raise MethodParameterError(f"batch_size must be >= 1, got {batch_size}.")
    base = _baseline_tensor(baseline, x)
    if coalitions.shape[0] < n_features + 1:
        warnings.warn(
            f"{coalitions.shape[0]} coalitions for {n_features} supervoxels: the regression is underdetermined and "
            "returns the minimum-norm solution; use n_samples > n_features for Shapley estimates.",
            stacklevel=2,
        )

    with fused_window_attention(model, fused_attention) as n_fused:
        scores = _evaluate_coalitions(model, x, base, ids, coalitions, target, batch_size, autocast, progress,
                                      cancel)
    phi = solve_shapley(coalitions, scores, coalition_weights(coalitions))  # (K, F)
    attributions = phi.float()[:, ids]  # (K, D, H, W): each supervoxel's value on all of its voxels

    names = list(getattr(target, "names", [f"target_{k}" for k in range(scores.shape[1])]))
    params = {
        "n_samples": int(coalitions.shape[0]),
        "n_features": int(n_features),
        "baseline": float(baseline) if isinstance(baseline, (int, float)) else "tensor",
        "batch_size": batch_size,
        "autocast": autocast,
        "fused_attention_modules": n_fused,
        "endpoint_weight": ENDPOINT_WEIGHT,
        "solver": "sklearn.LinearRegression(fit_intercept=True, sample_weight), float64, multi-output",
        "coalitions": "given" if given else "sampled",
        "absent_targets": list(getattr(target, "absent", [])),
    }
    return AttributionResult(
        attributions=attributions.contiguous(),
        target_names=names,
        method="kernel_shap",
        params=params,
        n_model_evaluations=int(coalitions.shape[0]),
        seconds=time.perf_counter() - t0,
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
    autocast: bool | None = None,
    fused_attention: bool = True,
) -> AttributionResult:
    """Agg2Exp's KernelSHAP on a grid of cubes (512 = 8³ by default, 1000 coalitions), all classes at once."""
    _check_input_shape(x)
    supervoxels = cube_supervoxels(x.shape[2:], n_cubes)
    result = kernel_shap(
        model, x, target, supervoxels=supervoxels, n_samples=n_samples, baseline=baseline, seed=seed,
        batch_size=batch_size, device=device, progress=progress, cancel=cancel, autocast=autocast,
        fused_attention=fused_attention,
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
    autocast: bool | None = None,
    fused_attention: bool = True,
) -> AttributionResult:
    """Agg2Exp's KernelSHAP on semantic supervoxels: one feature per label of the clean prediction (200 coalitions).

    Without ``label_map`` the argmax of the clean logits is used, which costs one extra model evaluation.
    """
    import torch

    _check_input_shape(x)
    extra = 0
    if label_map is None:
        xin = _prepare_input(model, x, device)
        with torch.no_grad(), fused_window_attention(model, fused_attention):
            label_map = model(xin)[0].argmax(0).cpu()
        extra = 1
    supervoxels = semantic_supervoxels(label_map)
    result = kernel_shap(
        model, x, target, supervoxels=supervoxels, n_samples=n_samples, baseline=baseline, seed=seed,
        batch_size=batch_size, device=device, progress=progress, cancel=cancel, autocast=autocast,
        fused_attention=fused_attention,
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
