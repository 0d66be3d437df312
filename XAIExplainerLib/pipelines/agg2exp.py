"""The Agg2Exp product for one scan: segment, attribute every class at once, aggregate over RoIs, graph, save.

Data flow (one way; the shared steps are in :mod:`.common`)::

    Volume ─preprocess→ model space ─to_tensor→ x ─logits→ clean prediction ─→ ClassAggregate target
          └──────────── RoI map (nearest) ─→ model space          method(model, x, target) → e (K, D, H, W)
    e + RoIs in model space → RoI importance matrix → graph;   e ─to_input_grid→ heatmaps on the input grid

The matrix is computed in **model space**, where the attributions were computed: there every voxel is one input
of the network and carries its own attribution. Resampling a heatmap to the input grid interpolates (and, for
anisotropic scans, duplicates or merges) voxels, which changes the L1 mass and smears it across RoI borders, so
a matrix measured on the input grid would partly measure the resampling. RoI maps are therefore brought to the
model grid with nearest-neighbour interpolation (labels stay labels) and the heatmaps go to the input grid only
for viewing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import common
from .roi_importance import RoIImportance, context_ratios, roi_importance
from ..errors import GeometryMismatchError, InvalidVolumeError, XAIExplainerError
from ..io import atomic_output_folder, safe_name, write_json, write_matrix_csv
from ..progress import CancelCallback, ProgressCallback, silent, sub_progress
from ..provenance import run_provenance
from ..volume import Volume, label_dtype, labels_on_grid, require_same_grid, resample_to_reference, write_volume

__all__ = ["Explanation", "explain_volume", "save_explanation"]


@dataclass
class Explanation:
    """Everything one explained scan produces (volumes on the *input* grid; matrices from model space)."""

    image: Volume
    labels: Volume  # predicted label map on the input grid (uint8, uint16 beyond 256 classes)
    class_names: list[str]  # the explained classes, in matrix row order
    attributions: dict[str, Volume]  # class name -> heatmap on the input grid (float32)
    roi_labels: Volume  # the RoI map on the input grid (the prediction unless the user passed RoIs)
    roi_names: list[str]  # matrix column order
    matrix: np.ndarray  # (classes x RoIs)
    variant: str
    graph: Any  # networkx.DiGraph
    absent_classes: list[str]  # explained classes missing from the prediction (public name; see ``absent``)
    importance: RoIImportance
    segment_importance: RoIImportance  # always against the predicted segments (gives the context ratios)
    context_ratio: dict[str, float]
    label_names: list[str]  # every label of the model (index = label value in ``labels``)
    metrics: dict | None = None
    provenance: dict = field(default_factory=dict)

    @property
    def absent(self) -> list[str]:
        """The same list under the name targets and RoI matrices use (``target.absent``, ``importance.absent``)."""
        return self.absent_classes


@dataclass
class _Prediction:
    """The clean prediction in model space and the Agg2Exp target fixed from it."""

    target: Any  # ClassAggregate
    labels: np.ndarray  # (z, y, x) argmax in model space (uint8, uint16 beyond 256 classes)
    label_names: list[str]
    probabilities: np.ndarray  # (C, z, y, x) softmax in model space: the label map on the input grid comes from it


@dataclass
class _Aggregation:
    importance: RoIImportance  # over the user's RoIs, or the predicted segments
    segment_importance: RoIImportance
    context_ratio: dict[str, float]


# ---- steps ---------------------------------------------------------------------------------------------------------
def _check_rois(volume: Volume, rois: Volume | None, roi_names: Any) -> None:
    if rois is not None:
        if not isinstance(rois, Volume):
            raise InvalidVolumeError(f"rois must be a Volume label map, got {type(rois).__name__}.")
        require_same_grid(volume, rois, "RoI map")
    if roi_names is not None and rois is None:
        raise XAIExplainerError("roi_names name the labels of an RoI map; pass rois as well (the predicted segments "
                                "are named by the model's label names).")


def _roi_name_map(roi_names: "Mapping[int, str] | Sequence[str] | None") -> "Mapping[int, str] | None":
    if roi_names is None or isinstance(roi_names, Mapping):
        return roi_names
    return {i: str(n) for i, n in enumerate(roi_names)}


def _predict(model: Any, inputs: common.ModelInput, classes: Any, reduction: str, spec: Any,
             method_inputs: dict) -> _Prediction:
    """Clean logits → ClassAggregate target (masks fixed from the unperturbed prediction) and the label map.

    A method that builds semantic supervoxels from the prediction (``label_map``) is handed this one, which saves
    it a forward pass.
    """
    import torch

    from ..attribution import ClassAggregate

    logits = common.predict(model, inputs.x)
    label_names = [str(n) for n in model.label_names]
    target = ClassAggregate.from_logits(logits, classes, label_names=label_names, reduction=reduction)
    argmax = logits[0].argmax(0)
    labels = common.to_array(model, argmax).astype(label_dtype(len(label_names)))  # (z, y, x)
    to_probabilities = getattr(model, "output_to_probabilities", lambda out: torch.softmax(out, dim=1))
    probabilities = common.to_array(model, to_probabilities(logits)[0])  # the numbers `segment` uses
    if "label_map" in spec.needs:
        method_inputs["label_map"] = argmax.cpu()
    del logits
    if labels.shape != inputs.model_space.shape:
        raise GeometryMismatchError(
            f"The model output grid {labels.shape} differs from its preprocessed input {inputs.model_space.shape}; "
            "the model must return logits on its input grid."
        )
    return _Prediction(target, labels, label_names, probabilities)


def _aggregate(attr: np.ndarray, pred: _Prediction, inputs: common.ModelInput, variant: str, rois: Volume | None,
               roi_names: Any) -> _Aggregation:
    """The RoI importance matrices in model space: over the predicted segments always, over the user's RoIs too."""
    target, names = pred.target, pred.label_names
    segments = roi_importance(attr, pred.labels, target.names, variant=variant, roi_ids=range(len(names)),
                              roi_names=names, absent=target.absent, zero_name=names[0])
    importance = segments
    if rois is not None:
        rois_model = resample_to_reference(rois, inputs.model_space, "nearest")
        input_ids = np.unique(np.rint(np.asarray(rois.array, dtype=np.float64)).astype(np.int64))
        importance = roi_importance(attr, rois_model.array, target.names, variant=variant, roi_ids=input_ids,
                                    roi_names=_roi_name_map(roi_names), absent=target.absent)
    ratios = context_ratios(segments) if variant != "mean" else {}
    return _Aggregation(importance, segments, ratios)


def _centroids(roi_input: Volume, labels_input: Volume, importance: RoIImportance, target: Any) -> dict:
    """RoI centroids (RAS mm) for the graph; classes that are not RoIs sit at their predicted segment's centroid."""
    from .roi_graph import label_centroids_mm

    try:
        centroids = label_centroids_mm(roi_input, dict(zip(importance.roi_ids, importance.roi_names)))
        own = {c: n for c, n in zip(target.classes, target.names) if n not in centroids}
        if own:
            centroids.update(label_centroids_mm(labels_input, own))
    except Exception:  # noqa: BLE001 - positions are cosmetic; the graph is drawn with a layout instead
        centroids = {}
    return centroids


def _agg2exp_provenance(target: Any, reduction: str, variant: str, rois: Volume | None, label_names: list[str],
                        graph_top_k: int | None, graph_threshold: float | None) -> dict[str, Any]:
    """The Agg2Exp entries of the provenance (the shared ones come from :func:`run_provenance`)."""
    return {
        "classes": list(target.names),
        "class_indices": [int(c) for c in target.classes],
        "target": {"definition": "sum over the clean prediction's class mask of the class logits (Agg2Exp f_c)",
                   "reduction": reduction},
        "variant": variant,
        "rois": "user label map" if rois is not None else "predicted segments",
        "matrix_space": "model space (preprocessed grid)",
        "label_names": label_names,
        "graph": {"top_k": graph_top_k, "threshold": graph_threshold},
    }


# ---- the pipeline --------------------------------------------------------------------------------------------------
def explain_volume(
    volume: Volume,
    model: Any,
    method: "str | Callable" = "smoothgrad",
    classes: "Sequence[int | str] | None" = None,
    rois: Volume | None = None,
    roi_names: "Mapping[int, str] | Sequence[str] | None" = None,
    method_params: dict | None = None,
    metrics: bool | dict = False,
    device: "str | None" = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
    *,
    variant: str = "absolute",
    seed: int = 0,
    batch_size: int | None = None,
    graph_top_k: int | None = None,
    graph_threshold: float | None = 0.8,
    reduction: str = "sum",
) -> Explanation:
    """Explain ``model``'s segmentation of ``volume`` with Agg2Exp.

    ``model`` is a :class:`~XAIExplainerLib.models.segmentation.SegmentationModel` (or any object with
    ``preprocess``, ``to_tensor``, ``logits``, ``to_input_grid`` and ``label_names``). ``rois`` is a label map
    on the input's grid (atlas, ground truth, Slicer segmentation); without it the RoIs are the predicted
    segments. ``roi_names`` maps RoI label values to names (a dict, or a list indexed by label value).
    ``metrics`` = True (or a dict of metric options) adds faithfulness, sensitivity and complexity.
    The input volume is never modified.
    """
    common.require_volume(volume)
    _check_rois(volume, rois, roi_names)
    spec = common.resolve_method(method)
    method_name = spec.name
    params = dict(method_params or {})
    spec.validate(params)  # a wrong option fails before any model evaluation
    method_inputs: dict[str, Any] = {}  # what the spec says it needs from the pipeline
    timings = common.Timings()
    report = progress or silent
    attr_end = 0.6 if metrics else 0.85  # share of the progress bar the attribution method fills (from 0.1)
    with timings.measure("total_s"):
        inputs = common.prepare_input(volume, model, device, report, timings)
        with timings.measure("prediction_s"):
            report(0.05, "predicting")
            pred = _predict(model, inputs, classes, reduction, spec, method_inputs)
        result, attr = common.run_method(spec, model, inputs, pred.target, params, method_inputs,
                                         batch_size=batch_size, progress=sub_progress(report, 0.1, attr_end),
                                         cancel=cancel, seed=seed,
                                         timings=timings)
        report(attr_end, "aggregating over RoIs")
        with timings.measure("aggregation_s"):
            agg = _aggregate(attr, pred, inputs, variant, rois, roi_names)
        with timings.measure("resample_s"):
            # one label-map rule for `segment` and `explain`: argmax of the resampled probabilities
            labels_input, _ = labels_on_grid(pred.probabilities, inputs.model_space, volume)
            pred.probabilities = None  # (C, z, y, x): not kept longer than needed
            heatmaps = {name: common.to_input_grid(model, inputs, attr[k], "linear", np.float32,
                                                   attribution_of=name, method=method_name)
                        for k, name in enumerate(pred.target.names)}
        roi_input = rois if rois is not None else labels_input
        graph = _graph(agg.importance, roi_input, labels_input, pred.target, graph_top_k, graph_threshold)
        metric_values = _metrics(metrics, model, inputs, pred.target, spec, result, params, method_inputs, seed,
                                 batch_size, cancel, report, timings)
    report(1.0, "done")
    provenance = run_provenance(
        method=method_name, result=result, params=params, seed=seed, volume=volume, model_space=inputs.model_space,
        model=model, device=inputs.device, timings=timings, batch_size=batch_size,
        product=_agg2exp_provenance(pred.target, reduction, variant, rois, pred.label_names, graph_top_k,
                                    graph_threshold))
    return Explanation(
        image=volume, labels=labels_input, class_names=list(pred.target.names), attributions=heatmaps,
        roi_labels=roi_input, roi_names=list(agg.importance.roi_names), matrix=agg.importance.matrix,
        variant=variant, graph=graph, absent_classes=list(pred.target.absent), importance=agg.importance,
        segment_importance=agg.segment_importance, context_ratio=agg.context_ratio, label_names=pred.label_names,
        metrics=metric_values, provenance=provenance,
    )


def _graph(importance: RoIImportance, roi_input: Volume, labels_input: Volume, target: Any, top_k: int | None,
           threshold: float | None):
    from .roi_graph import importance_graph

    centroids = _centroids(roi_input, labels_input, importance, target)
    return importance_graph(importance, top_k=top_k, threshold=threshold, centroids_mm=centroids)


def _metrics(metrics: bool | dict, model: Any, inputs: common.ModelInput, target: Any, spec: Any, result: Any,
             params: dict, method_inputs: dict, seed: int, batch_size: int | None, cancel: Any, report: ProgressCallback,
             timings: common.Timings) -> dict | None:
    """Faithfulness, sensitivity and complexity of the attributions, when asked for (``metrics`` = True or options)."""
    if not metrics:
        return None
    from ..metrics import evaluate_attributions

    with timings.measure("metrics_s"):
        report(0.65, "quality metrics (faithfulness, sensitivity, complexity)")
        options = metrics if isinstance(metrics, dict) else {}
        return evaluate_attributions(common.model_forward(model), inputs.x, target, spec, result, method_params=params,
                                     method_inputs=method_inputs, seed=seed, batch_size=batch_size, cancel=cancel, **options)


# ---- saving ------------------------------------------------------------------------------------------------------
_README = """XAIExplainer explanation ({method}, {variant} RoI importance)

What each file means
--------------------
heatmaps/attribution_<k>_<class>.nii.gz
    Voxel attribution map of class <class> (float32) on the input image's grid. Positive (red) voxels raise
    the class score f_c = sum of the class-c logits over the voxels predicted as c; negative voxels lower it.
labels.nii.gz
    The model's predicted label map on the input grid (value = label index; names in provenance.json).
rois.nii.gz
    The RoI label map the matrix was computed over (the prediction unless a RoI map was given).
matrix.csv / matrix.json
    Local RoI importance: row = explained class a, column = RoI b, value e(b->a) = share of class a's
    attribution mass (L1, {variant}) lying in RoI b. Mass-variant rows sum to 1. Computed in the model's
    preprocessed space, where the attributions were computed. matrix.json also lists absent classes (not in
    the prediction; their rows are 0), zero-mass classes, and each class's context ratio (mass inside its own
    predicted segment).
matrix.png
    The matrix as a heatmap.
graph.json / graph.graphml / graph.png
    The RoI importance graph: edge b -> a weighted by e(b->a), kept per class by {graph_rule}. Node x, y, z
    are RoI centroids in RAS millimetres. GraphML opens in networkx, Gephi and Cytoscape.
slices/slices_<k>_<class>.png
    Axial, coronal and sagittal slices of the heatmap over the image; yellow outline = the class's segment,
    white = other segments.
metrics.json (only with --metrics)
    Faithfulness correlation, average sensitivity, complexity and wall time per class.
provenance.json
    Method, parameters, seed, model hash, library versions, timings and geometry: what is needed to
    reproduce this folder.
"""


def _readme_text(expl: Explanation) -> str:
    """README.txt of a saved folder, with the graph's edge rule spelled out from the provenance."""
    graph_cfg = expl.provenance.get("graph", {})
    rule = []
    if graph_cfg.get("threshold") is not None:
        rule.append(f"the smallest edge set reaching {graph_cfg['threshold']:.0%} of the row mass")
    if graph_cfg.get("top_k") is not None:
        rule.append(f"at most the {graph_cfg['top_k']} strongest edges")
    return _README.format(method=expl.provenance.get("method", "?"), variant=expl.variant,
                          graph_rule=" and ".join(rule) or "all non-zero edges")


def _write_figures(expl: Explanation, folder: Path) -> None:
    """matrix.png, graph.png and one slice figure per class (heatmap over the image, segment outlined)."""
    from ..figures import attribution_slices, draw_graph, matrix_heatmap

    method = expl.provenance.get("method", "")
    matrix_heatmap(expl.matrix, expl.class_names, expl.roi_names, folder / "matrix.png",
                   title=f"Local RoI importance ({expl.variant}, {method})")
    draw_graph(expl.graph, folder / "graph.png")
    (folder / "slices").mkdir()
    image = np.asarray(expl.image.array, dtype=np.float32)
    for k, name in enumerate(expl.class_names):
        label_id = expl.label_names.index(name) if name in expl.label_names else None
        note = " (absent from the prediction)" if name in expl.absent_classes else ""
        attribution_slices(image, expl.attributions[name].array, expl.labels.array, label_id,
                           folder / "slices" / f"slices_{k}_{safe_name(name)}.png", expl.image.spacing,
                           title=f"{name}{note}: {method} attribution")


def save_explanation(expl: Explanation, out_dir: str | os.PathLike[str], overwrite: bool = False,
                     figures: bool = True) -> Path:
    """Write every output of an explanation into ``out_dir`` (atomically: all files or none)."""
    from .roi_graph import write_graph

    with atomic_output_folder(out_dir, overwrite=overwrite) as tmp:
        (tmp / "heatmaps").mkdir()
        for k, name in enumerate(expl.class_names):
            write_volume(expl.attributions[name], tmp / "heatmaps" / f"attribution_{k}_{safe_name(name)}.nii.gz")
        write_volume(expl.labels, tmp / "labels.nii.gz")
        write_volume(expl.roi_labels, tmp / "rois.nii.gz")
        write_matrix_csv(tmp / "matrix.csv", expl.matrix, expl.class_names, expl.roi_names)
        payload = expl.importance.to_dict()
        payload["context_ratio"] = expl.context_ratio
        if expl.importance is not expl.segment_importance:
            payload["segment_matrix"] = expl.segment_importance.to_dict()
        write_json(tmp / "matrix.json", payload)
        write_graph(expl.graph, tmp, "graph")
        if expl.metrics is not None:
            write_json(tmp / "metrics.json", expl.metrics)
        write_json(tmp / "provenance.json", expl.provenance)
        (tmp / "README.txt").write_text(_readme_text(expl))
        if figures:
            _write_figures(expl, tmp)
    return Path(out_dir)
