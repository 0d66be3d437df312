"""The module's Regression section end to end under slicer-core: Logic -> background ``xai-explainer`` -> nodes.

A small MONAI ``Regressor`` saved as weights + JSON (what the RegressionModel adapter loads) explains an 8³ volume
with anisotropic voxels and a shifted origin. What a user relies on is checked against the command line itself:
the same command run directly writes NIfTI heatmaps whose values the nodes must hold, on the input's geometry;
the surrogate table carries the CLI's R² and intercepts; the reference-mode settings reach the CLI; a
segmentation used as supervoxels arrives on the input grid with its segment names. Bad requests fail before any
file or process exists. The three comparison views put the expected heatmaps in the expected slice views.
"""
from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slicer_standins  # noqa: E402

slicer = pytest.importorskip("slicer")
torch = pytest.importorskip("torch")

from XAIExplainerLib.cli.main import main  # noqa: E402
from XAIExplainerLib.errors import (MethodParameterError, ModelCapabilityError, SceneInputError,  # noqa: E402
                                    UnknownClassError)
from XAIExplainerLib.slicer_bridge import create_headless_scene  # noqa: E402
from XAIExplainerLib.volume import read_volume  # noqa: E402

NAMES = ["grey_matter", "white_matter", "csf"]
SHAPE = (8, 8, 8)
IJK_TO_RAS = np.array([[-2.0, 0, 0, 30.0], [0, -1.5, 0, 12.0], [0, 0, 1.0, -7.0], [0, 0, 0, 1]])
LIME = ["--supervoxels", "cubes", "--n-segments", "8", "--samples", "40"]
WORK_ROOT = Path(tempfile.mkdtemp(prefix="xai-module-regression-"))


@pytest.fixture(scope="module")
def module():
    with slicer_standins.loaded_module() as loaded:
        yield loaded


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A MONAI Regressor with fixed random weights, saved as state dict + JSON config (kind "regression")."""
    from XAIExplainerLib.models import ModelConfig
    from XAIExplainerLib.models.network import build_network

    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    config = ModelConfig(kind="regression", target_names=NAMES, architecture="Regressor", preprocessing=[],
                         network_kwargs={"in_shape": [1, *SHAPE], "out_shape": [3], "channels": [2, 4],
                                         "strides": [2, 2]})
    torch.save(build_network(config).state_dict(), folder / "regressor.pt")
    config.save(folder / "regressor.json")
    return folder / "regressor.pt"


@pytest.fixture(scope="module")
def session(module, model, tmp_path_factory):
    """Three runs through the real background process: all targets, reference mode, segmentation supervoxels."""
    ctx, logic = slicer_standins.headless_logic(module, WORK_ROOT)
    data = np.random.default_rng(3).uniform(0.0, 2.0, SHAPE).astype(np.float32)
    volume = slicer.util.addVolumeFromArray(data, ijkToRAS=IJK_TO_RAS, name="patch")
    labels = np.zeros(SHAPE, np.uint8)
    labels[:, :, :4] = 1
    labels[:, 4:, 4:] = 2
    segmentation = _segmentation(labels, ["left half", "back quarter"])
    cubes = {"supervoxels": "cubes", "n_segments": 8, "n_samples": 40}
    runs = {
        "all": logic.explainRegression(volume, model, methodParameters=cubes, seed=5, device="cpu", wait=True),
        "reference": logic.explainRegression(volume, model, targets=["white_matter"], score="closeness",
                                             reference=0.3, methodParameters={**cubes, "reference_width": 0.5},
                                             seed=5, device="cpu", wait=True),
        "segments": logic.explainRegression(volume, model, labelSegmentation=segmentation,
                                            methodParameters={"n_samples": 30}, seed=2, device="cpu", wait=True),
    }
    cli = tmp_path_factory.mktemp("cli")
    from XAIExplainerLib.slicer_bridge.module_io import export_input_volume

    input_file, _ = export_input_volume(volume, cli / "input.nii.gz")
    return {"ctx": ctx, "logic": logic, "volume": volume, "data": data, "labels": labels, "runs": runs,
            "cli": cli, "input_file": input_file, "model": model}


def _segmentation(labels: np.ndarray, names: list[str]):
    """A segmentation node made from a label map on the input's grid (as a user's Segment Editor result)."""
    labelmap = slicer.util.addVolumeFromArray(labels, ijkToRAS=IJK_TO_RAS, name="labels",
                                              nodeClassName="vtkMRMLLabelMapVolumeNode")
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "regions")
    from XAIExplainerLib.slicer_bridge.scene import get_context

    assert get_context().logic("Segmentations").ImportLabelmapToSegmentationNode(labelmap, node)
    slicer.mrmlScene.RemoveNode(labelmap)
    for i, name in enumerate(names):
        node.GetSegmentation().GetNthSegment(i).SetName(name)
    return node


def _cli(session, name: str, *extra: str) -> Path:
    """The same explanation from ``xai-explainer lime`` run directly (the reference the nodes must equal)."""
    out = session["cli"] / name
    assert main(["lime", "--input", str(session["input_file"]), "--model", str(session["model"]), "--device",
                 "cpu", "--output", str(out), *extra]) == 0
    return out


def _table(node) -> dict[str, list]:
    table = node.GetTable()
    return {table.GetColumnName(c): [table.GetValue(r, c).ToString() if c == 0 else table.GetValue(r, c).ToDouble()
                                     for r in range(table.GetNumberOfRows())]
            for c in range(table.GetNumberOfColumns())}


def test_heatmaps_equal_the_cli_output_on_the_input_geometry(session):
    from XAIExplainerLib.slicer_bridge.volumes import node_ijk_to_ras

    nodes = session["runs"]["all"]
    out = _cli(session, "all", *LIME, "--seed", "5")
    assert sorted(k for k in nodes if k.startswith("heatmap:")) == sorted(f"heatmap:{n}" for n in NAMES)
    for name in NAMES:
        node = nodes[f"heatmap:{name}"]
        np.testing.assert_allclose(node_ijk_to_ras(node), IJK_TO_RAS, atol=1e-6)
        expected = read_volume(out / f"heatmap_{name}.nii.gz").array
        np.testing.assert_allclose(slicer.util.arrayFromVolume(node), expected, rtol=1e-5, atol=1e-7)
        assert np.unique(expected).size > 1  # a real map: 8 cubes with different weights
        assert node.GetAttribute("XAIExplainer.attribution_of") == name
        assert node.GetAttribute("XAIExplainer.result") == "heatmap"
        assert node.GetNodeReference("XAIExplainer.input") is session["volume"]
    surrogate = json.loads((out / "surrogate.json").read_text())
    table = _table(nodes["table"])
    assert table["target"] == NAMES
    np.testing.assert_allclose(table["R2"], [surrogate["targets"][n]["r2"] for n in NAMES], rtol=1e-6)
    np.testing.assert_allclose(table["intercept"], [surrogate["targets"][n]["intercept"] for n in NAMES], rtol=1e-6)
    np.testing.assert_allclose(table["prediction"], [surrogate["predictions"][n] for n in NAMES], rtol=1e-6)
    weights = _table(nodes["weights"])
    assert len(weights["supervoxel"]) == 8
    for name in NAMES:
        np.testing.assert_allclose(weights[name], surrogate["targets"][name]["weights"], rtol=1e-6)


def test_reference_mode_settings_reach_the_cli(session):
    nodes = session["runs"]["reference"]
    assert [k for k in nodes if k.startswith("heatmap:")] == ["heatmap:white_matter"]
    heat = nodes["heatmap:white_matter"]
    provenance = json.loads(heat.GetAttribute("XAIExplainer.provenance"))
    assert provenance["score"] == "closeness" and provenance["reference"] == pytest.approx(0.3)
    assert provenance["params"]["reference_width"] == pytest.approx(0.5)
    assert provenance["reads"] == "positive = supports not-a*"
    out = _cli(session, "reference", *LIME, "--seed", "5", "--targets", "white_matter", "--score", "closeness",
               "--reference", "0.3", "--reference-width", "0.5")
    np.testing.assert_allclose(slicer.util.arrayFromVolume(heat),
                               read_volume(out / "heatmap_white_matter.nii.gz").array, rtol=1e-5, atol=1e-7)
    all_targets = slicer.util.arrayFromVolume(session["runs"]["all"]["heatmap:white_matter"])
    assert not np.allclose(slicer.util.arrayFromVolume(heat), all_targets)  # the question changed the answer


def test_segmentation_supervoxels_are_exported_on_the_input_grid(session):
    nodes = session["runs"]["segments"]
    supervoxels = slicer.util.arrayFromVolume(nodes["supervoxels"])
    # ids are the label values made consecutive: 0 outside, 1 = first segment, 2 = second
    np.testing.assert_array_equal(supervoxels, session["labels"])
    assert _table(nodes["weights"])["supervoxel"] == ["outside segments", "left half", "back quarter"]
    for name in NAMES:
        heat = slicer.util.arrayFromVolume(nodes[f"heatmap:{name}"])
        for label in range(3):  # one surrogate weight per segment, painted back on the input grid
            assert np.unique(heat[session["labels"] == label]).size == 1
    assert not list(WORK_ROOT.glob("XAIExplainer-*")), "a work folder was left behind"


def test_input_is_unchanged_and_runs_are_filed_in_folders(session):
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(session["volume"]), session["data"])
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(session["ctx"].scene)
    folders = {run["folder_item"] for run in session["runs"].values()}
    assert len(folders) == 3
    assert all(sh.GetItemName(f).startswith("XAI Image-Reg-LIME ") for f in folders)


@pytest.mark.parametrize("kwargs, error", [
    ({"targets": []}, MethodParameterError),
    ({"reference": 0.2, "targets": ["csf"]}, MethodParameterError),
    ({"score": "closeness", "targets": ["csf"]}, MethodParameterError),
    ({"score": "closeness", "reference": 0.2}, MethodParameterError),
    ({"targets": ["age"]}, UnknownClassError),
    ({"targets": [7]}, UnknownClassError),
    ({"methodParameters": {"n_samples": 0}}, MethodParameterError),
    ({"methodParameters": {"kernel_width": -1.0}}, MethodParameterError),
    ({"method": "vanilla_gradient"}, MethodParameterError),
])
def test_bad_requests_fail_before_any_export_or_process(session, kwargs, error):
    logic = session["logic"]
    before = set(WORK_ROOT.iterdir())
    with pytest.raises(error):
        logic.explainRegression(session["volume"], session["model"], device="cpu", wait=True, **kwargs)
    assert set(WORK_ROOT.iterdir()) == before and not logic.isRunning()


def test_a_segmentation_model_is_refused_from_its_json(session, tmp_path):
    weights = tmp_path / "seg.pt"
    weights.write_bytes(b"")
    (tmp_path / "seg.json").write_text(json.dumps({"kind": "segmentation", "label_names": ["bg", "brain"]}))
    with pytest.raises(ModelCapabilityError, match="regression model"):
        session["logic"].explainRegression(session["volume"], weights, device="cpu")


def test_a_newly_registered_method_appears_and_maps_to_explain_regression(session):
    """The section's menu and command come from the registry: a method registered by another file shows up."""
    from XAIExplainerLib.attribution.registry import MethodSpec, OptionSpec, register_method, unregister_method
    from XAIExplainerLib.slicer_bridge.regression import regression_cli_args

    spec = register_method(MethodSpec("test_layer_method", "Test layer method", "test", "", lambda *a, **k: None,
                                      ("regression",), (OptionSpec("layers", str, "features", "layer names"),),
                                      deterministic=True))
    try:
        logic = session["logic"]
        assert "test_layer_method" in [s.name for s in logic.regressionMethodMenu()]
        assert regression_cli_args(spec, {"layers": "conv1 conv2"}) == [
            "explain-regression", "--method", "test_layer_method", "--param", "layers=conv1 conv2"]
        with pytest.raises(MethodParameterError, match="no supervoxels"):  # a label map needs a supervoxel option
            logic.explainRegression(session["volume"], session["model"], method="test_layer_method",
                                    labelSegmentation=slicer.mrmlScene.GetFirstNodeByName("regions"))
    finally:
        unregister_method("test_layer_method")


def test_settings_are_stored_on_the_parameter_node(session):
    logic = session["logic"]
    params = logic.getParameterNode()
    logic.setRegressionSetting(params, "score", "closeness")
    logic.setRegressionSetting(params, "reference", 0.093)
    logic.setRegressionOption(params, "n_samples", 250)
    with pytest.raises(MethodParameterError):
        logic.setRegressionOption(params, "kernel_width", 0.0)
    settings = logic.regressionSettings(params)
    assert settings["score"] == "closeness" and settings["reference"] == pytest.approx(0.093)
    values = logic.regressionOptionValues(params)
    assert values["n_samples"] == 250 and values["kernel_width"] == pytest.approx(0.25)


@pytest.fixture(scope="module")
def other_run(session) -> dict:
    """A later run of a method without a surrogate, in the folder format every regression command writes
    (heatmaps, provenance.json, maps.json naming a blank map and why), loaded as the module loads it."""
    from XAIExplainerLib.slicer_bridge.regression import load_regression_nodes
    from XAIExplainerLib.volume import write_volume

    out = _cli(session, "other", *LIME, "--seed", "9")
    provenance = json.loads((out / "provenance.json").read_text())
    (out / "provenance.json").write_text(json.dumps({**provenance, "method": "smoothgrad"}))
    for name in ("surrogate.json", "surrogate_weights.csv", "supervoxels.nii.gz"):
        (out / name).unlink()
    csf = read_volume(out / "heatmap_csf.nii.gz")
    write_volume(csf.with_array(np.zeros_like(csf.array)), out / "heatmap_csf.nii.gz")
    predictions = provenance["predictions"]
    (out / "maps.json").write_text(json.dumps({"method": "smoothgrad", "score": "higher", "reference": None,
                                               "reads": "signed gradient", "targets": {
        n: {"prediction": predictions[n], "blank": n == "csf",
            "blank_reason": "every channel weight is negative" if n == "csf" else None} for n in NAMES}}))
    return load_regression_nodes(out, session["volume"], session["input_file"], "SmoothGrad")


def test_a_folder_without_surrogate_gives_heatmaps_predictions_and_blank_flags(other_run):
    nodes = other_run
    table = _table(nodes["table"])
    predictions = json.loads(nodes["heatmap:csf"].GetAttribute("XAIExplainer.provenance"))["predictions"]
    np.testing.assert_allclose(table["prediction"], [predictions[n] for n in NAMES], rtol=1e-6)
    assert np.isnan(table["R2"]).all() and np.isnan(table["intercept"]).all()
    assert table["blank"] == [0.0, 0.0, 1.0]
    assert nodes["heatmap:csf"].GetAttribute("XAIExplainer.blank_reason") == "every channel weight is negative"
    assert nodes["heatmap:grey_matter"].GetAttribute("XAIExplainer.blank_reason") is None
    assert "weights" not in nodes and "supervoxels" not in nodes
    assert nodes["heatmap:csf"].GetAttribute("XAIExplainer.method") == "smoothgrad"


def test_three_comparison_views(session, other_run):
    from XAIExplainerLib.slicer_bridge.comparison import COMPARISON_LAYOUT_ID

    logic, volume, runs = session["logic"], session["volume"], session["runs"]
    other = other_run  # the latest run: a second method
    methods, targets = logic.comparisonChoices(volume)
    assert methods == ["image_reg_lime", "smoothgrad"] and targets == NAMES

    def shown(layout):
        assert layout.layout_node.GetViewArrangement() == COMPARISON_LAYOUT_ID
        assert layout.xml.count('class="vtkMRMLSliceNode"') == len(layout.composite_nodes)
        assert all(c.GetBackgroundVolumeID() == volume.GetID() for c in layout.composite_nodes)
        return [c.GetForegroundVolumeID() for c in layout.composite_nodes], layout.labels

    # Single target: one view, the latest Image-Reg-LIME heatmap of white matter (the segmentation run's)
    ids, labels = shown(logic.showComparisonView("single_target", volume, method="image_reg_lime",
                                                 target="white_matter"))
    assert ids == [runs["segments"]["heatmap:white_matter"].GetID()] and labels == ["Image-Reg-LIME: white_matter"]
    # Multiple targets: the latest run of the method, every target, in the run's order
    ids, labels = shown(logic.showComparisonView("multiple_targets", volume, method="image_reg_lime"))
    assert ids == [runs["segments"][f"heatmap:{n}"].GetID() for n in NAMES] and labels == NAMES
    # Multiple methods: one target, the latest heatmap of each method
    ids, labels = shown(logic.showComparisonView("multiple_methods", volume, target="csf"))
    assert ids == [runs["segments"]["heatmap:csf"].GetID(), other["heatmap:csf"].GetID()]
    assert labels == ["Image-Reg-LIME", "SmoothGrad"]
    # Defaults: the latest heatmap's method (here the second method's run)
    ids, _ = shown(logic.showComparisonView("multiple_targets", volume))
    assert ids == [other[f"heatmap:{n}"].GetID() for n in NAMES]
    with pytest.raises(SceneInputError, match="view"):
        logic.showComparisonView("all_at_once", volume)
    with pytest.raises(SceneInputError, match="No heatmap"):
        logic.showComparisonView("single_target", volume, method="image_reg_lime", target="age")


# --- the section's widgets, driven through minimal Qt stand-ins (the Slicer application is not installable here) --

class _Widget:
    """A widget that records its properties and connections; ``emit`` is what a user's edit does."""

    def __init__(self, *args):
        self.slots, self.enabled, self.toolTip, self._blocked = {}, True, "", False
        self.text = args[0] if args else ""

    def connect(self, signal, slot):
        self.slots[signal] = slot

    def emit(self, signal, *args):
        if not self._blocked:
            self.slots[signal](*args)

    def blockSignals(self, blocked):
        old, self._blocked = self._blocked, blocked
        return old


class _ComboBox(_Widget):
    def __init__(self):
        super().__init__()
        self.items, self.currentIndex = [], -1

    def addItem(self, text, data=None):
        self.items.append((text, data))
        self.currentIndex = max(self.currentIndex, 0)

    def setItemData(self, index, value, role):
        pass

    def itemData(self, index):
        return self.items[index][1]

    def findData(self, data):
        return next((i for i, (_, d) in enumerate(self.items) if d == data), -1)

    def clear(self):
        self.items, self.currentIndex = [], -1

    @property
    def count(self):
        return len(self.items)


class _LineEdit(_Widget):
    placeholderText = ""

    def hasFocus(self):
        return False


class _SpinBox(_Widget):
    value, decimals, singleStep = 0, 0, 1

    def setRange(self, low, high):
        self.range = (low, high)


class _CheckBox(_Widget):
    checked = False


class _FormLayout:
    def __init__(self, *args):
        self.rows = []

    def addRow(self, *args):
        self.rows.append(args)

    def removeRow(self, index):
        del self.rows[index]

    def rowCount(self):
        return len(self.rows)


@pytest.fixture
def section(module, session, monkeypatch):
    """The Regression section built on the module's parameter node, with Qt widgets stood in for."""
    import types

    sections = [sys.modules["XAIExplainerSections.base"], sys.modules["XAIExplainerSections.regression"]]
    for qt in {id(m.qt): m.qt for m in sections}.values():  # the qt module the sections imported (cached)
        for name, cls in (("QComboBox", _ComboBox), ("QLineEdit", _LineEdit), ("QSpinBox", _SpinBox),
                          ("QDoubleSpinBox", _SpinBox), ("QCheckBox", _CheckBox), ("QPushButton", _Widget),
                          ("QFormLayout", _FormLayout)):
            monkeypatch.setattr(qt, name, cls, raising=False)
        monkeypatch.setattr(qt, "Qt", types.SimpleNamespace(ToolTipRole=3), raising=False)
    monkeypatch.setattr(slicer, "qMRMLNodeComboBox", type("NodeCombo", (_Widget,), {
        "setMRMLScene": lambda self, scene: None, "setCurrentNode": lambda self, n: setattr(self, "node", n)}),
        raising=False)
    # errors the GUI would show in a pop-up surface as exceptions here
    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", lambda *a, **k: contextlib.nullcontext())
    logic = session["logic"]
    params = logic.getParameterNode()
    params.inputVolume, params.modelPath = session["volume"], session["model"]
    params.parameterNode.SetParameter("Regression", "")  # a fresh section state
    widget = types.SimpleNamespace(logic=logic, _parameterNode=params,
                                   _selectItem=module.XAIExplainerWidget._selectItem)
    regression = sys.modules["XAIExplainerSections.regression"].RegressionSection(widget)
    regression.form = _FormLayout()
    regression.build(regression.form)
    regression.updateButtons(running=False, ready=True)
    return regression


def test_section_widgets_come_from_the_registry_and_store_the_users_choices(section, session, monkeypatch):
    spec = section.logic.methodSpec("image_reg_lime")
    assert section.methodComboBox.itemData(section.methodComboBox.currentIndex) == "image_reg_lime"
    # every option of the registry entry has a widget (supervoxels: its slic/cubes choice; label maps come from
    # the segmentation selector), with the registry's default shown
    assert list(section._optionWidgets) == [o.name for o in spec.options]
    fill = section._optionWidgets["fill"]
    assert section._optionWidgets["n_samples"].value == 1000 and fill.itemData(fill.currentIndex) == "zero"
    assert section.targetsLineEdit.placeholderText == "all: " + ", ".join(NAMES)  # read from the model's JSON
    assert not section.referenceSpinBox.enabled and section.runButton.enabled

    section.scoreComboBox.emit("activated(int)", section.scoreComboBox.findData("closeness"))
    section.referenceSpinBox.emit("valueChanged(double)", 0.3)
    section.targetsLineEdit.text = "white_matter"
    section.targetsLineEdit.emit("editingFinished()")  # the user leaves the field
    section._optionWidgets["n_samples"].emit("valueChanged(int)", 30)
    section.updateButtons(running=False, ready=True)
    assert section.referenceSpinBox.enabled and section.referenceSpinBox.value == pytest.approx(0.3)
    assert section._optionWidgets["n_samples"].value == 30

    calls = []
    monkeypatch.setattr(section, "start", lambda what, run, **kwargs: calls.append((run, kwargs)))
    section.onRunButton()
    run, kwargs = calls[0]
    assert run == section.logic.explainRegression
    assert kwargs["method"] == "image_reg_lime" and kwargs["targets"] == ["white_matter"]
    assert kwargs["score"] == "closeness" and kwargs["reference"] == pytest.approx(0.3)
    assert kwargs["methodParameters"]["n_samples"] == 30 and kwargs["labelSegmentation"] is None
    assert kwargs["inputVolume"] is session["volume"]


def test_section_comparison_menus_list_the_inputs_heatmaps(section, session):
    methods = [section.compareMethodComboBox.itemData(i) for i in range(section.compareMethodComboBox.count)]
    targets = [section.compareTargetComboBox.itemData(i) for i in range(section.compareTargetComboBox.count)]
    assert methods[0] == "image_reg_lime" and targets == NAMES
    assert section.compareMethodComboBox.items[0][0] == "Image-Reg-LIME"  # the registry's label
    section.viewComboBox.emit("activated(int)", section.viewComboBox.findData("single_target"))
    section.compareTargetComboBox.currentIndex = section.compareTargetComboBox.findData("csf")
    section.onCompareButton()
    composites = [slicer.mrmlScene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
                  for i in range(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))]
    shown = slicer.mrmlScene.GetNodeByID(next(c for c in composites if c.GetLayoutName() == "XAICompare1")
                                         .GetForegroundVolumeID())
    assert shown.GetAttribute("XAIExplainer.attribution_of") == "csf"
    assert shown.GetAttribute("XAIExplainer.method") == "image_reg_lime"


def _other_regression_methods() -> list[str]:
    import XAIExplainerLib.attribution  # noqa: F401  (fills the registry)
    from XAIExplainerLib.attribution.registry import available_methods
    from XAIExplainerLib.cli import lime

    return [s.name for s in available_methods("regression") if s.name != lime.METHOD]


@pytest.mark.parametrize("method", _other_regression_methods())
def test_every_other_registered_regression_method_runs_through_the_section(session, method):
    """Whatever else is registered for regression (CAM, gradient methods) runs with its defaults through the
    command :func:`regression_command` names, and gives one map per target with the model's predictions."""
    from XAIExplainerLib.slicer_bridge.volumes import node_ijk_to_ras

    nodes = session["logic"].explainRegression(session["volume"], session["model"], method=method, device="cpu",
                                               wait=True)
    lime_table = _table(session["runs"]["all"]["table"])
    table = _table(nodes["table"])
    assert table["target"] == NAMES
    np.testing.assert_allclose(table["prediction"], lime_table["prediction"], rtol=1e-5)  # same model, same input
    for name in NAMES:
        node = nodes[f"heatmap:{name}"]
        np.testing.assert_allclose(node_ijk_to_ras(node), IJK_TO_RAS, atol=1e-6)
        assert np.isfinite(slicer.util.arrayFromVolume(node)).all()
        assert node.GetAttribute("XAIExplainer.method") == method


def test_settings_and_comparison_views_survive_a_scene_reload(session, other_run, tmp_path):
    """Saved as .mrb and opened in a fresh scene: the section's settings, the heatmaps' input references and run
    folders (what the comparison views select by) come back. Runs last: it replaces the global scene."""
    logic = session["logic"]
    latest_lime = [slicer.util.arrayFromVolume(session["runs"]["segments"][f"heatmap:{n}"]).copy() for n in NAMES]
    params = logic.getParameterNode()
    logic.setRegressionSetting(params, "view", "multiple_methods")
    params.parameterNode.SetNodeReferenceID("Regression.labelSegmentation",
                                            slicer.mrmlScene.GetFirstNodeByName("regions").GetID())
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    assert session["ctx"].app_logic.SaveSceneToSlicerDataBundleDirectory(str(bundle), None)
    assert session["ctx"].app_logic.Zip(str(tmp_path / "s.mrb"), str(bundle))
    fresh = create_headless_scene()
    (tmp_path / "opened").mkdir()
    assert fresh.app_logic.OpenSlicerDataBundle(str(tmp_path / "s.mrb"), str(tmp_path / "opened"))

    params = logic.getParameterNode()
    assert logic.regressionSettings(params)["view"] == "multiple_methods"
    assert params.parameterNode.GetNodeReference("Regression.labelSegmentation").GetName() == "regions"
    volume = fresh.scene.GetFirstNodeByName("patch")
    methods, targets = logic.comparisonChoices(volume)
    assert methods[:2] == ["image_reg_lime", "smoothgrad"] and targets == NAMES
    layout = logic.showComparisonView("multiple_targets", volume, method="image_reg_lime")
    shown = [slicer.util.arrayFromVolume(fresh.scene.GetNodeByID(c.GetForegroundVolumeID()))
             for c in layout.composite_nodes]
    assert len(shown) == 3 and all(np.array_equal(a, b) for a, b in zip(shown, latest_lime))  # the latest run's
