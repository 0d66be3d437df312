"""One call that turns an :class:`~XAIExplainerLib.pipelines.agg2exp.Explanation` into Slicer nodes.

Image (unless the user's own node is given, which is then only read), predicted labels as a semi-transparent
segmentation, one heatmap volume per explained class (the first shown as overlay and volume rendering), the
RoI importance table and bar chart, and the RoI graph on the anatomy. Every node carries the explanation's
provenance as attributes, so it survives saving the scene.
"""
from __future__ import annotations

from typing import Any, Sequence

from .graph import show_roi_graph
from .heatmaps import add_heatmap_volume_rendering, heatmap_window_limit, set_slice_layers, show_heatmap
from .matrix import matrix_chart, matrix_to_table, metrics_to_table
from .provenance import provenance_attributes, set_provenance
from .scene import get_context
from .volumes import add_volume_node

__all__ = ["add_explanation_to_scene", "add_segmentation_node", "label_color_node"]

#: Segment colours (matplotlib tab20) by label value; label 0 (background) is never a segment.
_PALETTE = (
    (0.122, 0.467, 0.706), (0.682, 0.780, 0.910), (1.000, 0.498, 0.055), (1.000, 0.733, 0.471),
    (0.173, 0.627, 0.173), (0.596, 0.875, 0.541), (0.839, 0.153, 0.157), (1.000, 0.596, 0.588),
    (0.580, 0.404, 0.741), (0.773, 0.690, 0.835), (0.549, 0.337, 0.294), (0.769, 0.612, 0.580),
    (0.890, 0.467, 0.761), (0.969, 0.714, 0.824), (0.498, 0.498, 0.498), (0.780, 0.780, 0.780),
    (0.737, 0.741, 0.133), (0.859, 0.859, 0.553), (0.090, 0.745, 0.812), (0.620, 0.855, 0.898),
)


def label_color_node(label_names: Sequence[str], name: str = "XAIExplainer labels", scene: Any = None) -> Any:
    """A colour table whose entry v is named ``label_names[v]``; importing a label map with it names segments."""
    scene = scene or get_context().scene
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    node.SetTypeToUser()
    node.SetNumberOfColors(len(label_names))
    node.SetColor(0, str(label_names[0]), 0.0, 0.0, 0.0, 0.0)
    for v in range(1, len(label_names)):
        r, g, b = _PALETTE[(v - 1) % len(_PALETTE)]
        node.SetColor(v, str(label_names[v]), r, g, b, 1.0)
    return node


def add_segmentation_node(labels: Any, label_names: Sequence[str], name: str = "Segmentation",
                          opacity: float = 0.35, scene: Any = None) -> Any:
    """Import a label :class:`Volume` as a segmentation (segments named by ``label_names``), semi-transparent."""
    ctx = get_context()
    scene = scene or ctx.scene
    names = list(label_names)
    top = int(labels.array.max()) if labels.array.size else 0
    names += [f"label {v}" for v in range(len(names), top + 1)]
    labelmap = add_volume_node(labels, f"{name} labelmap", labelmap=True, scene=scene)
    colors = label_color_node(names, f"{name} colours", scene)
    labelmap.GetDisplayNode().SetAndObserveColorNodeID(colors.GetID())
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentation.CreateDefaultDisplayNodes()
    ok = ctx.logic("Segmentations").ImportLabelmapToSegmentationNode(labelmap, segmentation)
    scene.RemoveNode(labelmap)
    scene.RemoveNode(colors)  # segments now carry the names and colours: no orphan colour table per run
    if not ok:
        raise RuntimeError(f"Slicer could not import the label map '{name}' as a segmentation.")
    segmentation.CreateClosedSurfaceRepresentation()
    display = segmentation.GetDisplayNode()
    display.SetOpacity3D(opacity)
    display.SetOpacity2DFill(opacity)
    display.SetOpacity2DOutline(1.0)
    return segmentation


def add_explanation_to_scene(
    explanation: Any,
    scene: Any = None,
    input_node: Any = None,
    *,
    name: str | None = None,
    top_k: int | None = None,
    threshold: float | None = 0.8,
    heatmap_opacity: float = 0.6,
    heatmap_percentile: float | None = 99.5,
) -> dict[str, Any]:
    """Add ``explanation``'s results to the scene and show them; returns the nodes by role.

    Keys: "image" (``input_node`` when given, else a new node), "segmentation", "heatmap:<class>" per class,
    "volume_rendering" (display node of the first heatmap), "table", "chart", "metrics" (only when the explanation
    has quality metrics), "graph_points", "graph_edge:<i>"
    per drawn edge, and "graph" (the :class:`~.graph.RoIGraphNodes`, for :func:`~.graph.update_roi_graph`).
    The input node is never modified; every new data node carries the provenance attributes. The heatmap window
    is ±(``heatmap_percentile`` of the non-zero |values|), so a few extreme gradient voxels do not wash out the
    rest (None: ±max).
    """
    scene = scene or get_context().scene
    prov = dict(explanation.provenance or {})
    method = str(prov.get("method", "attribution"))
    prefix = name or f"XAI {method}"
    nodes: dict[str, Any] = {}

    def tag(node: Any, role: str, **extra: Any) -> Any:
        set_provenance(node, prov, result=role, **extra)
        return node

    image = input_node if input_node is not None else tag(add_volume_node(explanation.image, f"{prefix} image",
                                                                        scene=scene), "image")
    nodes["image"] = image
    nodes["segmentation"] = tag(add_segmentation_node(explanation.labels, explanation.label_names,
                                                      f"{prefix} segmentation", scene=scene), "segmentation")
    first = None
    for class_name in explanation.class_names:
        heat = explanation.attributions.get(class_name)
        if heat is None:
            continue
        node = tag(add_volume_node(heat, f"{prefix} {class_name}", scene=scene), "heatmap", attribution_of=class_name)
        nodes[f"heatmap:{class_name}"] = node
        limit = heatmap_window_limit(node, heatmap_percentile)  # stored on the node: the one window rule
        if first is None:
            first = node
            show_heatmap(node, image, opacity=heatmap_opacity, limit=limit)
            nodes["volume_rendering"] = add_heatmap_volume_rendering(node, limit=limit)
    if first is None:
        set_slice_layers(scene, image)
    nodes["table"] = tag(matrix_to_table(explanation.matrix, explanation.class_names, explanation.roi_names,
                                         f"{prefix} RoI importance", scene), "roi_importance_matrix")
    nodes["chart"] = tag(matrix_chart(explanation.matrix, explanation.class_names, explanation.roi_names,
                                      f"{prefix} RoI importance chart", scene), "roi_importance_chart")
    metrics = getattr(explanation, "metrics", None)
    if metrics:
        nodes["metrics"] = tag(metrics_to_table(metrics, f"{prefix} attribution quality", scene), "attribution_quality")
    importance = getattr(explanation, "importance", None)
    roi_ids = list(getattr(importance, "roi_ids", range(len(explanation.roi_names))))
    extra = {}
    if explanation.graph is not None:  # the library already placed classes that are not RoIs
        for node_name, attrs in explanation.graph.nodes(data=True):
            if all(k in attrs for k in ("x", "y", "z")):
                extra[str(node_name)] = (attrs["x"], attrs["y"], attrs["z"])
    graph_attrs = provenance_attributes(prov, result="roi_graph")
    graph = show_roi_graph(explanation.roi_labels, explanation.roi_names, explanation.matrix,
                           explanation.class_names, top_k, threshold, roi_ids=roi_ids, extra_positions=extra,
                           name=f"{prefix} RoI graph", scene=scene, attributes=graph_attrs)
    nodes["graph"] = graph
    nodes["graph_points"] = graph.points
    for i, line in enumerate(graph.lines):
        nodes[f"graph_edge:{i}"] = line
    return nodes
