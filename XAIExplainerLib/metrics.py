"""Quality metrics of voxel attributions of 3D segmentation models, as benchmarked in the Agg2Exp paper.

* **Faithfulness correlation** (Bhatt et al. 2020): set random voxel subsets to the baseline and correlate
  (Pearson) the attribution mass of each subset with the drop of the class score f̂_c. 1 = the attribution
  predicts exactly what removing voxels does to the model. All subsets go through the model on the batch axis
  and every class is scored from the same forward pass.
* **Average sensitivity** (Yeh et al. 2019): re-run the method on inputs with small uniform noise and report the
  mean relative change ‖â − â'‖_F / ‖â‖_F of the max-normalised maps (lower = more robust).
* **Complexity** (effective complexity, Nguyen & Rodríguez Martínez 2020): the fraction of voxels whose
  |attribution| exceeds θ · max|attribution| (lower = sparser, easier to read).

Defaults follow the public Agg2Exp evaluation (Quantus): complexity θ = 0.1 on max-normalised absolute maps
divided by the number of voxels; sensitivity with 3 samples of uniform noise in ±0.1 of the (0–1 scaled) input,
which we express as ±0.1 · (max − min) of the input so that it does not depend on the intensity scale;
faithfulness with baseline 0 ("black"). The paper used 100 subsets of 224² voxels; here the subset is a fraction
of the volume (1 % by default) and 64 subsets, both options. One deliberate difference: the paper's evaluation
re-derived the class mask from each perturbed prediction; we keep the mask of the clean prediction (the same
f̂_c that the attributions explain), so the metric scores the attributions against the function they describe.

Undefined values (a class absent from the prediction, a constant score) are returned as NaN by the array
functions here and as ``None`` with a reason by :func:`evaluate_attributions`.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

from .errors import CancelledError, InvalidVolumeError


def _check_cancel(cancel) -> None:
    if cancel is None:
        return
    flag = cancel.is_set() if hasattr(cancel, "is_set") else cancel()
    if flag:
        raise CancelledError("The metric computation was cancelled.")


def _as_maps(attributions) -> np.ndarray:
    """(K, D, H, W) float64 numpy array from a tensor, an AttributionResult or an array."""
    if hasattr(attributions, "attributions"):
        attributions = attributions.attributions
    if hasattr(attributions, "detach"):
        attributions = attributions.detach().cpu().numpy()
    a = np.asarray(attributions, dtype=np.float64)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise InvalidVolumeError(f"attributions must have shape (K, D, H, W), got {a.shape}.")
    return a


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    if denom <= 1e-300 * max(1.0, len(a)):
        return float("nan")
    return float(np.clip((a * b).sum() / denom, -1.0, 1.0))


def complexity(attributions, theta: float = 0.1) -> np.ndarray:
    """Fraction of voxels with |a| > θ · max|a|, per map (K,). An all-zero map has complexity 0."""
    if not 0 <= theta < 1:
        raise ValueError(f"theta must be in [0, 1), got {theta}.")
    maps = _as_maps(attributions)
    a = np.abs(maps).reshape(maps.shape[0], -1)
    peak = a.max(axis=1, keepdims=True)
    above = (a > theta * peak) & (peak > 0)
    return above.mean(axis=1)


def _scores(model, target, batch) -> np.ndarray:
    import torch

    with torch.no_grad():
        return target(model(batch)).detach().double().cpu().numpy()


def faithfulness_correlation(
    model: Callable,
    x,
    target: Callable,
    attributions,
    *,
    n_subsets: int = 64,
    subset_fraction: float = 0.01,
    baseline: float = 0.0,
    seed: int = 0,
    batch_size: int = 8,
    cancel=None,
) -> np.ndarray:
    """Pearson r (K,) between Σ_{v∈S} a_k(v) and f̂_k(x) − f̂_k(x with S set to ``baseline``) over random S.

    ``x`` is the model input (1, 1, D, H, W) on the model's device; ``target`` maps the model output to (B, K)
    scores (e.g. :class:`~XAIExplainerLib.attribution.ClassAggregate`). Subsets are drawn with a seeded numpy
    generator, so the metric is reproducible.
    """
    import torch

    a = _as_maps(attributions)
    if tuple(a.shape[1:]) != tuple(x.shape[2:]):
        raise InvalidVolumeError(f"attributions {a.shape[1:]} and input {tuple(x.shape[2:])} are on different grids.")
    if not 0 < subset_fraction < 1:
        raise ValueError(f"subset_fraction must be in (0, 1), got {subset_fraction}.")
    if n_subsets < 3:
        raise ValueError("n_subsets must be at least 3 for a correlation.")
    n_vox = int(np.prod(a.shape[1:]))
    size = max(1, int(round(subset_fraction * n_vox)))
    rng = np.random.default_rng(seed)
    subsets = [rng.choice(n_vox, size=size, replace=False) for _ in range(n_subsets)]
    flat = a.reshape(a.shape[0], -1)
    attribution_sums = np.stack([flat[:, s].sum(axis=1) for s in subsets])  # (n, K)

    clean = _scores(model, target, x)[0]  # (K,)
    drops = np.zeros((n_subsets, a.shape[0]))
    for start in range(0, n_subsets, batch_size):
        _check_cancel(cancel)
        chunk = subsets[start : start + batch_size]
        batch = x.detach().repeat(len(chunk), 1, 1, 1, 1).reshape(len(chunk), -1)
        for i, s in enumerate(chunk):
            batch[i, torch.as_tensor(s, device=batch.device)] = baseline
        batch = batch.reshape((len(chunk),) + tuple(x.shape[1:]))
        drops[start : start + len(chunk)] = clean[None] - _scores(model, target, batch)
    return np.array([_pearson(attribution_sums[:, k], drops[:, k]) for k in range(a.shape[0])])


def _normalised(a: np.ndarray) -> np.ndarray:
    peak = np.abs(a).reshape(a.shape[0], -1).max(axis=1)
    return a / np.where(peak > 0, peak, 1.0).reshape(-1, 1, 1, 1)


def average_sensitivity(
    model: Callable,
    x,
    target: Callable,
    method: "Callable | str",
    attributions=None,
    *,
    n_samples: int = 3,
    noise: float = 0.1,
    seed: int = 0,
    method_params: dict | None = None,
    method_inputs: dict | None = None,
    batch_size: int | None = None,
    cancel=None,
) -> np.ndarray:
    """Mean over ``n_samples`` noisy inputs of ‖â − â'‖_F / ‖â‖_F (K,), â = map / max|map|.

    Noise is uniform in ±``noise`` · (max − min) of ``x``. The target keeps the clean class masks, so only the
    attribution method's reaction to the input is measured. A class whose clean map is all zero gets NaN.
    ``method`` is a registry name, a registered function or any callable (see
    :func:`~XAIExplainerLib.attribution.registry.get_method`); ``method_inputs`` are what the method ``needs``
    from the pipeline (e.g. the clean ``label_map``), kept fixed like the target.
    """
    import torch

    from .attribution.registry import call_method, get_method

    spec = get_method(method)
    params = dict(method_params or {})
    inputs = dict(method_inputs or {})
    if attributions is None:
        attributions = call_method(spec, model, x, target, params, batch_size=batch_size, cancel=cancel, seed=seed,
                                   **inputs)
    ref = _normalised(_as_maps(attributions))
    ref_norm = np.sqrt((ref.reshape(ref.shape[0], -1) ** 2).sum(axis=1))
    span = float(x.max() - x.min()) or 1.0
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    ratios = np.zeros((n_samples, ref.shape[0]))
    for s in range(n_samples):
        _check_cancel(cancel)
        eps = (torch.rand(x.shape, generator=gen, dtype=torch.float64) * 2 - 1) * noise * span
        x_noisy = (x.detach() + eps.to(device=x.device, dtype=x.dtype))
        other = _normalised(_as_maps(call_method(spec, model, x_noisy, target, params, batch_size=batch_size,
                                                 cancel=cancel, seed=seed + 1 + s, **inputs)))
        diff = np.sqrt(((ref - other).reshape(ref.shape[0], -1) ** 2).sum(axis=1))
        ratios[s] = np.divide(diff, ref_norm, out=np.full_like(diff, np.nan), where=ref_norm > 0)
    return ratios.mean(axis=0)


def evaluate_attributions(
    model: Callable,
    x,
    target,
    method: "Callable | str",
    result,
    *,
    method_params: dict | None = None,
    method_inputs: dict | None = None,
    names: Sequence[str] | None = None,
    faithfulness: dict | None = None,
    sensitivity: dict | None = None,
    complexity_theta: float = 0.1,
    seed: int = 0,
    batch_size: int | None = None,
    cancel=None,
) -> dict[str, Any]:
    """All metrics for an attribution result, per class: ``{"classes": {name: {...}}, "settings": {...}}``.

    ``faithfulness`` / ``sensitivity`` hold keyword overrides (``n_subsets``, ``subset_fraction``,
    ``n_samples``, ``noise``...). Wall time is the attribution's own ``seconds``; the metrics' cost is reported
    separately so the two are not confused.
    """
    names = list(names or getattr(result, "target_names", None) or getattr(target, "names"))
    absent = set(getattr(target, "absent", []) or [])
    start = time.perf_counter()
    fkw = {"seed": seed, "batch_size": batch_size or 8, **(faithfulness or {})}
    faith = faithfulness_correlation(model, x, target, result, cancel=cancel, **fkw)
    t_faith = time.perf_counter() - start
    skw = {"seed": seed, **(sensitivity or {})}
    start = time.perf_counter()
    sens = average_sensitivity(model, x, target, method, result, method_params=method_params,
                               method_inputs=method_inputs, batch_size=batch_size, cancel=cancel, **skw)
    t_sens = time.perf_counter() - start
    comp = complexity(result, complexity_theta)
    per_class: dict[str, Any] = {}
    for k, name in enumerate(names):
        entry: dict[str, Any] = {
            "faithfulness_correlation": None if np.isnan(faith[k]) else float(faith[k]),
            "average_sensitivity": None if np.isnan(sens[k]) else float(sens[k]),
            "complexity": float(comp[k]),
        }
        if name in absent:
            entry["note"] = "class absent from the prediction: its score is identically 0, metrics undefined"
        elif entry["faithfulness_correlation"] is None or entry["average_sensitivity"] is None:
            entry["note"] = "attribution map or score drop is constant: correlation / relative change undefined"
        per_class[name] = entry
    return {
        "classes": per_class,
        "wall_time_s": float(getattr(result, "seconds", float("nan"))),
        "n_model_evaluations": int(getattr(result, "n_model_evaluations", 0)),
        "metric_seconds": {"faithfulness": t_faith, "sensitivity": t_sens},
        "settings": {
            "faithfulness": {"n_subsets": 64, "subset_fraction": 0.01, "baseline": 0.0, **fkw},
            "sensitivity": {"n_samples": 3, "noise": 0.1, "noise_relative_to": "input max - min", **skw},
            "complexity_theta": complexity_theta,
        },
    }
