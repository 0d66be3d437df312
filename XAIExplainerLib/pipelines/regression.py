"""Explaining a regression model's prediction (Image-Reg-LIME, issue 11; Grad-CAM++, LayerCAM, SmoothGrad, issue 12):
a volume and a :class:`RegressionModel` to one heatmap per target on the input grid, provenance, and what the method
adds (LIME: the surrogate's weights, intercepts and weighted R²; CAM: which maps are blank and why).

One folder format for every method (what ``xai-explainer report`` reads): ``heatmap_<target>.nii.gz`` per target
and ``provenance.json`` (method, params, targets, predictions, score); LIME adds ``supervoxels.nii.gz``,
``surrogate.json``, ``surrogate_weights.csv`` and ``lime_heatmaps.png``; the other methods add
``<method>_heatmaps.png`` and ``maps.json`` (per target: prediction, score, map range, blank flag and reason).

Built on :mod:`.common` (checks, preprocessing, method call, back to the input grid, provenance), so it shares
every guarantee of the segmentation explainer; only the target (a :class:`RegressionScore`) and what is saved
are its own. Every check on targets, score, reference, options and label map runs before the first forward.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ..errors import MethodParameterError, ModelCapabilityError
from ..progress import CancelCallback, ProgressCallback, silent
from ..volume import Volume, ensure_finite, require_same_grid, resample_to_reference
from .common import Timings, prepare_input, require_volume, resolve_method, run_method, to_input_grid

if TYPE_CHECKING:
    from ..attribution.targets import RegressionScore

SCORES = ("higher", "lower", "closeness")


@dataclass
class RegressionExplanation:
    """Per-target heatmaps on the input grid and the surrogate that produced them.

    ``weights (T, F)`` are the surrogate's per-supervoxel weights (score units per supervoxel kept);
    ``segments`` the supervoxel ids on the input grid; in reference mode the one target reads
    "positive = supports not-a*". Methods without a surrogate (CAM, SmoothGrad) leave ``weights`` and
    ``segments`` None and ``intercept``/``r2`` empty; ``blank`` names the targets whose map is zero everywhere
    with the reason (CAM), and ``underlay`` is the input volume the figure draws the maps over.
    """

    heatmaps: list[Volume]
    target_names: list[str]
    predictions: dict[str, float]
    weights: np.ndarray | None
    intercept: list[float]
    r2: list[float]
    segments: Volume | None
    score: str
    reference: float | None
    provenance: dict[str, Any] = field(default_factory=dict)
    method: str = "image_reg_lime"
    blank: dict[str, str] = field(default_factory=dict)
    underlay: Volume | None = None


def build_target(model: Any, targets: "Sequence[int | str] | int | str | None", score: str,
                 reference: float | None) -> "RegressionScore":
    """The score to explain; a reference value needs ``score='closeness'`` and one named target (and vice versa)."""
    from ..attribution.targets import RegressionScore, resolve_classes

    names = list(getattr(model, "target_names", []) or [])
    if not names:
        raise ModelCapabilityError("explain_regression needs a RegressionModel (its config names the targets).")
    if score not in SCORES:
        raise MethodParameterError(f"score {score!r} unknown; use one of {', '.join(SCORES)}.")
    wanted = None if targets is None else ([targets] if isinstance(targets, (int, str)) else list(targets))
    if (score == "closeness") != (reference is not None):
        raise MethodParameterError("a reference value a* goes with score 'closeness' ('why was a* not predicted?'); "
                                   "give both --score closeness and --reference A, or neither.")
    if reference is not None and (wanted is None or len(wanted) != 1):
        raise MethodParameterError(f"the reference value {reference:g} needs exactly one target (e.g. --targets "
                                   f"{names[0]}); got {'none' if wanted is None else len(wanted)}.")
    indices = resolve_classes(wanted, names)
    refs = [] if reference is None else [float(reference)]
    return RegressionScore(score, [names[i] for i in indices], indices, refs)


def _label_map_on_model_grid(label_map: Volume, volume: Volume, model: Any, model_space: Volume) -> Any:
    """A label map on the input grid (e.g. a Slicer segmentation) as supervoxel ids on the network's grid and axes
    (nearest neighbour, so labels stay labels)."""
    require_same_grid(volume, label_map, "label map")
    on_model = resample_to_reference(label_map, model_space, "nearest")
    return model.to_tensor(on_model)[0, 0].detach().cpu().round().long()


def explain_regression(
    volume: Volume, model: Any, *, targets: "Sequence[int | str] | int | str | None" = None, score: str = "higher",
    reference: float | None = None, method: str = "image_reg_lime", method_params: Mapping[str, Any] | None = None,
    label_map: Volume | None = None, seed: int = 0, batch_size: int | None = None, device: str | None = None,
    progress: ProgressCallback | None = None, cancel: CancelCallback | None = None,
) -> RegressionExplanation:
    """Explain ``model``'s prediction on ``volume`` for ``targets`` (None = all) with a method registered for
    regression (default Image-Reg-LIME; also ``gradcampp``, ``layercam`` with ``method_params={"layers": ...}``,
    ``smoothgrad``), every target from one set of model evaluations.

    ``score``: "higher" (the prediction), "lower" (its negative) or "closeness" with ``reference`` a* for one
    target ("why was a* not predicted?"). ``label_map`` (on the input grid) replaces SLIC as supervoxels.
    """
    report = progress or silent
    volume = ensure_finite(require_volume(volume, "explain_regression"))
    spec = resolve_method(method)
    if "regression" not in spec.model_kinds:
        raise MethodParameterError(f"{spec.name} does not explain regression models.")
    target = build_target(model, targets, score, reference)
    params = spec.validate(method_params)
    if label_map is not None:
        if spec.option("supervoxels") is None:
            raise MethodParameterError(f"a label map gives supervoxels to Image-Reg-LIME; {spec.name} takes none.")
        require_same_grid(volume, label_map, "label map")
    timings = Timings()
    inputs = prepare_input(volume, model, device, report, timings)
    if label_map is not None:
        params["supervoxels"] = _label_map_on_model_grid(label_map, volume, model, inputs.model_space)
    result, maps = run_method(spec, model, inputs, target, params, {}, batch_size=batch_size, progress=report,
                              cancel=cancel, seed=seed, timings=timings)
    kind = "lime_weight" if spec.name == "image_reg_lime" else spec.name
    heatmaps = [to_input_grid(model, inputs, maps[k], "linear", np.float32, kind=kind, label=name)
                for k, name in enumerate(result.target_names)]
    segments = None
    if getattr(result, "segments", None) is not None:
        segments = to_input_grid(model, inputs, np.asarray(model.to_array(result.segments[None]))[0].astype(
            np.int32), "nearest", np.int32, kind="supervoxels")
    return _explanation(volume, model, inputs, spec, target, result, heatmaps, segments, params, seed,
                        batch_size, timings)


def _explanation(volume, model, inputs, spec, target, result, heatmaps, segments, params, seed, batch_size,
                 timings) -> RegressionExplanation:
    """Assemble the result with its provenance (the prediction is row 0 of the samples: all supervoxels kept)."""
    from ..provenance import run_provenance

    predictions = dict(zip(model.target_names, model.predict(volume).values()))
    reference = target.reference[0] if target.mode == "closeness" else None
    provenance = run_provenance(
        method=spec.name, result=result, params=params, seed=seed, volume=volume, model_space=inputs.model_space,
        model=model, device=inputs.device, timings=timings, batch_size=batch_size,
        product={"product": f"regression ({spec.label})", "score": target.mode, "reference": reference,
                 "targets": list(target.names), "predictions": predictions},
    )
    weights = getattr(result, "weights", None)
    return RegressionExplanation(heatmaps, list(result.target_names), predictions,
                                 None if weights is None else weights.numpy(), list(getattr(result, "intercept", [])),
                                 list(getattr(result, "r2", [])), segments, target.mode, reference, provenance,
                                 spec.name, dict(getattr(result, "blank_reasons", {}) or {}), volume)


def save_regression_explanation(expl: RegressionExplanation, out_dir: str | Path, overwrite: bool = False
                                ) -> Path:
    """Write heatmaps, supervoxels, surrogate (JSON + CSV), a figure and provenance.json atomically."""
    from ..io import atomic_output_folder, safe_name, write_csv, write_json
    from ..volume import write_volume

    with atomic_output_folder(out_dir, overwrite=overwrite) as tmp:
        for name, heat in zip(expl.target_names, expl.heatmaps):
            write_volume(heat, tmp / f"heatmap_{safe_name(name)}.nii.gz")
        if expl.segments is not None and expl.weights is not None:
            write_volume(expl.segments, tmp / "supervoxels.nii.gz")
            write_json(tmp / "surrogate.json", surrogate_record(expl))
            write_csv(tmp / "surrogate_weights.csv", ["target", "intercept", "r2"] +
                      [f"supervoxel_{j}" for j in range(expl.weights.shape[1])],
                      [[n, b, r, *w] for n, b, r, w in zip(expl.target_names, expl.intercept, expl.r2,
                                                            expl.weights.tolist())])
            regression_figure(expl, tmp / "lime_heatmaps.png")
        else:
            write_json(tmp / "maps.json", maps_record(expl))
            from .regression_figures import attribution_figure

            attribution_figure(expl, tmp / f"{safe_name(expl.method)}_heatmaps.png")
        write_json(tmp / "provenance.json", expl.provenance)
    return Path(out_dir)


def maps_record(expl: RegressionExplanation) -> dict[str, Any]:
    """Per target: prediction, map range and whether the map is blank (zero everywhere) and why — so a blank
    CAM is a stated result in the folder, not an empty image."""
    params = expl.provenance.get("params", {}) if isinstance(expl.provenance, dict) else {}
    targets = {}
    for name, heat in zip(expl.target_names, expl.heatmaps):
        data = np.asarray(heat.array, dtype=np.float64)
        targets[name] = {"prediction": expl.predictions.get(name), "map_min": float(data.min()),
                         "map_max": float(data.max()), "blank": name in expl.blank or not bool(np.any(data != 0)),
                         "blank_reason": expl.blank.get(name)}
    return {"method": expl.method, "score": expl.score, "reference": expl.reference,
            "reads": "CAM: >= 0, high where the layer's features raise the score" if expl.method in
            ("gradcampp", "layercam") else "signed gradient: positive = raising the voxel raises the score",
            "layers": params.get("layers"), "targets": targets}


def surrogate_record(expl: RegressionExplanation) -> dict[str, Any]:
    """The surrogate per target, JSON-able (what the CSV holds, plus the question it answers)."""
    reads = "positive = supports not-a*" if expl.reference is not None else "positive = raises the score"
    return {"score": expl.score, "reference": expl.reference, "reads": reads, "predictions": expl.predictions,
            "targets": {n: {"intercept": b, "r2": r, "weights": w} for n, b, r, w in
                        zip(expl.target_names, expl.intercept, expl.r2, expl.weights.tolist())}}


def regression_figure(expl: RegressionExplanation, path: Path) -> Path:
    """One axial slice (through the largest |weight|) per target, symmetric diverging scale, R² in the title."""
    from ..figures import new_figure, save_figure

    n = len(expl.heatmaps)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig = new_figure(3.2 * cols, 3.2 * rows)
    for k, (name, heat) in enumerate(zip(expl.target_names, expl.heatmaps)):
        data = np.asarray(heat.array)
        z = int(np.abs(data).sum((1, 2)).argmax())
        vmax = float(np.abs(data).max()) or 1.0
        ax = fig.add_subplot(rows, cols, k + 1)
        im = ax.imshow(data[z], cmap="RdBu_r", vmin=-vmax, vmax=vmax, origin="lower", interpolation="nearest")
        ax.set_title(f"{name} (R²={expl.r2[k]:.2f}, z={z})", fontsize=8)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046)
    return save_figure(fig, path)


__all__ = ["RegressionExplanation", "build_target", "explain_regression", "maps_record", "regression_figure",
           "save_regression_explanation", "surrogate_record"]
