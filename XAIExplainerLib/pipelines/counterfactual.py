"""Counterfactual saliency of a classifier's decision (issue 14): a volume and a :class:`ClassifierModel` to the
smallest region whose inpainted replacement makes the class drop, on the input grid, with provenance.

Data flow::

    Volume ─preprocess→ x (model space) ─counterfactual (attribution/counterfactual.py)→ soft map, mask, π(mask)
    soft map (linear), mask (nearest), π(mask) → input grid; the inpainted volume keeps the input's own voxels
    outside the mask and brings the fill into input intensities with the linear map fitted on the known voxels.

Every check (class, organ mask grid and content, options, inpainter) runs before the first forward.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import MethodParameterError, ModelCapabilityError
from ..progress import CancelCallback, ProgressCallback, silent
from ..volume import Volume, ensure_finite, require_same_grid, resample_to_reference
from .common import Timings, prepare_input, require_volume

METHOD = "counterfactual"
FILL_NAMES = ("zero", "mean", "blur")
#: The partial-convolution inpainter shipped with the lesion experiment (used when no inpainter is named).
SHIPPED_INPAINTER = Path(__file__).resolve().parents[1] / "Resources" / "Inpainter" / "inpainter.pt"


@dataclass
class CounterfactualExplanation:
    """Soft map, mask and inpainted volume on the input grid; class probability before/after; the loss curve."""

    soft_map: Volume
    mask: Volume
    inpainted: Volume
    class_name: str
    class_index: int
    prob_before: float
    prob_after: float
    losses: dict[str, list[float]]
    fill: str
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def probability_change(self) -> float:
        return self.prob_after - self.prob_before


def resolve_inpainter(inpainter: Any, device: Any) -> tuple[str, Any, str]:
    """``(fill, module, description)`` for "zero" / "mean" / "blur", a weights path, a module / callable, or None
    (the shipped inpainter)."""
    from ..errors import WeightsError
    from ..models.partial_conv import load_inpainter

    if inpainter is None:
        if not SHIPPED_INPAINTER.is_file():
            raise WeightsError(f"No shipped inpainter at '{SHIPPED_INPAINTER}'; pass an inpainter (.pt + JSON from "
                               "save_inpainter) or a plain fill: zero, mean or blur.")
        return "inpainter", load_inpainter(SHIPPED_INPAINTER, device), "shipped:Inpainter/inpainter.pt"
    if isinstance(inpainter, str) and inpainter in FILL_NAMES:
        return inpainter, None, inpainter
    if isinstance(inpainter, (str, Path)):
        path = Path(inpainter)
        return "inpainter", load_inpainter(path, device), str(path)
    if callable(inpainter):
        return "inpainter", inpainter, type(inpainter).__name__
    raise MethodParameterError(f"inpainter must be zero, mean, blur, a weights path or a module; got "
                               f"{type(inpainter).__name__}.")


def organ_on_model_grid(organ_mask: Volume, volume: Volume, model: Any, model_space: Volume) -> Any:
    """The organ mask (input grid) as a (1, 1, ...) tensor on the network's grid and axes (nearest neighbour)."""
    require_same_grid(volume, organ_mask, "organ mask")
    on_model = resample_to_reference(organ_mask.with_array((organ_mask.array > 0).astype(np.float32)),
                                     model_space, "nearest")
    return model.to_tensor(on_model)


def check_organ_mask(organ_mask: Volume | None, volume: Volume) -> None:
    from ..errors import InvalidVolumeError

    if organ_mask is None:
        return
    require_same_grid(volume, organ_mask, "organ mask")
    if not bool((organ_mask.array > 0).any()):
        raise InvalidVolumeError("The organ mask is empty (no voxel > 0); give a mask covering the organ, or none.")


def explain_counterfactual(
    volume: Volume, model: Any, *, target: "int | str | None" = None, inpainter: Any = None,
    organ_mask: Volume | None = None, method_params: Mapping[str, Any] | None = None, seed: int = 0,
    device: str | None = None, progress: ProgressCallback | None = None, cancel: CancelCallback | None = None,
) -> CounterfactualExplanation:
    """The counterfactual region of ``target`` (name or index; None = the predicted class) for ``volume``.

    ``inpainter``: None (the shipped partial-convolution inpainter), a weights path, a module
    ``inpainter(holed, valid) -> image``, or "zero" / "mean" / "blur"."""
    from ..attribution.registry import get_method
    from ..attribution.targets import resolve_classes

    report = progress or silent
    volume = ensure_finite(require_volume(volume, "explain_counterfactual"))
    names = list(getattr(model, "label_names", []) or [])
    if not names:
        raise ModelCapabilityError("explain_counterfactual needs a ClassifierModel (its JSON names the classes).")
    index = None if target is None else resolve_classes([target], names)[0]
    params = get_method(METHOD).validate({**_default_scores(model), **dict(method_params or {})})
    check_organ_mask(organ_mask, volume)
    timings = Timings()
    inputs = prepare_input(volume, model, device, report, timings)
    fill, module, described = resolve_inpainter(inpainter, inputs.device)
    params["fill"] = fill
    organ = None if organ_mask is None else organ_on_model_grid(organ_mask, volume, model, inputs.model_space)
    with timings.measure("attribution_s"):
        result = get_method(METHOD).function(model, inputs.x, index, inpainter=module, organ_mask=organ,
                                             seed=seed, progress=report, cancel=cancel, **params)
    return _explanation(volume, model, inputs, result, names, described, params, seed, timings)


def _default_scores(model: Any) -> dict[str, str]:
    """The model JSON's ``output`` decides the default: probabilities stay, logits get the softmax."""
    declared = getattr(getattr(model, "config", None), "output", "logits")
    return {"scores": "probabilities" if declared == "probabilities" else "softmax"}


def inpainted_on_input_grid(model: Any, inputs: Any, image: np.ndarray, mask: Volume) -> tuple[Volume, dict]:
    """The counterfactual on the input grid: the input's voxels outside the mask, exactly; inside it the fill,
    mapped to input intensities by the least-squares line (model-space → input) over the known voxels."""
    model_space = inputs.model_space
    fill = resample_to_reference(model_space.with_array(image.astype(np.float32)), inputs.volume, "linear").array
    ref = resample_to_reference(model_space.with_array(model_space.array.astype(np.float32)), inputs.volume,
                                "linear").array
    original = np.asarray(inputs.volume.array, dtype=np.float64)
    known = mask.array == 0
    a, b, r2 = 1.0, 0.0, float("nan")
    if known.sum() > 2 and np.ptp(ref[known]) > 0:
        a, b = np.polyfit(ref[known].ravel(), original[known].ravel(), 1)
        residual = original[known] - (a * ref[known] + b)
        r2 = float(1 - residual.var() / max(original[known].var(), 1e-12))
    out = np.where(known, original, a * fill + b).astype(inputs.volume.array.dtype
                                                         if np.issubdtype(inputs.volume.array.dtype, np.floating)
                                                         else np.float32)
    return inputs.volume.with_array(out, kind="counterfactual"), {"slope": float(a), "intercept": float(b),
                                                                    "r2": r2}


def _explanation(volume, model, inputs, result, names, described, params, seed, timings
                 ) -> CounterfactualExplanation:
    from ..provenance import run_provenance
    from .common import to_input_grid

    c = int(result.classes[0])
    soft = to_input_grid(model, inputs, model.to_array(result.attributions[0:1])[0].astype(np.float32), "linear",
                         np.float32, kind="counterfactual_soft_map", label=names[c])
    mask = to_input_grid(model, inputs, model.to_array(result.mask[0:1].float())[0].astype(np.uint8), "nearest",
                         np.uint8, kind="counterfactual_mask", label=names[c])
    inpainted, intensity = inpainted_on_input_grid(model, inputs, model.to_array(result.counterfactual[0, 0]), mask)
    losses = {k: [row[0] for row in v] for k, v in result.losses.items()}
    product = {"product": "counterfactual (inpainting)", "class": names[c], "class_index": c,
               "probability_before": result.prob_before[0], "probability_after": result.prob_after[0],
               "inpainter": described, "mask_voxels_model_grid": int(result.mask[0].sum()),
               "restart_losses": result.restart_losses[0], "inpainted_intensity_map": intensity}
    provenance = run_provenance(method=METHOD, result=result, params=params, seed=seed, volume=volume,
                                model_space=inputs.model_space, model=model, device=inputs.device, timings=timings,
                                product=product)
    return CounterfactualExplanation(soft, mask, inpainted, names[c], c, result.prob_before[0],
                                     result.prob_after[0], losses, params["fill"], provenance)


def loss_figure(expl: CounterfactualExplanation, path: Path) -> Path:
    """The loss curve per term (φ, ψ, tv, ar and the weighted total) over the Adam steps."""
    from ..figures import new_figure, save_figure

    fig = new_figure(6.0, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for name, values in expl.losses.items():
        ax.plot(range(len(values)), values, label=name, linewidth=2.2 if name == "total" else 1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss term")
    ax.set_title(f"Counterfactual '{expl.class_name}': p {expl.prob_before:.3f} → {expl.prob_after:.3f}")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def save_counterfactual(expl: CounterfactualExplanation, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write soft map, mask, inpainted volume, probabilities, loss curve (CSV + PNG) and provenance atomically."""
    from ..io import atomic_output_folder, write_csv, write_json
    from ..volume import write_volume

    with atomic_output_folder(out_dir, overwrite=overwrite) as tmp:
        write_volume(expl.soft_map, tmp / "soft_map.nii.gz")
        write_volume(expl.mask, tmp / "mask.nii.gz")
        write_volume(expl.inpainted, tmp / "inpainted.nii.gz")
        write_json(tmp / "probabilities.json", probability_record(expl))
        terms = list(expl.losses)
        steps = len(expl.losses[terms[0]]) if terms else 0
        write_csv(tmp / "loss_curve.csv", ["step", *terms], [[s, *(expl.losses[t][s] for t in terms)]
                                                            for s in range(steps)])
        loss_figure(expl, tmp / "loss_curve.png")
        write_json(tmp / "provenance.json", expl.provenance)
    return Path(out_dir)


def probability_record(expl: CounterfactualExplanation) -> dict[str, Any]:
    return {"class": expl.class_name, "class_index": expl.class_index, "probability_before": expl.prob_before,
            "probability_after": expl.prob_after, "change": expl.probability_change, "fill": expl.fill,
            "mask_voxels": int(np.count_nonzero(expl.mask.array))}
