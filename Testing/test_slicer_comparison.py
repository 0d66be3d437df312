"""The comparison layout: heatmaps side by side in linked slice views, on a headless slicer-core scene.

Two heatmaps that differ in where they are positive (left half / right half of the volume) must end up in
different views and show red on different sides of their panels; the layout node must hold the description and
arrangement the application's layout manager would display.
"""
from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core) is needed for bridge tests")

from XAIExplainerLib import slicer_bridge as sb  # noqa: E402
from XAIExplainerLib.errors import SceneInputError  # noqa: E402
from XAIExplainerLib.volume import Volume  # noqa: E402

SHAPE = (8, 32, 32)  # z, y, x


@pytest.fixture()
def nodes():
    sb.create_headless_scene()
    geometry = dict(spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=tuple(np.eye(3).ravel()))
    zz, yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1], 0:SHAPE[2]]
    image = sb.add_volume_node(Volume((200.0 + 20.0 * yy + 5.0 * xx).astype(np.float32), **geometry), "image")
    left = np.zeros(SHAPE, np.float32)
    left[:, :, : SHAPE[2] // 2] = 1.0
    right = np.zeros(SHAPE, np.float32)
    right[:, :, SHAPE[2] // 2:] = 1.0
    heat = [sb.add_volume_node(Volume(a, **geometry), name) for a, name in ((left, "left"), (right, "right"))]
    for h in heat:
        sb.show_heatmap(h, image)  # colour table + window; the comparison then gives each view its own foreground
    return image, heat


def test_layout_node_views_and_composites(nodes):
    image, heat = nodes
    layout = sb.comparison_layout(heat, image, labels=["Saliency", "SmoothGrad"], orientation="Coronal")
    scene = slicer.mrmlScene
    layout_node = scene.GetSingletonNode("vtkMRMLLayoutNode", "vtkMRMLLayoutNode")
    assert layout_node is layout.layout_node
    assert layout_node.IsLayoutDescription(layout.layout_id)
    assert layout_node.GetLayoutDescription(layout.layout_id) == layout.xml
    assert layout_node.GetViewArrangement() == layout.layout_id
    assert layout.xml.count('class="vtkMRMLSliceNode"') == 2

    assert len(layout.slice_node_ids) == len(layout.composite_nodes) == 2
    assert len(set(layout.slice_node_ids)) == 2
    for i, (slice_id, comp) in enumerate(zip(layout.slice_node_ids, layout.composite_nodes)):
        slice_node = scene.GetNodeByID(slice_id)
        assert slice_node.GetLayoutName() == comp.GetLayoutName() == f"XAICompare{i + 1}"
        assert slice_node.GetSingletonTag() == f"XAICompare{i + 1}"
        assert slicer.vtkMRMLSliceLogic.GetSliceCompositeNode(slice_node) is comp
        assert slice_node.GetOrientation() == "Coronal"
        assert slice_node.GetViewGroup() == sb.comparison.COMPARISON_VIEW_GROUP != 0  # linked apart from Red...
        assert comp.GetBackgroundVolumeID() == image.GetID()
        assert comp.GetForegroundVolumeID() == heat[i].GetID()
        assert comp.GetForegroundOpacity() == pytest.approx(0.6)
        assert comp.GetLinkedControl()

    # Rebuilding for three heatmaps in another orientation updates the same description and reuses views 1-2.
    again = sb.comparison_layout(heat + [heat[0]], image, orientation="Sagittal")
    assert again.layout_id == layout.layout_id
    assert layout_node.GetLayoutDescription(layout.layout_id).count('class="vtkMRMLSliceNode"') == 3
    assert again.slice_node_ids[:2] == layout.slice_node_ids
    assert again.labels == ["left", "right", "left"]
    assert [scene.GetNodeByID(i).GetOrientation() for i in again.slice_node_ids] == ["Sagittal"] * 3
    assert [c.GetForegroundVolumeID() for c in again.composite_nodes] == [heat[0].GetID(), heat[1].GetID(),
                                                                          heat[0].GetID()]
    assert scene.GetNumberOfNodesByClass("vtkMRMLLayoutNode") == 1


def test_bad_inputs_raise_scene_input_error(nodes):
    image, heat = nodes
    with pytest.raises(SceneInputError, match="at least one"):
        sb.comparison_layout([], image)
    with pytest.raises(SceneInputError, match="labels"):
        sb.comparison_layout(heat, image, labels=["only one"])
    with pytest.raises(SceneInputError, match="orientation"):
        sb.comparison_layout(heat, image, orientation="Oblique")
    with pytest.raises(SceneInputError, match="background"):
        sb.comparison_layout(heat, None)


def _reddish(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(int)
    return (rgb[..., 0] > rgb[..., 2] + 40) & (rgb[..., 0] > 60)


def test_rendered_panels_show_each_heatmap(nodes, tmp_path):
    ok, why = sb.offscreen_rendering_available()
    if not ok:
        pytest.skip(f"no offscreen OpenGL context: {why}")
    image, heat = nodes
    layout = sb.comparison_layout(heat, image, labels=["left", "right"], orientation="Axial")
    w, h, gap = 200, 200, 4
    rgb = sb.render_comparison(layout, size=(w, h), path=tmp_path / "compare.png")
    assert rgb.shape == (h, 2 * w + gap, 3)
    assert not rgb[:, w:w + gap].any()  # the gap between the panels is black
    assert (tmp_path / "compare.png").stat().st_size > 1000
    panels = [rgb[:, :w], rgb[:, w + gap:]]
    # Identity LPS direction: low x index = patient right, which an axial view shows on the screen's left.
    rows = slice(int(0.3 * h), int(0.7 * h))
    screen_left, screen_right = slice(int(0.1 * w), int(0.4 * w)), slice(int(0.6 * w), int(0.9 * w))
    (red1_left, red1_right), (red2_left, red2_right) = [
        (_reddish(p[rows, screen_left]).mean(), _reddish(p[rows, screen_right]).mean()) for p in panels]
    assert red1_left > 0.95 and red1_right < 0.01, (red1_left, red1_right)
    assert red2_right > 0.95 and red2_left < 0.01, (red2_left, red2_right)
    # Where the heatmap is zero the anatomy shows through (the image's gradient, not a flat fill).
    assert panels[0][rows, screen_right].std() > 5 and panels[1][rows, screen_left].std() > 5
    # Rendering does not disturb the layout's own views.
    assert [c.GetForegroundVolumeID() for c in layout.composite_nodes] == [heat[0].GetID(), heat[1].GetID()]
    assert all(slicer.mrmlScene.GetNodeByID(i) is not None for i in layout.slice_node_ids)
