"""The Slicer bridge on a headless slicer-core scene: geometry, colours, table, graph markups, offscreen renders.

The volume has a rotated direction, an odd origin and anisotropic spacing, so an LPS/RAS or axis-order mistake
moves things and fails the checks. Renders are checked pixel by pixel against where the heatmap's voxels are.
"""
from __future__ import annotations

import contextlib
import types

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core) is needed for bridge tests")
import slicer.util as su  # noqa: E402
from scipy import ndimage  # noqa: E402

from XAIExplainerLib.pipelines.roi_graph import select_edges  # noqa: E402
from XAIExplainerLib.volume import Volume, read_volume, write_volume  # noqa: E402
from XAIExplainerLib import slicer_bridge as sb  # noqa: E402

SHAPE = (20, 32, 32)  # z, y, x
ANGLE = np.deg2rad(30.0)
DIRECTION = (np.cos(ANGLE), -np.sin(ANGLE), 0.0, np.sin(ANGLE), np.cos(ANGLE), 0.0, 0.0, 0.0, 1.0)
ROI_NAMES = ["background", "left box", "right box", "slab"]
CLASS_NAMES = ["left box", "right box"]
MATRIX = np.array([[0.05, 0.60, 0.25, 0.10], [0.02, 0.08, 0.70, 0.20]])


def _volumes() -> dict[str, Volume]:
    rng = np.random.default_rng(0)
    geometry = dict(spacing=(1.5, 1.2, 2.0), origin=(12.0, -7.0, 3.5), direction=DIRECTION)
    image = ndimage.gaussian_filter(rng.normal(size=SHAPE), 1.5).astype(np.float32)
    image = (image - image.min()) / (image.max() - image.min()) * 1000.0
    labels = np.zeros(SHAPE, np.uint8)
    labels[6:14, 8:24, 3:13] = 1
    labels[6:14, 8:24, 19:29] = 2
    labels[15:19, 4:28, 4:28] = 3
    heat = np.zeros(SHAPE, np.float32)
    heat[labels == 1] = 2.0
    heat[labels == 2] = -1.5
    return {"image": Volume(image, **geometry), "labels": Volume(labels, **geometry),
            "heat": Volume(heat, **geometry)}


@pytest.fixture(scope="module")
def scene_data():
    ctx = sb.create_headless_scene()
    vols = _volumes()
    image_node = sb.add_volume_node(vols["image"], "image")
    heat_node = sb.add_volume_node(vols["heat"], "heat")
    display = sb.show_heatmap(heat_node, image_node, opacity=0.6)
    vr = sb.add_heatmap_volume_rendering(heat_node)
    return types.SimpleNamespace(ctx=ctx, vols=vols, image=image_node, heat=heat_node, display=display, vr=vr)


def test_volume_node_geometry_equals_nifti(scene_data, tmp_path):
    path = write_volume(scene_data.vols["image"], tmp_path / "image.nii.gz")
    nifti = read_volume(path)
    node = sb.add_volume_node(nifti, "from nifti")
    matrix = sb.node_ijk_to_ras(node)
    np.testing.assert_allclose(matrix, nifti.ijk_to_ras(), atol=1e-4)
    # independent of Volume.ijk_to_ras: SimpleITK's physical points (LPS) of a few voxels, flipped to RAS
    image = nifti.to_sitk()
    for ijk in [(0, 0, 0), (31, 0, 0), (5, 17, 11), (31, 31, 19)]:
        lps = np.array(image.TransformIndexToPhysicalPoint(ijk))
        np.testing.assert_allclose((matrix @ [*ijk, 1.0])[:3], lps * [-1, -1, 1], atol=1e-3)
    np.testing.assert_array_equal(su.arrayFromVolume(node), nifti.array)
    back = sb.volume_from_node(node)
    assert back.same_grid(nifti, tol=1e-4)
    np.testing.assert_array_equal(back.array, nifti.array)


def test_node_does_not_alias_the_volume(scene_data):
    vol = scene_data.vols["heat"]
    before = vol.array.copy()
    node = sb.add_volume_node(vol, "alias check")
    su.arrayFromVolume(node)[:] = 99.0
    np.testing.assert_array_equal(vol.array, before)


def test_colour_table_diverging_and_window_symmetric(scene_data):
    display = scene_data.display
    m = float(np.abs(scene_data.vols["heat"].array).max())
    assert display.GetWindowLevelMin() == pytest.approx(-m)
    assert display.GetWindowLevelMax() == pytest.approx(m)
    table = sb.diverging_color_node()
    assert display.GetColorNodeID() == table.GetID()
    n = table.GetNumberOfColors()
    rgba = np.array([table.GetLookupTable().GetTableValue(i) for i in range(n)])
    assert rgba[0, 2] > rgba[0, 0] + 0.3  # most negative: blue
    assert rgba[-1, 0] > rgba[-1, 2] + 0.3  # most positive: red
    assert rgba[0, 3] == 1.0 and rgba[-1, 3] == 1.0
    assert rgba[n // 2, 3] == 0.0 and rgba[n // 2 - 1, 3] == 0.0  # zero is transparent
    np.testing.assert_allclose(rgba[:, 3], rgba[::-1, 3])  # transparency symmetric around zero
    assert sb.symmetric_limit(np.zeros(4)) == 1.0


def test_volume_rendering_transfer_functions(scene_data):
    prop = scene_data.vr.GetVolumePropertyNode().GetVolumeProperty()
    opacity, color = prop.GetScalarOpacity(), prop.GetRGBTransferFunction()
    m = 2.0
    assert opacity.GetValue(0.0) == 0.0 and opacity.GetValue(0.1 * m) == 0.0 and opacity.GetValue(-0.1 * m) == 0.0
    assert opacity.GetValue(m) == pytest.approx(opacity.GetValue(-m)) and opacity.GetValue(m) > 0.3
    r, g, b = color.GetColor(m)
    assert r > b + 0.4
    r, g, b = color.GetColor(-m)
    assert b > r + 0.4


def test_table_and_chart_hold_the_matrix(scene_data):
    table = sb.matrix_to_table(MATRIX, CLASS_NAMES, ROI_NAMES, "matrix")
    assert table.GetNumberOfRows() == 2 and table.GetNumberOfColumns() == 1 + len(ROI_NAMES)
    for j, roi in enumerate(ROI_NAMES):
        np.testing.assert_allclose(su.arrayFromTableColumn(table, roi), MATRIX[:, j])
    assert [table.GetCellText(i, 0) for i in range(2)] == CLASS_NAMES
    chart = sb.matrix_chart(MATRIX, CLASS_NAMES, ROI_NAMES, "chart")
    assert chart.GetNumberOfPlotSeriesNodes() == len(CLASS_NAMES)
    for k, name in enumerate(CLASS_NAMES):
        series = chart.GetNthPlotSeriesNode(k)
        assert series.GetPlotType() == series.PlotTypeBar and series.GetYColumnName() == name
        np.testing.assert_allclose(su.arrayFromTableColumn(series.GetTableNode(), name), MATRIX[k])
    with pytest.raises(sb.matrix.SceneInputError, match="shape"):
        sb.matrix_to_table(MATRIX.T, CLASS_NAMES, ROI_NAMES)


def test_metrics_table_holds_each_class_and_marks_undefined_values(scene_data):
    metrics = {"classes": {"left box": {"faithfulness_correlation": 0.5, "average_sensitivity": 0.25,
                                        "complexity": 0.125},
                           "right box": {"faithfulness_correlation": None, "average_sensitivity": 0.75,
                                         "complexity": 0.0625}},
               "wall_time_s": 5.5, "n_model_evaluations": 20}
    table = sb.metrics_to_table(metrics, "quality")
    assert [table.GetCellText(i, 0) for i in range(2)] == CLASS_NAMES
    np.testing.assert_array_equal(su.arrayFromTableColumn(table, "faithfulness_correlation"), [0.5, np.nan])
    np.testing.assert_array_equal(su.arrayFromTableColumn(table, "complexity"), [0.125, 0.0625])
    assert table.GetAttribute("XAIExplainer.n_model_evaluations") == "20"
    with pytest.raises(sb.matrix.SceneInputError, match="classes"):
        sb.metrics_to_table({"wall_time_s": 1.0})


def _numpy_centroid_ras(labels: Volume, value: int) -> np.ndarray:
    k, j, i = np.nonzero(labels.array == value)
    return (labels.ijk_to_ras() @ [i.mean(), j.mean(), k.mean(), 1.0])[:3]


def test_graph_markups_at_segment_centroids(scene_data):
    labels = scene_data.vols["labels"]
    graph = sb.show_roi_graph(labels, ROI_NAMES, MATRIX, CLASS_NAMES, top_k=None, threshold=0.95, name="g")
    points = graph.points
    # label 0 ("background": the space outside every RoI) has no anatomical place, so no point and no edges
    assert points.GetNumberOfControlPoints() == len(ROI_NAMES) - 1
    assert points.GetControlPointIndexByLabel("background") < 0
    for v, name in enumerate(ROI_NAMES[1:], start=1):
        idx = points.GetControlPointIndexByLabel(name)
        pos = np.zeros(3)
        points.GetNthControlPointPositionWorld(idx, pos)
        np.testing.assert_allclose(pos, _numpy_centroid_ras(labels, v), atol=1e-3)
    expected = [(ROI_NAMES[j], c, MATRIX[k, j]) for k, c in enumerate(CLASS_NAMES)
                for j in select_edges(MATRIX[k], None, 0.95) if ROI_NAMES[j] not in (c, "background")]
    assert len(expected) == 4
    assert sorted(graph.edges) == sorted(expected)
    assert len(graph.lines) == len(expected)
    for line, (source, target, weight) in zip(graph.lines, graph.edges):
        ends = [np.zeros(3), np.zeros(3)]
        line.GetNthControlPointPositionWorld(0, ends[0])
        line.GetNthControlPointPositionWorld(1, ends[1])
        np.testing.assert_allclose(ends[0], graph.positions[source], atol=1e-3)
        np.testing.assert_allclose(ends[1], graph.positions[target], atol=1e-3)
    by_weight = sorted(zip([w for *_, w in graph.edges], graph.lines), key=lambda t: t[0])
    diameters = [line.GetDisplayNode().GetLineDiameter() for _, line in by_weight]
    reds = [line.GetDisplayNode().GetColor()[1] for _, line in by_weight]  # green falls as importance rises
    assert diameters == sorted(diameters) and diameters[-1] > diameters[0]
    assert reds == sorted(reds, reverse=True)
    # the slider: top-2 keeps each class's two strongest edges; the self-loop (context ratio) is not drawn
    n_lines = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLMarkupsLineNode")
    sb.update_roi_graph(graph, top_k=2, threshold=None)
    assert sorted(graph.edges) == [("right box", "left box", 0.25), ("slab", "right box", 0.2)]
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLMarkupsLineNode") == n_lines - len(expected) + 2


# ---- offscreen renders --------------------------------------------------------------------------------------------
def _require_gl() -> None:
    ok, why = sb.offscreen_rendering_available()
    if not ok:
        pytest.skip(f"no offscreen OpenGL context: {why}")


def _reddish(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(int)
    return (rgb[..., 0] > rgb[..., 2] + 40) & (rgb[..., 0] > 60)


def _blueish(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(int)
    return (rgb[..., 2] > rgb[..., 0] + 40) & (rgb[..., 2] > 60)


@contextlib.contextmanager
def _only_visible(*keep):
    """Hide every display node but ``keep`` (earlier tests' graph markups are drawn in red in both views)."""
    scene = slicer.mrmlScene
    shown = [scene.GetNthNodeByClass(n, "vtkMRMLDisplayNode")
             for n in range(scene.GetNumberOfNodesByClass("vtkMRMLDisplayNode"))]
    shown = [d for d in shown if d.GetVisibility() and not any(d is k for k in keep)]
    for d in shown:
        d.SetVisibility(False)
    try:
        yield
    finally:
        for d in shown:
            d.SetVisibility(True)


def _voxel_under_each_pixel(xy_to_ras: np.ndarray, vol: Volume, hw: tuple[int, int]):
    """(k, j, i) index of the voxel nearest to each pixel's centre and whether it lies inside the volume."""
    h, w = hw
    rows, cols = np.mgrid[0:h, 0:w]
    xy = np.stack([cols.ravel(), (h - 1 - rows).ravel(), np.zeros(h * w), np.ones(h * w)])
    ijk = np.rint((np.linalg.inv(vol.ijk_to_ras()) @ xy_to_ras @ xy)[:3]).astype(int)
    inside = np.all((ijk >= 0) & (ijk < np.array(vol.size_xyz)[:, None]), axis=0)
    ijk = np.where(inside, ijk, 0)
    return (ijk[2].reshape(h, w), ijk[1].reshape(h, w), ijk[0].reshape(h, w)), inside.reshape(h, w)


def test_slice_view_shows_heatmap_colours_where_nonzero(scene_data, tmp_path):
    _require_gl()
    heat = scene_data.vols["heat"].array
    z_ras = float((scene_data.vols["heat"].ijk_to_ras() @ [0, 0, 10, 1])[2])  # through both boxes (k = 10)
    view = sb.OffscreenSliceView("TestRed", "Axial", (300, 300))
    with _only_visible(scene_data.image.GetDisplayNode(), scene_data.heat.GetDisplayNode()):
        rgb = view.set_layers(scene_data.image, scene_data.heat, 0.6).fit(z_ras).render()
        (k, j, i), inside = _voxel_under_each_pixel(view.xy_to_ras(), scene_data.vols["heat"], rgb.shape[:2])
        view.close()
        again = sb.render_slice(scene_data.image, scene_data.heat, z_ras, size=(300, 300),
                                path=tmp_path / "s.png")
    assert np.all(k[inside] == 10)
    pos_core = ndimage.binary_erosion(heat > 0)[k, j, i] & inside
    neg_core = ndimage.binary_erosion(heat < 0)[k, j, i] & inside
    zero_far = ~ndimage.binary_dilation(heat != 0, iterations=2)[k, j, i] & inside
    assert pos_core.sum() > 1000 and neg_core.sum() > 1000 and zero_far.sum() > 1000
    red, blue = _reddish(rgb), _blueish(rgb)
    assert red[pos_core].mean() > 0.97 and blue[neg_core].mean() > 0.97
    assert not red[zero_far].any() and not blue[zero_far].any()  # zero: the anatomy shows, untinted
    assert rgb[zero_far].std() > 10  # ... and it is the image, not a flat fill
    assert (tmp_path / "s.png").stat().st_size > 1000
    assert np.mean(_reddish(again) == red) > 0.99


def _project(renderer, ras, height: int) -> tuple[int, int]:
    renderer.SetWorldPoint(*ras, 1.0)
    renderer.WorldToDisplay()
    x, y, _ = renderer.GetDisplayPoint()
    return int(round(height - 1 - y)), int(round(x))


def test_3d_volume_rendering_shows_heatmap_colours(scene_data):
    _require_gl()
    labels = scene_data.vols["labels"]
    view = sb.OffscreenThreeDView(name="Test3D", size=(300, 300))
    with _only_visible(scene_data.vr):
        view.look_from("anterior")
        rgb = view.render()
        h = rgb.shape[0]
        pos_px = _project(view.renderer, _numpy_centroid_ras(labels, 1), h)
        neg_px = _project(view.renderer, _numpy_centroid_ras(labels, 2), h)
        scene_data.vr.SetVisibility(False)
        hidden = view.render()
        scene_data.vr.SetVisibility(True)
        view.close()
    red, blue = _reddish(rgb), _blueish(rgb)
    patch = lambda m, rc: m[rc[0] - 3: rc[0] + 4, rc[1] - 3: rc[1] + 4]  # noqa: E731
    assert patch(red, pos_px).all() and patch(blue, neg_px).all()
    assert red.sum() > 500 and blue.sum() > 500
    # seen from the front, the patient's right (positive box: larger RAS x) is on the viewer's left
    assert pos_px[1] < neg_px[1]
    assert not _reddish(hidden).any() and not _blueish(hidden).any()


# ---- a whole explanation ------------------------------------------------------------------------------------------
def test_add_explanation_to_scene(scene_data):
    vols = scene_data.vols
    image_before = su.arrayFromVolume(scene_data.image).copy()
    attributions = {"left box": vols["heat"], "right box": vols["heat"].with_array(-vols["heat"].array)}
    provenance = {"method": "vanilla_gradient", "params": {"abs": False}, "seed": 3, "model": {"sha256": "ab" * 32}}
    explanation = types.SimpleNamespace(
        image=vols["image"], labels=vols["labels"], class_names=CLASS_NAMES, attributions=attributions,
        roi_labels=vols["labels"], roi_names=ROI_NAMES, matrix=MATRIX, graph=None, provenance=provenance,
        absent_classes=[], label_names=ROI_NAMES,
        metrics={"classes": {"left box": {"faithfulness_correlation": 0.4, "average_sensitivity": 0.2,
                                          "complexity": 0.1}}, "wall_time_s": 2.0},
    )
    view = sb.OffscreenSliceView(size=(64, 64))  # an open slice view gets the overlay, as Slicer's Red/Yellow/Green
    nodes = sb.add_explanation_to_scene(explanation, input_node=scene_data.image, threshold=0.95)
    composite = view.composite
    assert composite.GetForegroundVolumeID() == nodes["heatmap:left box"].GetID()
    assert composite.GetBackgroundVolumeID() == scene_data.image.GetID()
    view.close()
    assert nodes["image"] is scene_data.image
    np.testing.assert_array_equal(su.arrayFromVolume(scene_data.image), image_before)
    assert scene_data.image.GetAttribute("XAIExplainer.provenance") is None  # the input node is not touched
    data_nodes = {k: v for k, v in nodes.items() if k not in ("image", "graph", "volume_rendering")}
    assert {"segmentation", "heatmap:left box", "heatmap:right box", "table", "chart", "metrics",
            "graph_points"} <= set(data_nodes)
    np.testing.assert_allclose(su.arrayFromTableColumn(nodes["metrics"], "faithfulness_correlation"), [0.4])
    assert sum(k.startswith("graph_edge:") for k in data_nodes) == 4
    for key, node in data_nodes.items():
        record = sb.get_provenance(node)
        assert record["method"] == "vanilla_gradient" and record["seed"] == 3, key
        assert node.GetAttribute("XAIExplainer.model") == '{"sha256": "' + "ab" * 32 + '"}'
    np.testing.assert_array_equal(su.arrayFromVolume(nodes["heatmap:right box"]), -vols["heat"].array)
    assert sb.get_provenance(nodes["heatmap:right box"])["attribution_of"] == "right box"
    segmentation = nodes["segmentation"].GetSegmentation()
    names = [segmentation.GetNthSegment(n).GetName() for n in range(segmentation.GetNumberOfSegments())]
    assert names == ROI_NAMES[1:]
    for v, name in enumerate(ROI_NAMES[1:], start=1):
        seg_id = segmentation.GetSegmentIdBySegmentName(name)
        mask = su.arrayFromSegmentBinaryLabelmap(nodes["segmentation"], seg_id, scene_data.image)
        assert int(mask.sum()) == int((vols["labels"].array == v).sum())
    assert nodes["segmentation"].GetDisplayNode().GetOpacity3D() < 1.0
    np.testing.assert_allclose(su.arrayFromTableColumn(nodes["table"], "right box"), MATRIX[:, 2])


def test_bad_inputs_raise_named_errors(scene_data):
    from XAIExplainerLib.errors import InvalidVolumeError, SceneInputError

    labels = scene_data.vols["labels"]
    with pytest.raises(SceneInputError, match="expected \\(classes, RoIs\\)"):
        sb.show_roi_graph(labels, ROI_NAMES, MATRIX.T, CLASS_NAMES)
    graph = sb.show_roi_graph(labels, ROI_NAMES, MATRIX, CLASS_NAMES, name="errors")
    with pytest.raises(SceneInputError, match="new matrix has shape"):
        sb.update_roi_graph(graph, matrix=MATRIX[:1])
    with pytest.raises(InvalidVolumeError, match="integer labels"):
        sb.add_volume_node(scene_data.vols["image"], "not labels", labelmap=True)


def test_heatmap_window_rule_is_applied_once(scene_data):
    """Selecting a heatmap after Explain (show_heatmap without a limit) keeps the 99.5th-percentile window; it used
    to reset to +-max, 4.4x wider on a real run. A map with a few extreme voxels makes the difference visible."""
    rng = np.random.default_rng(1)
    array = rng.normal(size=scene_data.vols["heat"].array.shape).astype(np.float32)
    array.flat[:3] = 1000.0  # a few extreme gradient voxels
    heat = scene_data.vols["heat"].with_array(array)
    explanation = types.SimpleNamespace(
        image=scene_data.vols["image"], labels=scene_data.vols["labels"], class_names=["left box"],
        attributions={"left box": heat}, roi_labels=scene_data.vols["labels"], roi_names=ROI_NAMES,
        matrix=MATRIX[:1], graph=None, provenance={"method": "vanilla_gradient"}, absent_classes=[],
        label_names=ROI_NAMES)
    nodes = sb.add_explanation_to_scene(explanation, input_node=scene_data.image)
    node = nodes["heatmap:left box"]
    m = float(np.percentile(np.abs(array[array != 0]), 99.5))
    assert node.GetDisplayNode().GetWindow() == pytest.approx(2 * m, rel=1e-6) and m < 100
    sb.show_heatmap(node, scene_data.image)  # what selecting it in the module does
    assert node.GetDisplayNode().GetWindow() == pytest.approx(2 * m, rel=1e-6)
    assert float(node.GetAttribute(sb.heatmaps.WINDOW_ATTRIBUTE)) == pytest.approx(m)  # saved with the scene
