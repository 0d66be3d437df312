"""Read back a folder written by :func:`XAIExplainerLib.pipelines.agg2exp.save_explanation` as an :class:`Explanation`.

The Slicer module computes explanations in a background process (``xai-explainer explain``), which saves a
folder; this reader turns the folder into the same :class:`~XAIExplainerLib.pipelines.agg2exp.Explanation` object the
pipeline returns, so that ``slicer_bridge.explanation.add_explanation_to_scene`` works on either. The input image
is not part of the folder; pass it as ``image`` when the caller has it.
"""
from __future__ import annotations

import os
from pathlib import Path

from .roi_graph import graph_from_dict
from .roi_importance import RoIImportance
from ..errors import VolumeReadError
from ..io import read_json, read_result_volume, safe_name
from ..volume import Volume

__all__ = ["graph_from_dict", "load_explanation"]


def load_explanation(folder: str | os.PathLike[str], image: Volume | None = None):
    """The :class:`~XAIExplainerLib.pipelines.agg2exp.Explanation` saved in ``folder``.

    Heatmaps, labels and RoI map come from the NIfTI files, the matrices from ``matrix.json``, the graph from
    ``graph.json`` and names, method and parameters from ``provenance.json``. ``image`` (the explained input,
    which the folder does not store) is kept as given, ``None`` by default.
    """
    from .agg2exp import Explanation

    root = Path(folder)
    if not root.is_dir():
        raise VolumeReadError(f"No explanation folder at '{root}'.")
    provenance = read_json(root / "provenance.json")
    payload = read_json(root / "matrix.json")
    importance = RoIImportance.from_dict(payload)
    segment_importance = (RoIImportance.from_dict(payload["segment_matrix"]) if "segment_matrix" in payload
                          else importance)
    class_names = [str(c) for c in provenance.get("classes", importance.class_names)]
    if class_names != list(importance.class_names):
        raise VolumeReadError(f"provenance.json lists classes {class_names} but matrix.json has rows "
                              f"{importance.class_names}; the folder mixes two explanations.")
    heatmaps = {name: read_result_volume(root / "heatmaps" / f"attribution_{k}_{safe_name(name)}.nii.gz")
                for k, name in enumerate(class_names)}
    metrics_path = root / "metrics.json"
    return Explanation(
        image=image,
        labels=read_result_volume(root / "labels.nii.gz"),
        class_names=class_names,
        attributions=heatmaps,
        roi_labels=read_result_volume(root / "rois.nii.gz"),
        roi_names=list(importance.roi_names),
        matrix=importance.matrix,
        variant=importance.variant,
        graph=graph_from_dict(read_json(root / "graph.json")),
        absent_classes=list(importance.absent),
        importance=importance,
        segment_importance=segment_importance,
        context_ratio={str(k): float(v) for k, v in payload.get("context_ratio", {}).items()},
        label_names=[str(n) for n in provenance.get("label_names", [])],
        metrics=read_json(metrics_path) if metrics_path.is_file() else None,
        provenance=provenance,
    )
