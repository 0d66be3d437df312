"""The perturbation engine: batched masked forwards + one weighted multi-output least-squares fit.

Perturbation explainers (KernelSHAP now, LIME next) share one shape: a binary design matrix ``Z (S, F)`` says which
of F features (supervoxels) keep their value and which take the baseline's; every row is one model evaluation
scored by a multi-output target (all K targets from the same forward); a weighted linear fit of the scores on
``Z`` gives every target's feature weights at once. Only the design, the row weights and the reading of the fit
differ between methods, so those stay in the method files and everything else is here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from . import _batching

if TYPE_CHECKING:
    import torch


def masked_scores(model: Any, x: "torch.Tensor", baseline: "torch.Tensor", ids: "torch.Tensor",
                  design: "torch.Tensor", target: Any, *, method: str, batch_size: int | None = None,
                  progress: Callable[[float, str], None] | None = None,
                  cancel: Callable[[], bool] | None = None) -> "torch.Tensor":
    """Scores ``(S, K)`` (float64, CPU) of ``model`` on x with the features off in each design row set to baseline.

    Masks are built per batch from the ``(D, H, W)`` feature ids (no per-voxel loops). Without ``batch_size``:
    2 per forward on the CPU (batching barely helps there); on CUDA one row is run first while the allocator
    peak is measured, which sizes the remaining batches from free memory. Out-of-memory halves the batch.
    """
    import torch

    ids_dev = ids.to(x.device)
    rows_all = design.to(x.device).bool()
    chunks: list[torch.Tensor] = []

    def compute(start: int, stop: int) -> "torch.Tensor":
        keep = rows_all[start:stop][:, ids_dev].unsqueeze(1)  # (b, 1, D, H, W): kept iff its feature is on
        with torch.no_grad():
            return target(model(torch.where(keep, x, baseline))).detach().double().cpu()

    cuda = x.device.type == "cuda"
    _batching.run_batches(
        int(design.shape[0]), compute, lambda start, stop, scores: chunks.append(scores), device=x.device,
        method=method, batch_size=batch_size, first_batch=1 if cuda else 2, probe=cuda, what="perturbed inputs",
        item="perturbed input",
        oom_hint=f"Evaluating a {tuple(x.shape[2:])} volume: use a smaller ROI / sliding window or device='cpu'.",
        progress=progress, cancel=cancel,
    )
    return torch.cat(chunks)


def weighted_least_squares(design: "torch.Tensor", scores: "torch.Tensor", weights: "torch.Tensor",
                           fit_intercept: bool = True) -> "torch.Tensor":
    """One multi-output weighted fit ``scores ≈ b + design @ φ``; returns φ as ``(K, F)`` float64.

    Every column of ``scores (S, K)`` is a target; scikit-learn's ``LinearRegression`` with ``sample_weight``
    (captum's solver), done once for all K columns in float64.
    """
    import torch
    from sklearn.linear_model import LinearRegression

    X = design.detach().double().cpu().numpy()
    Y = scores.detach().double().cpu().numpy()
    w = weights.detach().double().cpu().numpy()
    fit = LinearRegression(fit_intercept=fit_intercept).fit(X, Y, sample_weight=w)
    return torch.from_numpy(fit.coef_.reshape(Y.shape[1], X.shape[1]).copy())


__all__ = ["masked_scores", "weighted_least_squares"]
