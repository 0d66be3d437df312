"""The RoI importance graph: which regions each class's prediction relies on, as a directed graph.

Nodes are RoIs (and explained classes); an edge ``b → a`` carries the importance e_{b→a} of RoI ``b`` for
class ``a``. When the RoIs are the predicted segments, a class and its segment are the same node and the
self-loop ``a → a`` is the class's context ratio. A dense matrix of C classes × R RoIs is unreadable as a graph,
so it is simplified per class: keep the ``top_k`` strongest incoming edges, or the smallest set of edges whose
weights reach a fraction ``threshold`` of the row's mass (the cumulative rule keeps a class that spreads its
attention over many RoIs honest, where top-k would cut it off arbitrarily).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .roi_importance import RoIImportance
from ..io import write_json


def select_edges(row: np.ndarray, top_k: int | None = None, threshold: float | None = None) -> list[int]:
    """Indices of the kept edges of one row (largest weights first); zero-weight edges are never kept.

    ``threshold`` θ in (0, 1]: the smallest prefix of the sorted weights whose sum is ≥ θ · (row sum).
    ``top_k``: at most k edges. Both given: the cumulative set, then cut to k.
    """
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}.")
    if threshold is not None and not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}.")
    w = np.asarray(row, dtype=np.float64)
    order = [int(i) for i in np.argsort(-w, kind="stable") if w[i] > 0]
    if threshold is not None and order:
        total = float(w[order].sum())
        cumulative = np.cumsum(w[order])
        # tiny tolerance: a row that sums to 1 in floating point must reach θ = 1 with all its edges
        n_keep = int(np.searchsorted(cumulative, threshold * total - 1e-12 * total)) + 1
        order = order[: min(n_keep, len(order))]
    if top_k is not None:
        order = order[:top_k]
    return order


def importance_graph(
    importance: RoIImportance,
    *,
    top_k: int | None = None,
    threshold: float | None = None,
    centroids_mm: Mapping[str, Sequence[float]] | None = None,
):
    """Build a ``networkx.DiGraph`` from a local (or global) RoI importance matrix.

    Node attributes: ``kind`` ("roi", "class" or "roi+class"), ``context_ratio`` for classes that are also
    RoIs, and ``x, y, z`` (RAS mm) when ``centroids_mm`` gives a position. Edge attributes: ``weight``
    (importance), ``rank`` (1 = strongest for that class). Absent classes keep their node and get no edges.
    """
    import networkx as nx

    g = nx.DiGraph(variant=importance.variant, top_k=-1 if top_k is None else int(top_k),
                   threshold=-1.0 if threshold is None else float(threshold))
    classes = set(importance.class_names)
    for name in importance.roi_names:
        g.add_node(name, kind="roi+class" if name in classes else "roi")
    for k, name in enumerate(importance.class_names):
        if name not in g:
            g.add_node(name, kind="class")
        g.nodes[name]["absent"] = name in importance.absent
        g.nodes[name]["zero_mass"] = name in importance.zero_mass
        if name in importance.roi_names:
            g.nodes[name]["context_ratio"] = float(importance.matrix[k, importance.roi_names.index(name)])
    for name, pos in (centroids_mm or {}).items():
        if name in g and pos is not None and all(np.isfinite(pos)):
            g.nodes[name].update(x=float(pos[0]), y=float(pos[1]), z=float(pos[2]))
    for k, target in enumerate(importance.class_names):
        for rank, j in enumerate(select_edges(importance.matrix[k], top_k, threshold), start=1):
            g.add_edge(importance.roi_names[j], target, weight=float(importance.matrix[k, j]), rank=rank)
    return g


def graph_to_dict(g) -> dict[str, Any]:
    """A plain JSON form: ``{"graph": attrs, "nodes": [{"id", ...attrs}], "edges": [{"source", "target", ...}]}``."""
    return {
        "directed": True,
        "graph": dict(g.graph),
        "nodes": [{"id": n, **attrs} for n, attrs in g.nodes(data=True)],
        "edges": [{"source": u, "target": v, **attrs} for u, v, attrs in g.edges(data=True)],
    }


def graph_from_dict(data: dict[str, Any]):
    """Inverse of :func:`graph_to_dict`: a ``networkx.DiGraph`` with the same attributes."""
    import networkx as nx

    g = nx.DiGraph(**dict(data.get("graph", {})))
    for node in data.get("nodes", []):
        attrs = dict(node)
        g.add_node(attrs.pop("id"), **attrs)
    for edge in data.get("edges", []):
        attrs = dict(edge)
        g.add_edge(attrs.pop("source"), attrs.pop("target"), **attrs)
    return g


def write_graph(g, folder: str | os.PathLike[str], stem: str = "graph") -> dict[str, Path]:
    """Write ``<stem>.json`` and ``<stem>.graphml`` (readable by networkx, Gephi, Cytoscape) into ``folder``."""
    import networkx as nx

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / f"{stem}.json"
    write_json(json_path, graph_to_dict(g))
    graphml_path = folder / f"{stem}.graphml"
    nx.write_graphml(g, graphml_path)
    return {"json": json_path, "graphml": graphml_path}


def label_centroids_mm(labels, names_by_id: Mapping[int, str]) -> dict[str, tuple[float, float, float]]:
    """Centroid (RAS mm) of each labelled region of a :class:`~XAIExplainerLib.volume.Volume` label map.

    Uses SimpleITK's label statistics, which work in physical (LPS) space; the sign flip gives RAS, Slicer's
    world frame, so graph nodes land on the structures when drawn in a 3D view.
    """
    import SimpleITK as sitk

    arr = np.asarray(labels.array)
    image = labels.with_array(arr.astype(np.uint32)).to_sitk()
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.SetBackgroundValue(int(arr.max()) + 1)  # label 0 (background / unlabelled) is a RoI too
    stats.Execute(image)
    out: dict[str, tuple[float, float, float]] = {}
    for label in stats.GetLabels():
        name = names_by_id.get(int(label))
        if name is not None:
            x, y, z = stats.GetCentroid(label)
            out[name] = (-x, -y, z)
    return out
