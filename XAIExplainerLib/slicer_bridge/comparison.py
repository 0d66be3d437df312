"""Several heatmaps side by side in linked slice views: the thesis' qualitative-analysis layout inside Slicer.

Comparing methods (or target classes) by eye needs the same anatomy, slice and zoom in every panel, with only the
overlay changing. Slicer does this with a custom layout (an XML description registered on the layout node, one
``vtkMRMLSliceNode`` view per heatmap) and *linked* slice composite nodes, so scrolling or zooming one view moves
them all. In the application the layout logic builds the views from the description and the layout manager shows
them; headless (slicer-core) a ``vtkMRMLLayoutLogic`` of our own creates the same slice nodes, so the scene looks
the same in both places and :func:`render_comparison` can picture it offscreen.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import slicer

from ..errors import SceneInputError
from .heatmaps import COMPARISON_VIEW_PREFIX
from .render import OffscreenSliceView, save_png, tile_images
from .scene import get_context, in_slicer_application

__all__ = ["COMPARISON_LAYOUT_ID", "COMPARISON_VIEWS", "COMPARISON_VIEW_GROUP", "ComparisonLayout", "HeatmapEntry",
           "comparison_layout", "comparison_layout_xml", "comparison_selection", "heatmap_entries",
           "render_comparison", "show_comparison_view"]

#: Layout id of the comparison arrangement (custom layouts use ids outside Slicer's built-in enum, < 100).
COMPARISON_LAYOUT_ID = 5170
ORIENTATIONS = ("Axial", "Sagittal", "Coronal")
#: Layout names (= singleton tags) of the views: "XAICompare1".."XAICompareN", distinct from Slicer's own
#: "Compare1".. views of its built-in compare layouts, which would otherwise be re-purposed.
VIEW_PREFIX = COMPARISON_VIEW_PREFIX
#: View group of the comparison views: linked changes and crosshair jumps stay among them (Red/Yellow/Green are 0).
COMPARISON_VIEW_GROUP = 7


@dataclass
class ComparisonLayout:
    """What :func:`comparison_layout` built: one slice view per heatmap, left to right."""

    layout_id: int
    layout_node: Any
    slice_node_ids: list[str]
    composite_nodes: list[Any]
    heatmap_nodes: list[Any]
    background_node: Any
    labels: list[str]
    orientation: str
    xml: str
    _layout_logic: Any = field(default=None, repr=False)  # the headless layout logic must outlive the call

    @property
    def layout_names(self) -> list[str]:
        return [f"{VIEW_PREFIX}{i + 1}" for i in range(len(self.slice_node_ids))]


def comparison_layout_xml(labels: Sequence[str], orientation: str = "Axial") -> str:
    """Slicer layout description: one slice view per label in a row (see the script repository's
    "Customize view layout"); each view's bar shows the panel number, the labels are captions."""
    items = "".join(
        f'<item><view class="vtkMRMLSliceNode" singletontag="{VIEW_PREFIX}{i + 1}">'
        f'<property name="orientation" action="default">{orientation}</property>'
        f'<property name="viewlabel" action="default">{i + 1}</property>'
        f'<property name="viewcolor" action="default">#E0C040</property>'
        f'<property name="viewgroup" action="default">{COMPARISON_VIEW_GROUP}</property>'
        f"</view></item>"
        for i in range(len(labels))
    )
    return f'<layout type="horizontal" split="true">{items}</layout>'


def _layout_logic(ctx: Any) -> Any:
    """Slicer's own layout logic in the application; headless, one kept on the context for its scene."""
    if in_slicer_application():
        return slicer.app.layoutManager().layoutLogic()
    logic = ctx.logics.get("Layout")
    if logic is None or logic.GetMRMLScene() is not ctx.scene:
        logic = slicer.vtkMRMLLayoutLogic()
        logic.SetMRMLApplicationLogic(ctx.app_logic)
        logic.SetMRMLScene(ctx.scene)  # creates the singleton vtkMRMLLayoutNode when the scene has none
        ctx.logics["Layout"] = logic
    return logic


def _composite_node(scene: Any, slice_node: Any) -> Any:
    """The view's slice composite node; the application's slice widgets make one, headless we add it."""
    composite = slicer.vtkMRMLSliceLogic.GetSliceCompositeNode(slice_node)
    if composite is None:
        composite = slicer.vtkMRMLSliceCompositeNode()
        composite.SetLayoutName(slice_node.GetLayoutName())  # also its singleton tag
        composite = scene.AddNode(composite)
    return composite


def _check(heatmap_nodes: Sequence[Any], background_node: Any, labels: Sequence[str] | None,
           orientation: str) -> list[str]:
    if not heatmap_nodes:
        raise SceneInputError("comparison_layout needs at least one heatmap node to show.")
    for n, node in enumerate(heatmap_nodes):
        if node is None or not node.IsA("vtkMRMLScalarVolumeNode") or node.GetScene() is None:
            raise SceneInputError(f"Heatmap {n + 1} is not a scalar volume node in the scene: {node!r}.")
    if background_node is None or not background_node.IsA("vtkMRMLVolumeNode") or background_node.GetScene() is None:
        raise SceneInputError("The background must be a volume node in the scene (the image the heatmaps explain).")
    if orientation not in ORIENTATIONS:
        raise SceneInputError(f"Unknown orientation {orientation!r}; use one of {ORIENTATIONS}.")
    labels = [node.GetName() for node in heatmap_nodes] if labels is None else [str(x) for x in labels]
    if len(labels) != len(heatmap_nodes):
        raise SceneInputError(f"{len(labels)} labels given for {len(heatmap_nodes)} heatmaps; give one per heatmap.")
    return labels


def comparison_layout(
    heatmap_nodes: list,
    background_node: Any,
    labels: list[str] | None = None,
    orientation: str = "Axial",
    scene: Any = None,
    opacity: float = 0.6,
) -> ComparisonLayout:
    """Show each heatmap over ``background_node`` in its own slice view, all in a row and linked.

    Registers (or updates) the layout description :data:`COMPARISON_LAYOUT_ID`, switches the layout node to it,
    and sets every view's composite node: background = the image, foreground = heatmap i at ``opacity``,
    linked control on (scroll / zoom / pan follow each other, within the views' own view group). Heatmaps keep
    their own display (colour table, window), so style them with :func:`show_heatmap` first; calling it again
    afterwards puts that one heatmap in every view, this layout's included. ``labels`` default to the node names.
    """
    labels = _check(heatmap_nodes, background_node, labels, orientation)
    ctx = get_context()
    scene = scene or ctx.scene
    if scene is not ctx.scene:
        raise SceneInputError("comparison_layout works on the current scene (slicer.mrmlScene); pass scene=None.")
    logic = _layout_logic(ctx)
    layout_node = logic.GetLayoutNode()
    if layout_node is None:
        raise SceneInputError("The scene has no layout node and the layout logic did not create one.")
    xml = comparison_layout_xml(labels, orientation)
    if layout_node.IsLayoutDescription(COMPARISON_LAYOUT_ID):
        layout_node.SetLayoutDescription(COMPARISON_LAYOUT_ID, xml)
    else:
        layout_node.AddLayoutDescription(COMPARISON_LAYOUT_ID, xml)
    if layout_node.GetViewArrangement() == COMPARISON_LAYOUT_ID:
        layout_node.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutNone)  # re-read a changed description
    layout_node.SetViewArrangement(COMPARISON_LAYOUT_ID)  # the layout logic creates the missing slice nodes

    slice_ids, composites = [], []
    for i, heatmap in enumerate(heatmap_nodes):
        name = f"{VIEW_PREFIX}{i + 1}"
        slice_node = scene.GetSingletonNode(name, "vtkMRMLSliceNode")
        if slice_node is None:  # a layout logic always makes it; this guards a future change there
            slice_node = slicer.vtkMRMLSliceNode()
            slice_node.SetLayoutName(name)
            slice_node = scene.AddNode(slice_node)
        slice_node.SetOrientation(orientation)  # "default" XML properties only apply to new nodes
        slice_node.SetViewGroup(COMPARISON_VIEW_GROUP)
        composite = _composite_node(scene, slice_node)
        composite.SetBackgroundVolumeID(background_node.GetID())
        composite.SetForegroundVolumeID(heatmap.GetID())
        composite.SetForegroundOpacity(float(opacity))
        composite.SetLinkedControl(True)
        slice_ids.append(slice_node.GetID())
        composites.append(composite)
    if in_slicer_application():
        for i in range(len(heatmap_nodes)):  # show every view's extent of the image, then keep them linked
            widget = slicer.app.layoutManager().sliceWidget(f"{VIEW_PREFIX}{i + 1}")
            if widget is not None:
                widget.sliceLogic().FitSliceToBackground()
    return ComparisonLayout(
        layout_id=COMPARISON_LAYOUT_ID, layout_node=layout_node, slice_node_ids=slice_ids,
        composite_nodes=composites, heatmap_nodes=list(heatmap_nodes), background_node=background_node,
        labels=labels, orientation=orientation, xml=xml, _layout_logic=logic if not in_slicer_application() else None,
    )


def render_comparison(
    layout: ComparisonLayout,
    size: Sequence[int] = (300, 300),
    path: str | os.PathLike[str] | None = None,
    offset: float | None = None,
    gap: int = 4,
) -> np.ndarray:
    """Picture the comparison offscreen: each view's layers, fitted to the background, tiled left to right.

    Every panel is rendered at the same slice ``offset`` (mm along the normal; None = the background's centre)
    and field of view, as the linked views show them, with its label as caption. Returns (H, W, 3) uint8
    and writes a PNG when ``path`` is given.
    """
    scene = get_context().scene
    panels = []
    for n, (slice_id, composite, label) in enumerate(zip(layout.slice_node_ids, layout.composite_nodes,
                                                         layout.labels)):
        slice_node = scene.GetNodeByID(slice_id)
        if slice_node is None or composite.GetScene() is not scene:
            raise SceneInputError(f"View {n + 1} of the comparison layout is no longer in the scene; rebuild it.")
        background = scene.GetNodeByID(composite.GetBackgroundVolumeID() or "")
        foreground = scene.GetNodeByID(composite.GetForegroundVolumeID() or "")
        # A throw-away view with the same layers: rendering through the layout's own nodes would attach a second
        # slice logic to them (the application's widgets already own them).
        view = OffscreenSliceView(orientation=slice_node.GetOrientation(), size=size)
        try:
            view.set_layers(background, foreground, composite.GetForegroundOpacity())
            panels.append(view.fit(offset).set_caption(label).render())
        finally:
            view.close()
    rgb = tile_images(panels, columns=len(panels), gap=gap)
    if path is not None:
        save_png(rgb, path)
    return rgb


#: The thesis' three comparison pages (and the report's): one heatmap; one run's targets side by side; one target's
#: heatmaps of different methods side by side.
COMPARISON_VIEWS = ("single_target", "multiple_targets", "multiple_methods")


@dataclass(frozen=True)
class HeatmapEntry:
    """A heatmap node with what it explains, read from the attributes the loaders set (saved with the scene)."""

    node: Any
    method: str
    target: str
    run: int  # Subject Hierarchy folder of the run that made it (every loader files one run per folder)


def heatmap_entries(heatmap_nodes: Sequence[Any] | None = None, background_node: Any = None) -> list[HeatmapEntry]:
    """The heatmaps (given, else every node tagged ``XAIExplainer.result = heatmap``) in the order they were added.

    With ``background_node``, heatmaps that reference another input volume (``XAIExplainer.input``) are left out.
    """
    scene = get_context().scene
    if heatmap_nodes is None:
        heatmap_nodes = [scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
                         for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))]
        heatmap_nodes = [n for n in heatmap_nodes if n.GetAttribute("XAIExplainer.result") == "heatmap"]
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    entries = []
    for node in heatmap_nodes:
        source = node.GetNodeReference("XAIExplainer.input")
        if background_node is not None and source is not None and source.GetID() != background_node.GetID():
            continue
        item = sh.GetItemByDataNode(node) if sh is not None else 0
        entries.append(HeatmapEntry(node, node.GetAttribute("XAIExplainer.method") or "unknown",
                                    node.GetAttribute("XAIExplainer.attribution_of") or node.GetName(),
                                    sh.GetItemParent(item) if item else 0))
    return entries


def _method_label(name: str) -> str:
    from ..errors import UnknownMethodError
    from .methods import method_spec

    try:
        return method_spec(name).label
    except UnknownMethodError:
        return name


def comparison_selection(view: str, entries: Sequence[HeatmapEntry], method: str | None = None,
                         target: str | None = None) -> tuple[list[Any], list[str]]:
    """(heatmap nodes, panel labels) of one comparison view; the latest run wins where several qualify.

    single_target: the heatmap of ``method`` for ``target``. multiple_targets: every target of the latest run of
    ``method``, in the run's order. multiple_methods: for each method, its latest heatmap of ``target``, in the
    order the methods were first run. ``method``/``target`` default to those of the latest heatmap.
    """
    if view not in COMPARISON_VIEWS:
        raise SceneInputError(f"Unknown comparison view {view!r}; use one of {', '.join(COMPARISON_VIEWS)}.")
    if not entries:
        raise SceneInputError("No heatmaps of this input to compare: run an explanation first.")
    method = method or entries[-1].method
    target = target or next((e.target for e in reversed(entries) if e.method == method), entries[-1].target)
    if view == "multiple_methods":
        latest: dict[str, HeatmapEntry] = {}
        for entry in entries:
            if entry.target == target:
                latest[entry.method] = entry  # a dict keeps the first run's position, the last run's node
        chosen = list(latest.values())
        labels = [_method_label(e.method) for e in chosen]
    else:
        runs = [e for e in entries if e.method == method]
        if view == "single_target":
            runs = [e for e in runs if e.target == target]
        if not runs:
            raise SceneInputError(f"No heatmap of method '{method}'" + (f" for target '{target}'" if view ==
                                  "single_target" else "") + "; run it first or pick another.")
        chosen = [e for e in runs if e.run == runs[-1].run] if view == "multiple_targets" else runs[-1:]
        labels = [e.target if view == "multiple_targets" else f"{_method_label(e.method)}: {e.target}"
                  for e in chosen]
    if not chosen:
        raise SceneInputError(f"No heatmap for target '{target}'; run a method for it first or pick another target.")
    return [e.node for e in chosen], labels


def show_comparison_view(view: str, background_node: Any, heatmap_nodes: Sequence[Any] | None = None,
                         method: str | None = None, target: str | None = None,
                         orientation: str = "Axial") -> ComparisonLayout:
    """Show one of :data:`COMPARISON_VIEWS` for ``background_node``'s heatmaps with :func:`comparison_layout`."""
    entries = heatmap_entries(heatmap_nodes, background_node)
    nodes, labels = comparison_selection(view, entries, method, target)
    return comparison_layout(nodes, background_node, labels=labels, orientation=orientation)
