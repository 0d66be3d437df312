"""Volume <-> MRML volume node, the bridge's one place where LPS (SimpleITK, files) meets RAS (Slicer).

A :class:`~XAIExplainerLib.volume.Volume` keeps SimpleITK's LPS geometry; a MRML volume node keeps an IJK->RAS
matrix. Both describe the same voxels: ``ijk_to_ras = diag(-1, -1, 1, 1) @ ijk_to_lps``. The voxel array is
(z, y, x) on both sides, so no axis is permuted, only the world frame flips.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import slicer.util as su

from ..errors import InvalidVolumeError
from ..volume import Volume
from .scene import get_context

__all__ = ["LPS_TO_RAS", "add_volume_node", "node_ijk_to_ras", "volume_from_node", "update_volume_node"]

#: Flips the first two world axes; its own inverse.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _mrml_array(array: np.ndarray) -> np.ndarray:
    """MRML image data has no bool type and VTK wants C order; copy so the caller's array is never aliased."""
    if array.dtype == bool:
        return np.ascontiguousarray(array, dtype=np.uint8)
    if array.dtype in (np.int64, np.uint64):  # VTK renders "long long" volumes wrongly; labels fit in 32 bits
        return np.ascontiguousarray(array, dtype=np.int32)
    if array.dtype == np.float16:
        return np.ascontiguousarray(array, dtype=np.float32)
    return np.array(array, copy=True, order="C")


def add_volume_node(
    volume: Volume,
    name: str,
    labelmap: bool = False,
    scene: Any = None,
    attributes: dict[str, str] | None = None,
) -> Any:
    """Add ``volume`` to the scene as a scalar (or label map) volume node in the same physical place.

    The node gets a copy of the voxels (editing the node never changes ``volume``) and its default display node;
    a label map shows with Slicer's default label colours.
    """
    ctx = get_context()
    scene = scene or ctx.scene
    class_name = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    array = volume.array
    if labelmap and not np.issubdtype(array.dtype, np.integer) and array.dtype != bool:
        if not np.array_equal(array, np.round(array)):
            raise InvalidVolumeError(
                f"A label map must hold integer labels; '{name}' has non-integer values (dtype {array.dtype}). "
                "Round or threshold it first."
            )
        array = array.astype(np.int32)
    node = scene.AddNewNodeByClass(class_name, name)
    update_volume_node(node, volume.with_array(array) if array is not volume.array else volume)
    node.CreateDefaultDisplayNodes()
    if labelmap:
        color_id = ctx.app_logic.GetColorLogic().GetDefaultLabelMapColorNodeID() if ctx.headless else None
        if color_id:
            node.GetDisplayNode().SetAndObserveColorNodeID(color_id)
    for key, value in (attributes or {}).items():
        node.SetAttribute(str(key), str(value))
    return node


def update_volume_node(node: Any, volume: Volume) -> Any:
    """Replace a volume node's voxels and geometry with ``volume``'s (used to refresh results in place)."""
    su.updateVolumeFromArray(node, _mrml_array(volume.array))
    node.SetIJKToRASMatrix(su.vtkMatrixFromArray(volume.ijk_to_ras()))
    node.Modified()
    return node


def node_ijk_to_ras(node: Any) -> np.ndarray:
    """The node's 4x4 IJK->RAS matrix as numpy (ignores parent transforms, like a saved file does)."""
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    m = vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return su.arrayFromVTKMatrix(m)


def volume_from_node(node: Any, metadata: dict[str, Any] | None = None) -> Volume:
    """Copy a volume node into a :class:`Volume` (LPS geometry), leaving the node untouched."""
    if node is None or node.GetImageData() is None:
        raise InvalidVolumeError("The volume node has no image data; load or compute a volume first.")
    if node.GetImageData().GetNumberOfScalarComponents() != 1:
        raise InvalidVolumeError(
            f"'{node.GetName()}' has {node.GetImageData().GetNumberOfScalarComponents()} components per voxel; "
            "XAIExplainer needs a scalar volume."
        )
    ijk_to_lps = LPS_TO_RAS @ node_ijk_to_ras(node)
    linear = ijk_to_lps[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    direction = linear / spacing
    return Volume(
        array=np.array(su.arrayFromVolume(node), copy=True),
        spacing=tuple(spacing),
        origin=tuple(ijk_to_lps[:3, 3]),
        direction=tuple(direction.ravel()),
        metadata={"source": f"mrml:{node.GetID()}", **(metadata or {})},
    )
