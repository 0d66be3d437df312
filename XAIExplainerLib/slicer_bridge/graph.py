"""The RoI importance graph drawn on the anatomy in the 3D view.

Each RoI is a control point of one markups fiducial node, placed at the RoI's centroid (RAS mm, from
:func:`XAIExplainerLib.pipelines.roi_graph.label_centroids_mm`); each retained edge RoI -> class is a markups line whose
diameter and colour (yellow -> red) grow with its importance. The edges are chosen by the same rule as the
library's graph (:func:`XAIExplainerLib.pipelines.roi_graph.select_edges`), so what the user sees in Slicer matches the
exported graph; :func:`update_roi_graph` redraws the lines for a new top-k / threshold (the module's slider).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from vtkmodules.vtkCommonDataModel import vtkVector3d
from vtkmodules.vtkRenderingCore import vtkColorTransferFunction

from ..errors import SceneInputError
from ..pipelines.roi_graph import label_centroids_mm, select_edges
from ..volume import Volume
from .scene import get_context

__all__ = ["GRAPH_STATE_ATTRIBUTE", "RoIGraphNodes", "edge_style", "restore_roi_graph", "show_roi_graph",
           "update_roi_graph"]

#: Attribute of the graph's points node holding what a redraw needs (matrix, names, positions) as JSON, so the
#: graph stays interactive after the scene is saved and reloaded (Python objects do not survive that).
GRAPH_STATE_ATTRIBUTE = "XAIExplainer.graphState"
#: Node reference role from each edge line to its graph's points node.
GRAPH_REFERENCE_ROLE = "XAIExplainer.graphNodes"

#: Line diameters (mm) of the weakest and strongest drawn edge.
MIN_DIAMETER_MM, MAX_DIAMETER_MM = 1.5, 5.0
_WEAK, _STRONG = (1.0, 0.85, 0.2), (0.85, 0.05, 0.05)


@dataclass
class RoIGraphNodes:
    """The markups that draw one graph, plus what :func:`update_roi_graph` needs to redraw it."""

    points: Any  # vtkMRMLMarkupsFiducialNode, one control point per RoI (label = RoI name)
    lines: list[Any]  # vtkMRMLMarkupsLineNode per drawn edge
    edges: list[tuple[str, str, float]]  # (RoI, class, weight) per line, same order
    positions: dict[str, tuple[float, float, float]]  # RAS mm of every RoI / class node
    matrix: np.ndarray
    roi_names: list[str]
    class_names: list[str]
    name: str = "RoI graph"
    attributes: dict[str, str] = field(default_factory=dict)

    def nodes(self) -> list[Any]:
        """Every MRML node of the graph (points first)."""
        return [self.points, *self.lines]


def edge_style(weight: float, max_weight: float) -> tuple[float, tuple[float, float, float]]:
    """(diameter in mm, RGB) of an edge: linear in weight / max_weight, from thin yellow to thick red."""
    t = float(np.clip(weight / max_weight, 0.0, 1.0)) if max_weight > 0 else 1.0
    ctf = vtkColorTransferFunction()
    ctf.AddRGBPoint(0.0, *_WEAK)
    ctf.AddRGBPoint(1.0, *_STRONG)
    return MIN_DIAMETER_MM + t * (MAX_DIAMETER_MM - MIN_DIAMETER_MM), tuple(ctf.GetColor(t))


def _apply_attributes(node: Any, attributes: Mapping[str, str]) -> None:
    for key, value in attributes.items():
        node.SetAttribute(str(key), str(value))


def _draw_lines(graph: RoIGraphNodes, top_k: int | None, threshold: float | None) -> None:
    scene = graph.points.GetScene()
    for line in graph.lines:
        scene.RemoveNode(line)
    graph.lines, graph.edges = [], []
    wanted: list[tuple[str, str, float]] = []
    for k, target in enumerate(graph.class_names):
        for j in select_edges(graph.matrix[k], top_k, threshold):
            source = graph.roi_names[j]
            # a self-loop (a class's own segment: its context ratio) has no length to draw
            if source != target and source in graph.positions and target in graph.positions:
                wanted.append((source, target, float(graph.matrix[k, j])))
    max_weight = max((w for _, _, w in wanted), default=0.0)
    for source, target, weight in wanted:
        line = scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", f"{graph.name}: {source} -> {target}")
        line.CreateDefaultDisplayNodes()
        line.AddControlPointWorld(vtkVector3d(*graph.positions[source]), source)
        line.AddControlPointWorld(vtkVector3d(*graph.positions[target]), target)
        line.SetLocked(True)
        diameter, color = edge_style(weight, max_weight)
        display = line.GetDisplayNode()
        display.SetCurveLineSizeMode(display.UseLineDiameter)
        display.SetLineDiameter(diameter)
        display.SetColor(*color)
        display.SetSelectedColor(*color)
        display.SetPointLabelsVisibility(False)
        display.SetPropertiesLabelVisibility(False)
        display.SetGlyphScale(0.5)
        _apply_attributes(line, graph.attributes)
        line.SetAttribute("XAIExplainer.edge", f"{source} -> {target}")
        line.SetAttribute("XAIExplainer.weight", repr(weight))
        line.SetNodeReferenceID(GRAPH_REFERENCE_ROLE, graph.points.GetID())
        graph.lines.append(line)
        graph.edges.append((source, target, weight))


def show_roi_graph(
    roi_labels: Volume,
    roi_names: Sequence[str],
    matrix: Any,
    class_names: Sequence[str],
    top_k: int | None = None,
    threshold: float | None = 0.8,
    *,
    roi_ids: Sequence[int] | None = None,
    extra_positions: Mapping[str, Sequence[float]] | None = None,
    name: str = "RoI graph",
    scene: Any = None,
    attributes: Mapping[str, str] | None = None,
) -> RoIGraphNodes:
    """Draw the graph of ``matrix`` (classes x RoIs) on the anatomy; returns its markups nodes.

    ``roi_ids[j]`` is the label value of RoI ``roi_names[j]`` in ``roi_labels`` (default: j). A class that is
    not an RoI is placed at ``extra_positions[class]`` (RAS mm) or, if missing, its edges are not drawn. RoIs
    absent from the label map get no point, and neither does label 0 (the space outside every RoI, e.g.
    "background"/"unlabelled"): its centroid is a meaningless point in the middle of the anatomy.
    """
    m = np.asarray(matrix, dtype=np.float64)
    roi_names, class_names = [str(n) for n in roi_names], [str(n) for n in class_names]
    ids = list(range(len(roi_names))) if roi_ids is None else [int(i) for i in roi_ids]
    if m.shape != (len(class_names), len(roi_names)) or len(ids) != len(roi_names):
        raise SceneInputError(
            f"The matrix has shape {m.shape}, expected (classes, RoIs) = ({len(class_names)}, {len(roi_names)}), "
            f"with one label value per RoI ({len(ids)} given)."
        )
    positions = {k: tuple(map(float, v)) for k, v in (extra_positions or {}).items()}
    positions.update(label_centroids_mm(roi_labels, {i: n for i, n in zip(ids, roi_names) if i != 0}))
    scene = scene or get_context().scene
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", f"{name} nodes")
    points.CreateDefaultDisplayNodes()
    for roi in roi_names:
        if roi in positions:
            points.AddControlPointWorld(vtkVector3d(*positions[roi]), roi)
    for roi in class_names:  # classes that are not RoIs still need a visible end point
        if roi not in roi_names and roi in positions:
            points.AddControlPointWorld(vtkVector3d(*positions[roi]), roi)
    points.SetLocked(True)
    display = points.GetDisplayNode()
    display.SetSelectedColor(1.0, 1.0, 1.0)
    display.SetColor(1.0, 1.0, 1.0)
    display.SetGlyphScale(2.0)
    display.SetTextScale(2.5)
    attrs = {str(k): str(v) for k, v in (attributes or {}).items()}
    _apply_attributes(points, attrs)
    graph = RoIGraphNodes(points=points, lines=[], edges=[], positions=positions, matrix=m, roi_names=roi_names,
                          class_names=class_names, name=name, attributes=attrs)
    _store_state(graph)
    _draw_lines(graph, top_k, threshold)
    return graph


def _store_state(graph: RoIGraphNodes) -> None:
    state = {"matrix": graph.matrix.tolist(), "roi_names": graph.roi_names, "class_names": graph.class_names,
             "positions": {k: list(v) for k, v in graph.positions.items()}, "name": graph.name}
    graph.points.SetAttribute(GRAPH_STATE_ATTRIBUTE, json.dumps(state))


def restore_roi_graph(points: Any) -> RoIGraphNodes:
    """The :class:`RoIGraphNodes` of a graph found in a (reloaded) scene, from its points node alone."""
    text = points.GetAttribute(GRAPH_STATE_ATTRIBUTE) if points is not None else None
    if not text:
        raise SceneInputError("This node is not the points node of an XAIExplainer RoI graph (no saved graph state).")
    state = json.loads(text)
    scene = points.GetScene()
    lines, edges = [], []
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLMarkupsLineNode")):
        line = scene.GetNthNodeByClass(i, "vtkMRMLMarkupsLineNode")
        if line.GetNodeReferenceID(GRAPH_REFERENCE_ROLE) == points.GetID():
            source, _, target = (line.GetAttribute("XAIExplainer.edge") or "").partition(" -> ")
            lines.append(line)
            edges.append((source, target, float(line.GetAttribute("XAIExplainer.weight") or 0.0)))
    keys = list(points.GetAttributeNames() or [])
    attributes = {k: points.GetAttribute(k) for k in keys if k != GRAPH_STATE_ATTRIBUTE}
    return RoIGraphNodes(points=points, lines=lines, edges=edges,
                         positions={k: tuple(v) for k, v in state["positions"].items()},
                         matrix=np.asarray(state["matrix"], dtype=np.float64), roi_names=list(state["roi_names"]),
                         class_names=list(state["class_names"]), name=state.get("name", "RoI graph"),
                         attributes=attributes)


def update_roi_graph(
    graph: RoIGraphNodes,
    top_k: int | None = None,
    threshold: float | None = 0.8,
    matrix: Any = None,
) -> RoIGraphNodes:
    """Redraw ``graph``'s lines for a new top-k / threshold (and optionally a new matrix of the same shape)."""
    if matrix is not None:
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape != graph.matrix.shape:
            raise SceneInputError(f"The new matrix has shape {m.shape}; the graph was drawn for {graph.matrix.shape}.")
        graph.matrix = m
        _store_state(graph)
    _draw_lines(graph, top_k, threshold)
    return graph
