"""The Agg2Exp pipeline for one scan: segment, attribute every class at once, aggregate over RoIs, save.

Data flow (one way)::

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

import contextlib
import csv
import hashlib
import json
import os
import platform
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .roi_importance import RoIImportance, context_ratios, roi_importance
from ..errors import GeometryMismatchError, InvalidVolumeError, OutputExistsError
from ..volume import Volume, require_same_grid, resample_to_reference, write_volume


@dataclass
class Explanation:
    """Everything one explained scan produces (volumes on the *input* grid; matrices from model space)."""

    image: Volume
    labels: Volume  # predicted label map on the input grid (uint8)
    class_names: list[str]  # the explained classes, in matrix row order
    attributions: dict[str, Volume]  # class name -> heatmap on the input grid (float32)
    roi_labels: Volume  # the RoI map on the input grid (the prediction unless the user passed RoIs)
    roi_names: list[str]  # matrix column order
    matrix: np.ndarray  # (classes x RoIs)
    variant: str
    graph: Any  # networkx.DiGraph
    absent_classes: list[str]
    importance: RoIImportance
    segment_importance: RoIImportance  # always against the predicted segments (gives the context ratios)
    context_ratio: dict[str, float]
    label_names: list[str]  # every label of the model (index = label value in ``labels``)
    metrics: dict | None = None
    provenance: dict = field(default_factory=dict)


# ---- helpers -----------------------------------------------------------------------------------------------------
def safe_name(name: str) -> str:
    """A file-name-safe version of a class or RoI name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "unnamed"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_fingerprint(model: Any) -> dict[str, str]:
    """sha256 of the weights file the model came from, or else of its state dict (names + raw bytes)."""
    digest = getattr(model, "sha256", "")
    if isinstance(digest, str) and len(digest) == 64:
        source = str(getattr(model, "source", "") or "")
        return {"sha256": digest, "of": "state dict" if source in ("", "<in-memory>") else f"weights {Path(source).name}"}
    for attr in ("weights_path", "source_path", "path", "source"):
        value = getattr(model, attr, None)
        if isinstance(value, (str, os.PathLike)) and Path(value).is_file():
            return {"sha256": _sha256_file(Path(value)), "of": f"weights file {Path(value).name}"}
    network = getattr(model, "network", model)
    if hasattr(network, "state_dict"):
        h = hashlib.sha256()
        for key, tensor in sorted(network.state_dict().items()):
            h.update(key.encode())
            t = tensor.detach().cpu().contiguous().reshape(-1)
            h.update(t.view(__import__("torch").uint8).numpy().tobytes())
        return {"sha256": h.hexdigest(), "of": "state dict"}
    return {"sha256": "", "of": "unavailable (model exposes neither a weights file nor a state dict)"}


def _versions() -> dict[str, str]:
    from .. import __version__

    out = {"XAIExplainerLib": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for mod in ("torch", "monai", "SimpleITK", "sklearn", "networkx"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing optional package is reported, not fatal
            out[mod] = "not installed"
    return out


def write_matrix_csv(path: Path, matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str]) -> Path:
    """Classes × RoIs as CSV with a header row of RoI names and a first column of class names."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class"] + list(cols))
        for name, row in zip(rows, np.asarray(matrix)):
            w.writerow([name] + [f"{v:.8g}" for v in row])
    return Path(path)


@contextlib.contextmanager
def atomic_output_folder(out_dir: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; rename it to ``out_dir`` only when the block finishes without error.

    A failure removes the temporary folder, so ``out_dir`` is either absent, untouched, or complete.
    """
    out = Path(out_dir).absolute()
    if out.exists() and not overwrite:
        raise OutputExistsError(f"The output folder '{out}' already exists. Choose another folder or pass overwrite.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            if not overwrite:
                raise OutputExistsError(f"The output folder '{out}' appeared while writing; nothing was replaced.")
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---- the pipeline --------------------------------------------------------------------------------------------------
def _model_device(model: Any):
    import torch

    dev = getattr(model, "device", None)
    if dev is not None:
        return torch.device(dev)
    try:
        return next(model.network.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def _roi_name_map(roi_names: "Mapping[int, str] | Sequence[str] | None") -> "Mapping[int, str] | None":
    if roi_names is None or isinstance(roi_names, Mapping):
        return roi_names
    return {i: str(n) for i, n in enumerate(roi_names)}


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
    progress: Callable | None = None,
    cancel: Any = None,
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
    import torch

    from ..attribution import ClassAggregate
    from ..device import resolve_device
    from .roi_graph import importance_graph, label_centroids_mm
    from ..attribution.registry import call_method, get_method
    from ..metrics import evaluate_attributions

    if not isinstance(volume, Volume):
        raise InvalidVolumeError(f"explain_volume needs a Volume, got {type(volume).__name__}; use read_volume().")
    if rois is not None:
        if not isinstance(rois, Volume):
            raise InvalidVolumeError(f"rois must be a Volume label map, got {type(rois).__name__}.")
        require_same_grid(volume, rois, "RoI map")
    if roi_names is not None and rois is None:
        from ..errors import XAIExplainerError

        raise XAIExplainerError("roi_names name the labels of an RoI map; pass rois as well (the predicted segments "
                                "are named by the model's label names).")
    spec = get_method(method)
    method_name = spec.name
    params = dict(method_params or {})
    spec.validate(params)  # a wrong option fails before any model evaluation
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    report = progress or (lambda fraction, message: None)
    attr_span = (0.1, 0.6 if metrics else 0.85)  # share of the progress bar the attribution method fills

    def method_progress(fraction: float, message: str) -> None:
        report(attr_span[0] + (attr_span[1] - attr_span[0]) * float(fraction), message)

    dev = _model_device(model)
    if device is not None and str(device).lower() != "auto" and resolve_device(device) != dev:
        from ..errors import DeviceError

        raise DeviceError(
            f"The model was loaded on {dev} but device '{device}' was requested; load the model with "
            f"SegmentationModel.load(path, device='{device}') so that weights and inputs share one device."
        )
    t = time.perf_counter()
    report(0.0, "preprocessing")
    model_space = model.preprocess(volume)
    x = model.to_tensor(model_space).to(dev)
    timings["preprocess_s"] = time.perf_counter() - t

    t = time.perf_counter()
    report(0.05, "predicting")
    with torch.no_grad():
        logits = model.logits(x)
    label_names = [str(n) for n in model.label_names]
    target = ClassAggregate.from_logits(logits, classes, label_names=label_names, reduction=reduction)
    to_array = getattr(model, "to_array", None) or (lambda t: t.detach().float().cpu().numpy())
    labels_model = to_array(logits[0].argmax(0).to(torch.uint8)).astype(np.uint8)  # (z, y, x)
    inputs = {}  # what the method's spec says it needs from the pipeline
    if "label_map" in spec.needs:
        # semantic supervoxels = the clean prediction, which is already here: saves the method a forward pass
        inputs["label_map"] = logits[0].argmax(0).cpu()
    del logits
    timings["prediction_s"] = time.perf_counter() - t
    if labels_model.shape != model_space.shape:
        raise GeometryMismatchError(
            f"The model output grid {labels_model.shape} differs from its preprocessed input {model_space.shape}; "
            "the model must return logits on its input grid."
        )

    t = time.perf_counter()
    result = call_method(spec, model.logits, x, target, params, device=dev, batch_size=batch_size,
                         progress=method_progress, cancel=cancel, seed=seed, **inputs)
    timings["attribution_s"] = time.perf_counter() - t
    attr = to_array(result.attributions).astype(np.float32)  # (K, z, y, x): the tensor's axes in volume order

    # --- aggregation in model space ---
    report(attr_span[1], "aggregating over RoIs")
    t = time.perf_counter()
    seg_imp = roi_importance(attr, labels_model, target.names, variant=variant, roi_ids=range(len(label_names)),
                             roi_names=label_names, absent=target.absent, zero_name=label_names[0])
    if rois is not None:
        names_map = _roi_name_map(roi_names)
        rois_model = resample_to_reference(rois, model_space, "nearest")
        input_ids = np.unique(np.rint(np.asarray(rois.array, dtype=np.float64)).astype(np.int64))
        importance = roi_importance(attr, rois_model.array, target.names, variant=variant, roi_ids=input_ids,
                                    roi_names=names_map, absent=target.absent)
        roi_input = rois
    else:
        importance = seg_imp
        roi_input = None
    ratios = context_ratios(seg_imp) if variant != "mean" else {}
    timings["aggregation_s"] = time.perf_counter() - t

    # --- back to the input grid for viewing ---
    t = time.perf_counter()
    labels_input = model.to_input_grid(model_space.with_array(labels_model), volume, interpolator="nearest")
    labels_input = labels_input.with_array(np.asarray(labels_input.array).astype(np.uint8))
    if roi_input is None:
        roi_input = labels_input
    heatmaps: dict[str, Volume] = {}
    for k, name in enumerate(target.names):
        heat = model.to_input_grid(model_space.with_array(attr[k]), volume, interpolator="linear")
        heatmaps[name] = heat.with_array(np.asarray(heat.array, dtype=np.float32), attribution_of=name,
                                         method=method_name)
    timings["resample_s"] = time.perf_counter() - t

    names_by_id = dict(zip(importance.roi_ids, importance.roi_names))
    try:
        centroids = label_centroids_mm(roi_input, names_by_id)
        # classes that are not RoIs (atlas RoIs given) sit at the centroid of their predicted segment
        own = {c: n for c, n in zip(target.classes, target.names) if n not in centroids}
        if own:
            centroids.update(label_centroids_mm(labels_input, own))
    except Exception:  # noqa: BLE001 - positions are cosmetic; the graph is drawn with a layout instead
        centroids = {}
    graph = importance_graph(importance, top_k=graph_top_k, threshold=graph_threshold, centroids_mm=centroids)

    metric_values = None
    if metrics:
        t = time.perf_counter()
        report(0.65, "quality metrics (faithfulness, sensitivity, complexity)")
        opts = metrics if isinstance(metrics, dict) else {}
        metric_values = evaluate_attributions(model.logits, x, target, spec, result, method_params=params,
                                              method_inputs=inputs, seed=seed, batch_size=batch_size,
                                              cancel=cancel, **opts)
        timings["metrics_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_all
    report(1.0, "done")

    provenance = {
        "method": method_name,
        "params": result.params if getattr(result, "params", None) else
        {k: v for k, v in params.items() if isinstance(v, (int, float, str, bool, list, type(None)))},
        "seed": getattr(result, "seed", seed),
        "n_model_evaluations": int(getattr(result, "n_model_evaluations", 0)),
        "attribution_seconds": float(getattr(result, "seconds", timings["attribution_s"])),
        "classes": list(target.names),
        "class_indices": [int(c) for c in target.classes],
        "target": {"definition": "sum over the clean prediction's class mask of the class logits (Agg2Exp f_c)",
                   "reduction": reduction},
        "variant": variant,
        "rois": "user label map" if rois is not None else "predicted segments",
        "matrix_space": "model space (preprocessed grid)",
        "model_grid": {"shape_zyx": list(model_space.shape), "spacing_xyz": list(model_space.spacing)},
        "input": {"shape_zyx": list(volume.shape), "spacing_xyz": list(volume.spacing),
                  "source": str(volume.metadata.get("source", ""))},
        "model": model_fingerprint(model),
        "label_names": label_names,
        "device": str(dev),
        "versions": _versions(),
        "timings": timings,
        "graph": {"top_k": graph_top_k, "threshold": graph_threshold},
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return Explanation(
        image=volume,
        labels=labels_input,
        class_names=list(target.names),
        attributions=heatmaps,
        roi_labels=roi_input,
        roi_names=list(importance.roi_names),
        matrix=importance.matrix,
        variant=variant,
        graph=graph,
        absent_classes=list(target.absent),
        importance=importance,
        segment_importance=seg_imp,
        context_ratio=ratios,
        label_names=label_names,
        metrics=metric_values,
        provenance=provenance,
    )


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


def save_explanation(expl: Explanation, out_dir: str | os.PathLike[str], overwrite: bool = False,
                     figures: bool = True) -> Path:
    """Write every output of an explanation into ``out_dir`` (atomically: all files or none)."""
    from ..figures import attribution_slices, draw_graph, matrix_heatmap
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
        (tmp / "matrix.json").write_text(json.dumps(payload, indent=2))
        write_graph(expl.graph, tmp, "graph")
        if expl.metrics is not None:
            (tmp / "metrics.json").write_text(json.dumps(expl.metrics, indent=2))
        (tmp / "provenance.json").write_text(json.dumps(expl.provenance, indent=2, default=str))
        graph_cfg = expl.provenance.get("graph", {})
        rule = []
        if graph_cfg.get("threshold") is not None:
            rule.append(f"the smallest edge set reaching {graph_cfg['threshold']:.0%} of the row mass")
        if graph_cfg.get("top_k") is not None:
            rule.append(f"at most the {graph_cfg['top_k']} strongest edges")
        (tmp / "README.txt").write_text(_README.format(
            method=expl.provenance.get("method", "?"), variant=expl.variant,
            graph_rule=" and ".join(rule) or "all non-zero edges"))
        if figures:
            matrix_heatmap(expl.matrix, expl.class_names, expl.roi_names, tmp / "matrix.png",
                           title=f"Local RoI importance ({expl.variant}, {expl.provenance.get('method', '')})")
            draw_graph(expl.graph, tmp / "graph.png")
            (tmp / "slices").mkdir()
            image = np.asarray(expl.image.array, dtype=np.float32)
            for k, name in enumerate(expl.class_names):
                label_id = expl.label_names.index(name) if name in expl.label_names else None
                note = " (absent from the prediction)" if name in expl.absent_classes else ""
                attribution_slices(image, expl.attributions[name].array, expl.labels.array, label_id,
                                   tmp / "slices" / f"slices_{k}_{safe_name(name)}.png", expl.image.spacing,
                                   title=f"{name}{note}: {expl.provenance.get('method', '')} attribution")
    return Path(out_dir)
