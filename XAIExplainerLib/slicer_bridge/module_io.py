"""What the Slicer module sends to and reads back from its background process, as MRML operations.

The module holds only the widget, the parameter node and calls; everything that touches nodes for a job lives
here so it is tested headlessly with slicer-core: exporting the input (parent transforms hardened into the
exported geometry, non-linear ones refused), exporting RoI segments without leaving a colour table behind,
turning the CLI's result JSON into a segmentation or explanation nodes, and filing every run's nodes in one
Subject Hierarchy folder named after the method and the time.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..background import BackgroundJob  # re-exported: the module reaches the core only through the bridge
from ..errors import SceneInputError
from .scene import get_context
from .volumes import LPS_TO_RAS, volume_from_node

__all__ = ["BackgroundJob", "compute_devices", "load_demo_volume", "DEMO_MODEL", "DEMO_T1", "export_input_volume", "export_roi_segmentation", "labels_to_segmentation", "load_explanation_nodes",
           "run_folder", "world_ijk_to_ras", "detach_provenance"]


def world_ijk_to_ras(node: Any) -> tuple[np.ndarray, bool]:
    """The node's IJK->RAS matrix in world coordinates (parent transforms applied) and whether one was applied.

    Raises :class:`SceneInputError` for a non-linear (warping) parent transform: it cannot be written as a
    volume geometry, and resampling the user's image silently would change what is explained.
    """
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    import slicer.util as su

    ijk_to_ras = vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    matrix = su.arrayFromVTKMatrix(ijk_to_ras)
    transform = node.GetParentTransformNode()
    if transform is None:
        return matrix, False
    if not transform.IsTransformToWorldLinear():
        raise SceneInputError(
            f"'{node.GetName()}' is under the non-linear transform '{transform.GetName()}'. Harden it first "
            "(Data module: right-click the volume > Harden transform) so the network sees the warped image.")
    to_world = vtkMatrix4x4()
    transform.GetMatrixTransformToWorld(to_world)
    return su.arrayFromVTKMatrix(to_world) @ matrix, True


def export_input_volume(node: Any, path: Path) -> tuple[Path, bool]:
    """Write the node's voxels in world geometry to ``path``; returns (path, whether a transform was hardened).

    The node itself is never modified: a linear parent transform is applied to the exported geometry only, so
    results (created without a parent transform) overlay the input where the user sees it.
    """
    from ..volume import write_volume

    volume = volume_from_node(node)
    matrix, hardened = world_ijk_to_ras(node)
    if hardened:
        ijk_to_lps = LPS_TO_RAS @ matrix
        spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
        volume = type(volume)(array=volume.array, spacing=tuple(spacing), origin=tuple(ijk_to_lps[:3, 3]),
                              direction=tuple((ijk_to_lps[:3, :3] / spacing).ravel()),
                              metadata={**volume.metadata, "hardened_transform": node.GetParentTransformNode().GetName()})
    return Path(write_volume(volume, path)), hardened


def export_roi_segmentation(segmentation_node: Any, reference_volume: Any, labels_path: Path,
                            names_path: Path) -> list[str]:
    """Segments as a label map on the reference grid (label v = v-th segment) plus a CSV of names.

    The temporary label map and the colour table Slicer creates for it are both removed (no scene clutter); a
    colour table the segmentation already uses is referenced by it and therefore kept.
    """
    import vtk

    from ..volume import write_volume

    scene = get_context().scene
    ids = vtk.vtkStringArray()
    segmentation_node.GetSegmentation().GetSegmentIDs(ids)
    if ids.GetNumberOfValues() == 0:
        raise SceneInputError(f"The RoI segmentation '{segmentation_node.GetName()}' has no segments.")
    tables_before = _color_table_ids(scene)
    label_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "XAIExplainer RoIs (temporary)")
    try:
        if not get_context().logic("Segmentations").ExportSegmentsToLabelmapNode(segmentation_node, ids, label_node,
                                                                                  reference_volume):
            raise SceneInputError(f"Could not export '{segmentation_node.GetName()}' to a label map on the input's grid.")
        write_volume(volume_from_node(label_node), labels_path)
    finally:
        scene.RemoveNode(label_node)
        for node_id in _color_table_ids(scene) - tables_before:  # made for the export ("<name>_ColorTable")
            table = scene.GetNodeByID(node_id)
            if _unreferenced(scene, table):
                scene.RemoveNode(table)
    segmentation = segmentation_node.GetSegmentation()
    names = [segmentation.GetSegment(ids.GetValue(i)).GetName() for i in range(ids.GetNumberOfValues())]
    with open(names_path, "w", newline="") as f:
        csv.writer(f).writerows([i + 1, name] for i, name in enumerate(names))
    return names


def _color_table_ids(scene: Any) -> set[str]:
    return {scene.GetNthNodeByClass(i, "vtkMRMLColorTableNode").GetID()
            for i in range(scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode"))}


def _unreferenced(scene: Any, node: Any) -> bool:
    """Whether no node of the scene references ``node`` (singletons, e.g. default colour tables, never are)."""
    if node is None or node.GetScene() is None or node.GetSingletonTag():
        return False
    for i in range(scene.GetNumberOfNodes()):
        other = scene.GetNthNode(i)
        for r in range(other.GetNumberOfNodeReferenceRoles()):
            role = other.GetNthNodeReferenceRole(r)
            if any(other.GetNthNodeReferenceID(role, k) == node.GetID()
                   for k in range(other.GetNumberOfNodeReferences(role))):
                return False
    return True


def labels_to_segmentation(labels: Any, label_names: Sequence[str], reference_volume: Any,
                           segmentation_node: Any = None, attributes: Mapping[str, str] | None = None) -> Any:
    """A label volume as a segmentation named by ``label_names`` (every class, even tiny ones, by its name).

    ``segmentation_node`` (the user's choice) is emptied and reused; otherwise a new node is returned.
    """
    from .explanation import add_segmentation_node

    scene = get_context().scene
    new = add_segmentation_node(labels, list(label_names), f"{reference_volume.GetName()} segmentation", scene=scene)
    new.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    target = new if segmentation_node is None else segmentation_node
    if segmentation_node is not None:  # keep the user's node, its name and display settings
        segmentation_node.GetSegmentation().RemoveAllSegments()
        segmentation_node.GetSegmentation().DeepCopy(new.GetSegmentation())
        scene.RemoveNode(new)
        segmentation_node.CreateDefaultDisplayNodes()
    for key, value in (attributes or {}).items():
        target.SetAttribute(key, str(value))
    return target


def run_folder(nodes: Sequence[Any], label: str, when: float | None = None) -> int:
    """Put ``nodes`` in one new Subject Hierarchy folder "<label> <HH:MM:SS>"; returns the folder's item id."""
    import slicer

    scene = get_context().scene
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() if when is None else when))
    folder = sh.CreateFolderItem(sh.GetSceneItemID(), f"XAI {label} {stamp}")
    for node in nodes:
        item = sh.GetItemByDataNode(node)
        if item:
            sh.SetItemParent(item, folder)
        else:  # Slicer's GUI adds items for new nodes; a headless scene has none yet
            sh.CreateItem(folder, node)
    return folder


def detach_provenance(record: Any, work_dir: Path, replacement: str) -> Any:
    """``record`` with every string that points into the temporary ``work_dir`` replaced by ``replacement``.

    The work folder is deleted after loading, so a path into it would be a dangling promise in a saved scene.
    """
    root = str(Path(work_dir))
    if isinstance(record, dict):
        return {k: detach_provenance(v, work_dir, replacement) for k, v in record.items()}
    if isinstance(record, (list, tuple)):
        return [detach_provenance(v, work_dir, replacement) for v in record]
    if isinstance(record, str) and root in record:
        return replacement
    return record


def load_explanation_nodes(folder: Path, input_node: Any, input_file: Path, method_label: str,
                           top_k: int | None = None, threshold: float | None = 0.8) -> dict[str, Any]:
    """Nodes for a folder written by ``xai-explainer explain``, filed in one Subject Hierarchy folder per run.

    Heatmaps keep a node reference to the run's RoI graph, so the graph slider works after a scene reload.
    Provenance paths into the temporary folders become "mrml:<input node name>" (the folders are deleted).
    """
    from ..pipelines.agg2exp_io import load_explanation
    from ..volume import read_volume
    from .explanation import add_explanation_to_scene

    explanation = load_explanation(folder, image=read_volume(input_file))
    explanation.provenance = detach_provenance(explanation.provenance, Path(input_file).parent,
                                               f"mrml:{input_node.GetName()}")
    nodes = add_explanation_to_scene(explanation, input_node=input_node,
                                     name=f"{input_node.GetName()} {method_label}", top_k=top_k, threshold=threshold)
    graph = nodes.get("graph")
    if graph is not None and "chart" in nodes:
        graph.points.SetNodeReferenceID("XAIExplainer.chart", nodes["chart"].GetID())
    for key, node in nodes.items():
        if key.startswith("heatmap:") and graph is not None:
            node.SetNodeReferenceID("XAIExplainer.graph", graph.points.GetID())
    own = [n for k, n in nodes.items() if k not in ("image", "graph", "volume_rendering")]
    nodes["folder_item"] = run_folder(own, method_label)
    return nodes


def compute_devices() -> list[tuple[str, str]]:
    """(device, label) pairs for the Device menu: the CUDA GPUs present (with names), MPS on a Mac, the CPU.

    torch is imported only when it is installed (the PyTorch extension); before that only "auto" and "cpu" are
    offered. "auto" picks the first GPU, else the CPU.
    """
    import importlib.util

    devices = [("auto", "Automatic (first GPU, else CPU)")]
    if importlib.util.find_spec("torch") is not None:
        import torch

        for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
            devices.append((f"cuda:{i}", f"GPU {i}: {torch.cuda.get_device_name(i)}"))
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            devices.append(("mps", "Apple GPU (MPS)"))
    devices.append(("cpu", "CPU"))
    return devices


#: The demo that "Load demo" offers: a 3 mm Colin27 T1 (BSD-3, see DemoData/NOTICE.txt) and the demo model.
_RESOURCES = Path(__file__).resolve().parents[1] / "Resources"
DEMO_T1 = _RESOURCES / "DemoData" / "Colin27_T1_3mm.nii.gz"
DEMO_MODEL = _RESOURCES / "DemoModel" / "swin_unetr_brain.pt"
DEMO_NODE_NAME = "Colin27 T1 (XAIExplainer demo)"


def load_demo_volume(name: str = DEMO_NODE_NAME) -> Any:
    """The demo T1 as a scalar volume node (reused when a node of that name is already in the scene)."""
    from ..volume import read_volume
    from .volumes import add_volume_node

    scene = get_context().scene
    existing = scene.GetFirstNodeByName(name)
    if existing is not None and existing.IsA("vtkMRMLScalarVolumeNode"):
        return existing
    return add_volume_node(read_volume(DEMO_T1), name, scene=scene)
