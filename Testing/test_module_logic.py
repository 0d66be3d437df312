"""The module's Logic end to end under slicer-core, as a radiologist's first session would run it.

Headless: the real MRML scene and module logics come from slicer-core; ``qt``, ``ScriptedLoadableModule`` and
``parameterNodeWrapper`` are minimal stand-ins (Testing/slicer_standins.py). The Logic loads the shipped demo T1
with the demo model ("Load demo"), segments and explains it through the real background process (CLI with
--result-json), the scene is saved as .mrb and reloaded into a fresh scene, and what the user relies on is
checked: nodes, display windows, parameter values, graph interactivity, one Subject Hierarchy folder per run, no
orphan colour tables, no temporary folders. Cancel is checked against a launcher whose child runs in its own
session (as PythonSlicer.exe -> python-real.exe on Windows): the whole tree must stop.
"""
from __future__ import annotations

import os
import stat
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import slicer_standins  # noqa: E402

pytest.importorskip("slicer")
from XAIExplainerLib.slicer_bridge import create_headless_scene  # noqa: E402

CLASSES = ["frontal_L", "cerebellum"]


WORK_ROOT = Path(tempfile.mkdtemp(prefix="xai-module-logic-"))  # this test's own, so parallel runs cannot interfere


def _work_folders() -> set[str]:
    return {p.name for p in WORK_ROOT.glob("XAIExplainer-*")}


def _user_colour_tables(scene) -> set[str]:
    return {scene.GetNthNodeByClass(i, "vtkMRMLColorTableNode").GetName()
            for i in range(scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode"))
            if not scene.GetNthNodeByClass(i, "vtkMRMLColorTableNode").GetSingletonTag()}


@pytest.fixture(scope="module")
def module():
    with slicer_standins.loaded_module() as loaded:
        yield loaded


@pytest.fixture(scope="module")
def session(module, tmp_path_factory):
    """Load demo -> Segment -> Explain (vanilla gradient, two classes) -> save .mrb -> reload in a fresh scene."""
    ctx = create_headless_scene()
    logic = module.XAIExplainerLogic()
    logic.pythonExecutable = sys.executable
    logic.workRoot = WORK_ROOT
    params = logic.getParameterNode()
    assert str(params.modelPath) == "."  # what a fresh parameter node holds ...
    logic.offerDemoModel(params)  # ... and what the widget shows instead when the module opens
    assert Path(params.modelPath).name == "swin_unetr_brain.pt"
    folders_before, tables_before = _work_folders(), _user_colour_tables(ctx.scene)
    volume = logic.loadDemo(params)
    input_before = np.array(__import__("slicer").util.arrayFromVolume(volume), copy=True)
    segmentation = logic.segment(params.inputVolume, params.modelPath, device="cpu", wait=True)
    nodes = logic.explain(params.inputVolume, params.modelPath, method="vanilla_gradient", classes=CLASSES,
                          device="cpu", wait=True)
    heatmap = nodes["heatmap:frontal_L"]
    first_window = heatmap.GetDisplayNode().GetWindow()
    logic.showHeatmap(heatmap, volume)  # what selecting it in the Results section does
    # settings the user chose for another method, to be found again after the reload
    params.method = "smoothgrad"
    logic.setMethodOption(params, "n_samples", 7)
    logic.setMethodOption(params, "noise_level", 0.25)
    params.topK, params.graphThreshold, params.heatmapVolume = 3, 0.6, heatmap
    state = {"ctx": ctx, "logic": logic, "params": params, "volume": volume, "segmentation": segmentation,
             "nodes": nodes, "heatmap": heatmap, "first_window": first_window, "input_before": input_before,
             "folders_before": folders_before, "folders_after": _work_folders(),
             "tables_before": tables_before, "tables_after": _user_colour_tables(ctx.scene),
             "window_after_select": heatmap.GetDisplayNode().GetWindow()}
    out = tmp_path_factory.mktemp("mrb")
    bundle = out / "bundle"
    bundle.mkdir()
    assert ctx.app_logic.SaveSceneToSlicerDataBundleDirectory(str(bundle), None)
    mrb = out / "session.mrb"
    assert ctx.app_logic.Zip(str(mrb), str(bundle))
    fresh = create_headless_scene()
    opened = out / "opened"
    opened.mkdir()
    assert fresh.app_logic.OpenSlicerDataBundle(str(mrb), str(opened))
    state["reloaded"] = fresh
    state["reloaded_logic"] = module.XAIExplainerLogic()
    return state


def test_load_demo_selects_the_shipped_t1_and_the_demo_model(session):
    params, volume = session["params"], session["volume"]
    assert params.inputVolume is volume or params.inputVolume.GetID() == volume.GetID()
    assert Path(params.modelPath).name == "swin_unetr_brain.pt" and Path(params.modelPath).is_file()
    t1 = ROOT / "XAIExplainerLib" / "Resources" / "DemoData" / "Colin27_T1_3mm.nii.gz"
    assert t1.stat().st_size < 200_000  # small enough to ship
    notice = (t1.parent / "NOTICE.txt").read_text()
    assert "BSD-3-clause" in notice and "Chris Rorden" in notice and "AAL" in notice  # says what is NOT shipped
    assert volume.GetImageData().GetDimensions() == (60, 72, 60)


def test_segmentation_names_every_structure_from_the_result_json(session):
    """Names come from the CLI's JSON record, not from a subsampled list printed for humans."""
    import json

    segments = session["segmentation"].GetSegmentation()
    names = [segments.GetNthSegment(i).GetName() for i in range(segments.GetNumberOfSegments())]
    expected = json.loads((ROOT / "XAIExplainerLib/Resources/DemoModel/swin_unetr_brain.json").read_text())
    assert names == expected["label_names"][1:]  # all 13 structures found in the demo T1, each by its name
    assert not any(name.startswith("label ") for name in names)


def test_input_is_never_modified(session):
    import slicer

    assert np.array_equal(slicer.util.arrayFromVolume(session["volume"]), session["input_before"])


def test_explanation_sits_in_one_run_folder_named_after_method_and_time(session):
    import slicer

    scene, nodes = session["ctx"].scene, session["nodes"]
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    folder = nodes["folder_item"]
    assert sh.GetItemName(folder).startswith("XAI Vanilla gradient ")
    for key in ("heatmap:frontal_L", "heatmap:cerebellum", "table", "chart", "segmentation", "graph_points"):
        assert sh.GetItemParent(sh.GetItemByDataNode(nodes[key])) == folder, key
    assert sh.GetItemParent(sh.GetItemByDataNode(session["volume"])) != folder  # the user's input stays put


def test_no_orphan_colour_tables_and_no_temporary_folders(session):
    assert session["tables_after"] - session["tables_before"] == {"XAIExplainer Diverging"}
    assert session["folders_after"] == session["folders_before"]
    for key, node in session["nodes"].items():
        if hasattr(node, "GetAttributeNames"):
            for name in node.GetAttributeNames() or ():
                assert f"{WORK_ROOT}/XAIExplainer-" not in (node.GetAttribute(name) or ""), (key, name)


def test_heatmap_window_is_applied_once(session):
    """Selecting the new heatmap must not reset the 99.5th-percentile window to +-max."""
    heatmap = session["heatmap"]
    import slicer

    values = np.abs(slicer.util.arrayFromVolume(heatmap))
    expected = 2 * np.percentile(values[values > 0], 99.5)
    assert session["first_window"] == pytest.approx(expected, rel=1e-6)
    assert session["window_after_select"] == pytest.approx(session["first_window"], rel=1e-9)
    assert session["first_window"] < 2 * values.max()  # the rule matters on this map


def test_reload_keeps_nodes_windows_and_parameters(session):
    scene = session["reloaded"].scene
    logic = session["reloaded_logic"]
    params = logic.getParameterNode()
    assert params.method == "smoothgrad"
    assert logic.methodOptionValues(params)["n_samples"] == 7
    assert logic.methodOptionValues(params)["noise_level"] == pytest.approx(0.25)
    assert params.topK == 3 and params.graphThreshold == pytest.approx(0.6)
    heatmap = params.heatmapVolume
    assert heatmap is not None and heatmap.GetName() == session["heatmap"].GetName()
    assert heatmap.GetDisplayNode().GetWindow() == pytest.approx(session["first_window"], rel=1e-4)
    logic.showHeatmap(heatmap, params.inputVolume)
    assert heatmap.GetDisplayNode().GetWindow() == pytest.approx(session["first_window"], rel=1e-4)
    for cls, count in (("vtkMRMLSegmentationNode", 2), ("vtkMRMLPlotChartNode", 1),
                       ("vtkMRMLMarkupsFiducialNode", 1)):
        assert scene.GetNumberOfNodesByClass(cls) == count, cls
    assert params.inputVolume.GetName() == session["volume"].GetName()


def test_graph_slider_works_after_reload(session):
    scene = session["reloaded"].scene
    logic = session["reloaded_logic"]
    heatmap = logic.getParameterNode().heatmapVolume
    before = scene.GetNumberOfNodesByClass("vtkMRMLMarkupsLineNode")
    graph = logic.updateGraph(heatmap, topK=1, threshold=1.0)
    assert graph is not None and len(graph.lines) <= len(CLASSES) < before
    assert scene.GetNumberOfNodesByClass("vtkMRMLMarkupsLineNode") == len(graph.lines)
    graph = logic.updateGraph(heatmap, topK=0, threshold=1.0)
    assert len(graph.lines) > len(CLASSES)  # every edge is back: the matrix came from the saved scene
    chart = logic.chartForHeatmap(heatmap)  # what "Show importance chart" puts in the layout
    assert chart is not None and chart.IsA("vtkMRMLPlotChartNode") and chart.GetNumberOfPlotSeriesNodes() >= 1


def _launcher(folder: Path) -> Path:
    """A stand-in for PythonSlicer.exe: starts the real interpreter as a child in ITS OWN session, so only a
    process-tree kill (not a process-group signal) reaches it, as on Windows."""
    path = folder / "PythonSlicerLauncher"
    path.write_text(f"#!{sys.executable}\nimport subprocess, sys\n"
                    f"child = subprocess.Popen([{sys.executable!r}, *sys.argv[1:]], start_new_session=True)\n"
                    "sys.exit(child.wait())\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_cancel_stops_the_process_tree_and_removes_the_work_folder(module, tmp_path):
    create_headless_scene()
    logic = module.XAIExplainerLogic()
    logic.pythonExecutable = str(_launcher(tmp_path))
    logic.workRoot = WORK_ROOT
    params = logic.getParameterNode()
    logic.loadDemo(params)
    before = _work_folders()
    progress = []
    logic.explain(params.inputVolume, params.modelPath, method="smoothgrad", methodParameters={"n_samples": 500},
                  device="cpu", onProgress=lambda f, m: progress.append(m))
    assert _work_folders() - before, "the job's work folder was not created"
    launcher = psutil.Process(logic._job.command._process.pid)
    deadline = time.monotonic() + 120
    while not progress and time.monotonic() < deadline:  # the stand-in QTimer never fires: poll like it would
        logic._timer.slot()
        time.sleep(0.1)
    tree = [launcher, *launcher.children(recursive=True)]
    assert progress and len(tree) >= 2, "the computation did not start in a child of the launcher"
    logic.cancel()
    gone, alive = psutil.wait_procs(tree, timeout=10)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"still running after Cancel: {alive}"
    assert not logic.isRunning()
    assert _work_folders() == before


def test_parent_transform_is_hardened_into_the_export_and_warps_are_refused(tmp_path):
    import slicer
    import vtk

    from XAIExplainerLib.errors import SceneInputError
    from XAIExplainerLib.slicer_bridge.module_io import export_input_volume
    from XAIExplainerLib.volume import read_volume

    ctx = create_headless_scene()
    node = slicer.util.addVolumeFromArray(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6),
                                          ijkToRAS=np.diag([2.0, 2.0, 3.0, 1.0]), name="moved")
    plain, hardened = export_input_volume(node, tmp_path / "plain.nii.gz")
    assert not hardened
    shift = ctx.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 10.0)  # +10 mm towards Right
    shift.SetMatrixTransformToParent(matrix)
    node.SetAndObserveTransformNodeID(shift.GetID())
    moved, hardened = export_input_volume(node, tmp_path / "moved.nii.gz")
    assert hardened
    a, b = read_volume(plain), read_volume(moved)
    # LPS on disk: +10 mm in R is -10 mm in L; voxels unchanged; the node itself is untouched
    assert np.allclose(np.subtract(b.origin, a.origin), (-10.0, 0.0, 0.0)) and np.array_equal(a.array, b.array)
    assert node.GetParentTransformNode() is shift and slicer.util.arrayFromVolume(node)[0, 0, 1] == 1.0
    warp = ctx.scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    node.SetAndObserveTransformNodeID(warp.GetID())
    with pytest.raises(SceneInputError, match="non-linear transform 'warp'.*Harden transform"):
        export_input_volume(node, tmp_path / "warped.nii.gz")


def test_roi_export_leaves_no_colour_table_and_keeps_segment_names(tmp_path):
    import slicer

    from XAIExplainerLib.slicer_bridge.explanation import add_segmentation_node
    from XAIExplainerLib.slicer_bridge.module_io import export_roi_segmentation
    from XAIExplainerLib.slicer_bridge.volumes import add_volume_node
    from XAIExplainerLib.volume import Volume, read_volume

    ctx = create_headless_scene()
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[1:4, 1:4, 1:4], labels[5:7, 5:7, 5:7] = 1, 2
    reference = add_volume_node(Volume(np.zeros((8, 8, 8), np.float32)), "ref")  # same grid as the labels
    tables_before = _user_colour_tables(ctx.scene)
    rois = add_segmentation_node(Volume(labels), ["background", "left", "right"], "RoIs")
    assert _user_colour_tables(ctx.scene) == tables_before  # importing left no colour table behind either
    names = export_roi_segmentation(rois, reference, tmp_path / "rois.nii.gz", tmp_path / "names.csv")
    assert names == ["left", "right"]
    assert (tmp_path / "names.csv").read_text().split() == ["1,left", "2,right"]
    exported = read_volume(tmp_path / "rois.nii.gz").array
    assert {int(v) for v in np.unique(exported)} == {0, 1, 2} and (exported == 1).sum() == 27
    assert _user_colour_tables(ctx.scene) == tables_before
    assert ctx.scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == 0
