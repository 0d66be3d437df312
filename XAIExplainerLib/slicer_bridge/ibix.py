"""IBIX in the scene: a painted segment out to the background process, output channels and maps back as nodes.

Why a module of its own: the IBIX section needs three scene operations the other products do not: one segment
exported as a 0/1 mask on the input's grid (whatever geometry it was painted on), the network's output channels
loaded as volumes (so the user can see them and paint M^f on them), and the maps loaded as heatmaps over the
volume they belong to (forward map: the output channel; backward map: the input).

Output volumes carry ``XAIExplainer.result = "ibix-output"`` and ``XAIExplainer.channel``; a segmentation whose
reference geometry is such a volume tells :func:`painted_channel` which channel M^f was painted on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import SceneInputError
from .scene import get_context
from .volumes import volume_from_node

__all__ = ["CHANNEL_ATTRIBUTE", "OUTPUT_RESULT", "MAP_RESULT", "export_segment_mask", "painted_channel",
           "load_output_nodes", "find_output_node", "load_map_nodes"]

RESULT_ATTRIBUTE = "XAIExplainer.result"
CHANNEL_ATTRIBUTE = "XAIExplainer.channel"
OUTPUT_RESULT = "ibix-output"
MAP_RESULT = "ibix-map"


def export_segment_mask(segmentation_node: Any, segment_id: str, reference_volume: Any, path: Path,
                        geometry_file: Path | None = None) -> int:
    """Write one segment as a 0/1 label map on ``reference_volume``'s grid; returns its voxel count.

    Slicer's export resamples the segment onto the reference geometry, so a segment painted on another grid
    (an output volume, a resampled copy) arrives on the input's voxels. ``geometry_file`` (the exported input,
    whose geometry has the volume's parent transform hardened) gives the written mask its geometry, so the two
    files share one grid. An unknown or empty segment, or one lying wholly outside the reference volume, is
    refused before anything runs.
    """
    import vtk

    from ..volume import write_volume

    if segmentation_node is None:
        raise SceneInputError("Select the segmentation holding the painted region (Segment Editor).")
    segment = segmentation_node.GetSegmentation().GetSegment(str(segment_id or ""))
    if segment is None:
        raise SceneInputError(f"The segmentation '{segmentation_node.GetName()}' has no segment '{segment_id}'; "
                              "pick a segment in the IBIX section.")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(str(segment_id))
    scene = get_context().scene
    tables_before = _color_tables(scene)
    label_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "XAIExplainer IBIX mask (temporary)")
    try:
        logic = get_context().logic("Segmentations")
        if not logic.ExportSegmentsToLabelmapNode(segmentation_node, ids, label_node, reference_volume):
            raise SceneInputError(f"Could not export the segment '{segment.GetName()}' onto the grid of "
                                  f"'{reference_volume.GetName()}'.")
        mask = volume_from_node(label_node) if label_node.GetImageData() is not None else None
    finally:
        scene.RemoveNode(label_node)
        for node_id in _color_tables(scene) - tables_before:  # made by the export ("<name>_ColorTable")
            scene.RemoveNode(scene.GetNodeByID(node_id))
    count = 0 if mask is None else int(np.count_nonzero(mask.array))
    if count == 0:
        raise SceneInputError(f"The segment '{segment.GetName()}' is empty on '{reference_volume.GetName()}' "
                              "(nothing painted, or painted outside it); paint it in the Segment Editor.")
    if geometry_file is not None:
        from ..volume import read_volume

        mask = read_volume(geometry_file).with_array(mask.array)
    write_volume(mask.with_array((mask.array != 0).astype(np.uint8)), path)
    return count


def _color_tables(scene: Any) -> set[str]:
    return {scene.GetNthNodeByClass(i, "vtkMRMLColorTableNode").GetID()
            for i in range(scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode"))
            if not scene.GetNthNodeByClass(i, "vtkMRMLColorTableNode").GetSingletonTag()}


def painted_channel(segmentation_node: Any) -> str | None:
    """The output channel a segmentation was painted on (its reference geometry is an IBIX output volume)."""
    reference = segmentation_node.GetNodeReference(
        segmentation_node.GetReferenceImageGeometryReferenceRole()) if segmentation_node is not None else None
    if reference is None or reference.GetAttribute(RESULT_ATTRIBUTE) != OUTPUT_RESULT:
        return None
    return reference.GetAttribute(CHANNEL_ATTRIBUTE)


def load_output_nodes(channels: Mapping[str, str], input_node: Any, model: str) -> dict[str, Any]:
    """The network's output channels (files from ``xai-explainer ibix-output``) as grey volumes; channel → node."""
    from ..volume import read_volume
    from .module_io import run_folder
    from .volumes import add_volume_node

    nodes = {}
    for name, path in channels.items():
        node = add_volume_node(read_volume(path), f"{input_node.GetName()} output {name}",
                               attributes={RESULT_ATTRIBUTE: OUTPUT_RESULT, CHANNEL_ATTRIBUTE: name,
                                           "XAIExplainer.model": model})
        node.GetDisplayNode().AutoWindowLevelOn()
        nodes[name] = node
    run_folder(list(nodes.values()), "IBIX output")
    return nodes


def find_output_node(input_node: Any, channel: str | None) -> Any:
    """The newest IBIX output volume of ``channel`` made from ``input_node`` (None when not run yet)."""
    scene = get_context().scene
    prefix = f"{input_node.GetName()} output "
    found = None
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
        if node.GetAttribute(RESULT_ATTRIBUTE) == OUTPUT_RESULT and node.GetName().startswith(prefix) and \
                (channel is None or node.GetAttribute(CHANNEL_ATTRIBUTE) == channel):
            found = node
    return found


def load_map_nodes(record: Mapping[str, Any], input_node: Any, work_dir: Path, label: str) -> dict[str, Any]:
    """IBIX maps (the CLI's result record) as heatmap volumes over the right background; map name → node.

    Forward maps (one per output channel, on the output grid) are shown over that channel's output volume when it
    is in the scene, else over the input; the backward map (on the input grid) over the input. Provenance is
    attached to every node, with paths into the deleted work folder replaced by the input node's name.
    """
    import json

    from ..volume import read_volume
    from .heatmaps import show_heatmap
    from .module_io import detach_provenance, run_folder
    from .provenance import set_provenance
    from .volumes import add_volume_node

    provenance = json.loads((Path(record["folder"]) / "provenance.json").read_text())
    provenance = detach_provenance(provenance, work_dir, f"mrml:{input_node.GetName()}")
    nodes, backgrounds = {}, {}
    for name, path in record["maps"].items():
        node = add_volume_node(read_volume(path), f"{input_node.GetName()} IBIX {name} ({label})",
                               attributes={RESULT_ATTRIBUTE: MAP_RESULT})
        set_provenance(node, provenance, result=MAP_RESULT)
        channel = name[len("forward_"):] if name.startswith("forward_") else None
        backgrounds[name] = (find_output_node(input_node, channel) if channel else None) or input_node
        nodes[name] = node
    for name in reversed(list(nodes)):  # every map styled; the first one ends up shown
        show_heatmap(nodes[name], backgrounds[name])
        nodes[name].SetNodeReferenceID("XAIExplainer.background", backgrounds[name].GetID())
    run_folder(list(nodes.values()), f"IBIX {label}")
    return nodes
