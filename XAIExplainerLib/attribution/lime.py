"""3D Image-Reg-LIME: LIME for multi-target image regression, all T targets from ONE set of perturbed forwards.

Seed: Image-Reg-LIME (3D bead images, a CNN regressing 11 Zernike amplitudes). lime's image explainer works on
2D RGB images with a per-sample Python mask loop and fits one surrogate per label; captum's ``Lime`` explains
one output per call. The perturbations and the model outputs do not depend on the target, so here:

- supervoxels: SLIC (scikit-image, ``channel_axis=None``) on the input min–max scaled to [0, 1] (so
  ``compactness`` is relative to the volume's intensity range; the paper: 512 segments, compactness 0.01 on
  32³), or a grid of cubes, or any label map on the input grid (e.g. a Slicer segmentation);
- samples: lime's — row 0 keeps every supervoxel, the others keep each one with probability ½
  (``numpy.random.RandomState(seed).randint(0, 2)``, as ``lime_image`` draws them); switched-off supervoxels
  take the fill value ("zero" as in the paper, "mean": the supervoxel's own mean as lime does, "blur": a
  Gaussian-blurred copy); masks are a table lookup ``keep[segments]`` batched by the perturbation engine;
- sample weights: lime's exponential kernel of the cosine distance to the unperturbed sample,
  ``π(z) = sqrt(exp(−d_cos(z, 1)² / width²))``;
- surrogate: scikit-learn ``Ridge(alpha, fit_intercept=True)`` with ``sample_weight`` fitted ONCE with all T
  scores as columns (what ``lime_base.LimeBase`` fits per label), weighted R² per target (``Ridge.score``).

Reference mode ("why was a* not predicted for target i?"): with a ``closeness`` target for one output i and
reference a*, the response regressed is the distance ``r(z) = |ŷ_i(z) − a*|`` and the sample weights become

    w(z) = π(z) · exp(−(r(z) / σ)²),    σ = reference_width · |ŷ_i(x) − a*|,

so samples whose prediction moved close to a* weigh up to ``exp(1/reference_width²)`` times more than ones that
stayed at the explained prediction (paper: "perturbed examples which receive predictions close to a* are weighted
with greater values"). A positive weight means keeping that supervoxel keeps the prediction away from a*: it
supports "not a*"; a negative weight supports a*.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..errors import GeometryMismatchError, InvalidVolumeError, MethodParameterError
from ..progress import ProgressCallback
from .inputs import check_target, choose_device, prepare_input, run_description
from .perturbation_engine import masked_scores
from .registry import MethodSpec, OptionSpec, register_method
from .result import AttributionResult
from .supervoxels import cube_supervoxels, validate_supervoxels

if TYPE_CHECKING:
    import torch

SUPERVOXEL_KINDS = ("slic", "cubes")
FILL_KINDS = ("zero", "mean", "blur")
#: SLIC yielding fewer than this fraction of the asked segments is warned about (with the count obtained).
FEW_SEGMENTS_FRACTION = 0.5


@dataclass
class LimeResult(AttributionResult):
    """An :class:`AttributionResult` plus the surrogate itself: per-target weights, intercepts and weighted R².

    ``weights (T, F)`` and ``intercept (T,)`` are in score units per supervoxel kept; ``segments (D, H, W)`` the
    supervoxel ids (0..F-1) the weights are painted on; ``design (S, F)``, ``scores (S, T)`` and
    ``sample_weights (S,)`` are the samples, their target scores and the weights the fit used (for audits).
    """

    weights: "torch.Tensor | None" = None
    intercept: list[float] = field(default_factory=list)
    r2: list[float] = field(default_factory=list)
    segments: "torch.Tensor | None" = None
    sample_weights: "np.ndarray | None" = None
    design: "np.ndarray | None" = None
    scores: "np.ndarray | None" = None


# --------------------------------------------------------------------------------------------- supervoxels
def slic_supervoxels(volume: "np.ndarray", n_segments: int = 512, compactness: float = 0.01) -> "np.ndarray":
    """SLIC supervoxels of a (D, H, W) volume, ids 0..F-1, warning when far fewer than ``n_segments`` result.

    Why the scaling: SLIC's compactness trades intensity against spatial distance, so the volume is min–max
    scaled to [0, 1] first; the same compactness then means the same thing for any intensity unit.
    """
    from skimage.segmentation import slic

    volume = np.asarray(volume, dtype=np.float64)
    low, high = float(volume.min()), float(volume.max())
    scaled = (volume - low) / (high - low) if high > low else np.zeros_like(volume)
    labels = slic(scaled, n_segments=int(n_segments), compactness=float(compactness), channel_axis=None,
                  start_label=0)
    _, ids = np.unique(labels, return_inverse=True)
    ids = ids.reshape(volume.shape)
    obtained = int(ids.max()) + 1
    if obtained < FEW_SEGMENTS_FRACTION * n_segments:
        warnings.warn(f"SLIC produced {obtained} supervoxels of the {n_segments} asked (input {volume.shape}); "
                      "raise compactness or n_segments, or use supervoxels='cubes'.", stacklevel=3)
    return ids


def build_supervoxels(x: "torch.Tensor", supervoxels: Any, n_segments: int, compactness: float
                      ) -> "tuple[torch.Tensor, int]":
    """Consecutive supervoxel ids on x's grid from "slic", "cubes" or a label map (checked against the grid)."""
    import torch

    shape = tuple(x.shape[2:])
    if isinstance(supervoxels, str):
        if supervoxels == "slic":
            image = x[0].detach().float().mean(0).cpu().numpy()  # channels averaged: SLIC sees one intensity
            supervoxels = torch.from_numpy(slic_supervoxels(image, n_segments, compactness))
        elif supervoxels == "cubes":
            supervoxels = cube_supervoxels(shape, n_segments)
        else:
            raise MethodParameterError(f"image_reg_lime: supervoxels {supervoxels!r} unknown; use one of "
                                       f"{', '.join(SUPERVOXEL_KINDS)} or a label map on the input grid.")
    if hasattr(supervoxels, "shape") and tuple(supervoxels.shape[-3:]) != shape:
        raise GeometryMismatchError(f"label map has shape {tuple(supervoxels.shape)} but the input grid is {shape}; "
                                    "resample the label map onto the input volume first.")
    try:
        return validate_supervoxels(supervoxels, shape)
    except GeometryMismatchError:
        raise
    except ValueError as error:  # a single supervoxel: nothing to attribute between
        raise MethodParameterError(f"image_reg_lime: {str(error).replace('KernelSHAP', 'LIME')}") from None


def fill_tensor(x: "torch.Tensor", ids: "torch.Tensor", fill: str, blur_sigma: float = 2.0) -> "torch.Tensor":
    """The volume switched-off supervoxels take: zeros, each supervoxel's own mean (lime's default) or a blur."""
    import torch

    if fill == "zero":
        return torch.zeros_like(x)
    if fill == "mean":
        flat_ids = ids.to(x.device).flatten()
        n = int(flat_ids.max()) + 1
        counts = torch.bincount(flat_ids, minlength=n).to(x.dtype)
        out = torch.empty_like(x)
        for c in range(x.shape[1]):
            sums = torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(0, flat_ids, x[0, c].flatten())
            out[0, c] = (sums / counts)[ids.to(x.device)]
        return out
    if fill == "blur":
        from scipy.ndimage import gaussian_filter

        blurred = gaussian_filter(x.detach().cpu().double().numpy(), sigma=(0, 0, blur_sigma, blur_sigma, blur_sigma))
        return torch.from_numpy(blurred).to(device=x.device, dtype=x.dtype)
    raise MethodParameterError(f"image_reg_lime: fill {fill!r} unknown; use one of {', '.join(FILL_KINDS)}.")


# --------------------------------------------------------------------------------------------- samples, weights
def sample_design(n_features: int, n_samples: int, seed: int = 0) -> "np.ndarray":
    """``(n_samples, n_features)`` 0/1 rows drawn as ``lime_image`` draws them; row 0 keeps every supervoxel."""
    data = np.random.RandomState(int(seed)).randint(0, 2, n_samples * n_features).reshape(n_samples, n_features)
    data[0, :] = 1
    return data


def cosine_distances(design: "np.ndarray") -> "np.ndarray":
    """Cosine distance of every row to row 0 (the unperturbed sample), as lime computes it (scikit-learn)."""
    from sklearn.metrics import pairwise_distances

    return pairwise_distances(design, design[0:1], metric="cosine").ravel()


def exponential_kernel(distances: "np.ndarray", kernel_width: float) -> "np.ndarray":
    """lime's default similarity ``sqrt(exp(−d² / width²))``."""
    return np.sqrt(np.exp(-(np.asarray(distances, dtype=np.float64) ** 2) / float(kernel_width) ** 2))


def reference_weights(kernel: "np.ndarray", distance_to_reference: "np.ndarray", reference_width: float
                      ) -> "np.ndarray":
    """Reference mode: ``w = π · exp(−(r / σ)²)`` with ``σ = reference_width · r[0]`` (r = |ŷ_i − a*|).

    Why relative to r[0]: the gap between the explained prediction and a* is the natural unit of "close to a*",
    whatever the output's magnitude; the unperturbed sample gets ``exp(−1/reference_width²)``.
    """
    r = np.asarray(distance_to_reference, dtype=np.float64)
    gap = float(r[0])
    if gap <= 0.0:
        raise MethodParameterError("image_reg_lime: the prediction already equals the reference value a*; "
                                   "there is no 'why not a*' to explain.")
    return kernel * np.exp(-((r / (reference_width * gap)) ** 2))


def fit_surrogate(design: "np.ndarray", responses: "np.ndarray", weights: "np.ndarray", alpha: float
                  ) -> "tuple[np.ndarray, np.ndarray, np.ndarray]":
    """One multi-output weighted ridge fit: (weights (T, F), intercepts (T,), weighted R² (T,)).

    lime's ``LimeBase`` fits ``Ridge(alpha=1)`` per label with the same ``sample_weight``; the normal equations
    share their left-hand side across columns, so one fit with T columns gives the same T solutions.
    """
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score

    X = np.asarray(design, dtype=np.float64)
    Y = np.asarray(responses, dtype=np.float64).reshape(X.shape[0], -1)
    ridge = Ridge(alpha=float(alpha), fit_intercept=True).fit(X, Y, sample_weight=weights)
    coef = np.asarray(ridge.coef_).reshape(Y.shape[1], X.shape[1])
    intercept = np.atleast_1d(np.asarray(ridge.intercept_, dtype=np.float64))
    r2 = np.atleast_1d(r2_score(Y, ridge.predict(X), sample_weight=weights, multioutput="raw_values"))
    return coef, intercept, r2


# --------------------------------------------------------------------------------------------- checks
def check_options(n_samples: Any, kernel_width: Any, alpha: Any, reference_width: Any, fill: Any) -> None:
    """One-line :class:`MethodParameterError` for a bad option, before any supervoxel or model work."""
    def bad(name: str, value: Any, allowed: str) -> MethodParameterError:
        return MethodParameterError(f"image_reg_lime: option '{name}' got {value!r}; allowed: {allowed}.")

    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 2:
        raise bad("n_samples", n_samples, "an integer >= 2 (the unperturbed sample plus perturbed ones)")
    for name, value in (("kernel_width", kernel_width), ("reference_width", reference_width)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
            raise bad(name, value, "a number > 0")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not np.isfinite(alpha) or alpha < 0:
        raise bad("alpha", alpha, "a number >= 0")
    if fill not in FILL_KINDS:
        raise bad("fill", fill, "one of " + ", ".join(FILL_KINDS))


def is_reference_mode(target: Any) -> bool:
    """A ``closeness`` :class:`RegressionScore` asks "why not a*?"; it must name exactly one output."""
    if getattr(target, "mode", None) != "closeness":
        return False
    if len(target.names) != 1:
        raise MethodParameterError(
            f"image_reg_lime: the reference value a* asks 'why was a* not predicted for target i?', so it needs one "
            f"target; got {len(target.names)} ({', '.join(target.names)}). Name the target (e.g. --targets NAME)."
        )
    return True


def _check_design(samples: Any, n_features: int) -> "np.ndarray":
    design = np.asarray(samples)
    if design.ndim != 2 or design.shape[1] != n_features or design.shape[0] < 2 \
            or not np.isin(design, (0, 1)).all():
        raise MethodParameterError(f"image_reg_lime: samples must be a 0/1 array (S >= 2, {n_features}), got "
                                   f"shape {design.shape}.")
    return design.astype(np.int64)


# --------------------------------------------------------------------------------------------- method
def _responses_and_weights(scores: "np.ndarray", kernel: "np.ndarray", reference: bool, reference_width: float
                           ) -> "tuple[np.ndarray, np.ndarray]":
    """What the surrogate regresses and with which sample weights (plain LIME or reference mode)."""
    if not reference:
        return scores, kernel
    distance = np.sqrt(np.clip(-scores[:, 0], 0.0, None))  # closeness score is −(ŷ − a*)² → |ŷ − a*|
    return distance[:, None], reference_weights(kernel, distance, reference_width)


def image_reg_lime(
    model, x: "torch.Tensor", target, *, supervoxels: Any = "slic", n_samples: int = 1000,
    kernel_width: float = 0.25, alpha: float = 1.0, fill: str = "zero", n_segments: int = 512,
    compactness: float = 0.01, reference_width: float = 1.0, blur_sigma: float = 2.0, seed: int = 0,
    batch_size: int | None = None, device: Any = None, progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None, samples: Any = None,
) -> LimeResult:
    """Image-Reg-LIME weights of every target score for every supervoxel, painted on its voxels.

    ``target`` maps the model output to ``(B, T)`` scores (a :class:`RegressionScore`: "higher"/"lower" for any
    number of outputs; "closeness" to a* for one output = reference mode, see the module docstring).
    ``samples`` (``(S, F)`` 0/1) replaces the random design, e.g. to compare with other libraries.
    Model evaluations: one per sample, whatever T. Every check runs before the first model evaluation.
    """
    t0 = time.perf_counter()
    check_options(n_samples, kernel_width, alpha, reference_width, fill)
    check_target(target)
    reference = is_reference_mode(target)
    x = prepare_input(model, x, choose_device(model, x, device))
    ids, n_features = build_supervoxels(x, supervoxels, n_segments, compactness)
    design = sample_design(n_features, n_samples, seed) if samples is None else _check_design(samples, n_features)
    baseline = fill_tensor(x, ids, fill, blur_sigma)
    import torch

    scores = masked_scores(model, x, baseline, ids, torch.from_numpy(design), target, method="Image-Reg-LIME",
                           batch_size=batch_size, progress=progress, cancel=cancel).numpy()
    kernel = exponential_kernel(cosine_distances(design), kernel_width)
    responses, sample_weights = _responses_and_weights(scores, kernel, reference, reference_width)
    coef, intercept, r2 = fit_surrogate(design, responses, sample_weights, alpha)
    weights = torch.from_numpy(coef)
    params = {
        "n_samples": int(design.shape[0]), "n_features": int(n_features),
        "supervoxels": supervoxels if isinstance(supervoxels, str) else "label map", "n_segments": int(n_segments),
        "n_segments_obtained": int(n_features), "compactness": float(compactness),
        "slic_input_scaling": "min-max to [0, 1] (channels averaged)", "fill": fill, "kernel_width": float(kernel_width),
        "kernel": "sqrt(exp(-d_cos^2 / kernel_width^2))", "alpha": float(alpha),
        "solver": "sklearn.Ridge(fit_intercept=True, sample_weight), float64, multi-output", **run_description(model),
        "reference_mode": reference, "target": target.describe() if hasattr(target, "describe") else None,
        "intercept": intercept.tolist(), "r2": r2.tolist(), "samples": "sampled" if samples is None else "given",
    }
    if reference:
        params.update(reference_width=float(reference_width), reads="positive = supports not-a*",
                      weighting="kernel * exp(-(|y_i - a*| / (reference_width * |y_i(x) - a*|))^2)")
    return LimeResult(
        attributions=weights.float()[:, ids].contiguous(), target_names=list(target.names), method="image_reg_lime",
        params=params, n_model_evaluations=int(design.shape[0]), seconds=time.perf_counter() - t0,
        seed=int(seed) if samples is None else None, weights=weights, intercept=intercept.tolist(), r2=r2.tolist(),
        segments=ids, sample_weights=sample_weights, design=design, scores=scores,
    )


__all__ = ["LimeResult", "build_supervoxels", "cosine_distances", "exponential_kernel", "fill_tensor",
           "fit_surrogate", "image_reg_lime", "reference_weights", "sample_design", "slic_supervoxels"]


# --------------------------------------------------------------------------------------------- registry
_IMAGE_REG_LIME = ("Image-Reg-LIME: Local Interpretable Model-Agnostic Explanations for Multitarget Image "
                   "Regression; Ribeiro et al. 2016, \"Why Should I Trust You?\" (LIME), KDD")


def _register() -> None:
    """Image-Reg-LIME with lime's defaults where the paper is silent (1000 samples, width 0.25, Ridge α = 1)."""
    register_method(MethodSpec(
        "image_reg_lime", "Image-Reg-LIME",
        "LIME surrogate weights of supervoxels for every regression target from one set of perturbed forwards.",
        _IMAGE_REG_LIME, image_reg_lime, ("regression",), (
            OptionSpec("n_samples", int, 1000, "perturbed samples (the unperturbed one included)", label="Samples",
                       minimum=2, cli_flag="--samples"),
            OptionSpec("kernel_width", float, 0.25, "width of the exponential kernel on the cosine distance",
                       label="Kernel width", minimum=0, exclusive_minimum=True),
            OptionSpec("alpha", float, 1.0, "ridge penalty of the surrogate", label="Ridge alpha", minimum=0),
            OptionSpec("fill", str, "zero", "value of switched-off supervoxels", label="Fill", choices=FILL_KINDS),
            OptionSpec("supervoxels", str, "slic", "slic, cubes, or a label map on the input grid",
                       label="Supervoxels", choices=SUPERVOXEL_KINDS, allow_array=True),
            OptionSpec("n_segments", int, 512, "supervoxels asked of SLIC / number of cubes", label="Segments",
                       minimum=2),
            OptionSpec("compactness", float, 0.01, "SLIC compactness (input min-max scaled to [0, 1])",
                       label="Compactness", minimum=0, exclusive_minimum=True),
            OptionSpec("reference_width", float, 1.0, "reference mode: width of the closeness-to-a* weight, in "
                       "units of |prediction - a*|", label="Reference width", minimum=0, exclusive_minimum=True),
            OptionSpec("blur_sigma", float, 2.0, "fill=blur: Gaussian sigma in voxels", label="Blur sigma",
                       minimum=0, exclusive_minimum=True),
        ), deterministic=False), replace=True)


_register()
