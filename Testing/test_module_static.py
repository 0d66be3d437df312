"""Static checks of the Slicer module (the Slicer application cannot be installed here, so nothing imports it).

The module file is parsed with ``ast`` and the ``.ui`` with an XML parser: the classes of Slicer's template exist
with the right bases, every ``self.ui.X`` names a widget, every ``SlicerParameterName`` names a parameter-node
field of a type Slicer can bind to that widget, torch/MONAI are not imported at load time, the methods table
matches the library, and CMake packages every file. Pure helpers of the module are executed on their own.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "XAIExplainer"
MODULE_FILE = MODULE_DIR / "XAIExplainer.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "XAIExplainer.ui"


@pytest.fixture(scope="module")
def tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(), filename=str(MODULE_FILE))


@pytest.fixture(scope="module")
def ui() -> ET.Element:
    return ET.parse(UI_FILE).getroot()


def _classes(tree: ast.Module) -> dict[str, ast.ClassDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def _names(nodes) -> list[str]:
    return [n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) else "?" for n in nodes]


def _parameter_fields(tree: ast.Module) -> dict[str, ast.AnnAssign]:
    cls = _classes(tree)["XAIExplainerParameterNode"]
    return {stmt.target.id: stmt for stmt in cls.body if isinstance(stmt, ast.AnnAssign)}


def _ui_bindings(ui: ET.Element) -> dict[str, tuple[str, str]]:
    """``{parameter name: (widget class, widget name)}`` from the SlicerParameterName dynamic properties."""
    out = {}
    for widget in ui.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                parameter = prop.find("string").text
                assert parameter not in out, f"two widgets bind '{parameter}'"
                out[parameter] = (widget.get("class"), widget.get("name"))
    return out


def _pure_function(tree: ast.Module, name: str):
    """Execute one module-level function on its own (it must not need slicer/qt)."""
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace: dict = {}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(MODULE_FILE), "exec"), namespace)
    return namespace[name]


# ---- template structure ----------------------------------------------------------------------------------------

def test_template_classes_have_slicer_bases(tree):
    classes = _classes(tree)
    assert _names(classes["XAIExplainer"].bases) == ["ScriptedLoadableModule"]
    assert _names(classes["XAIExplainerWidget"].bases) == ["ScriptedLoadableModuleWidget", "VTKObservationMixin"]
    # ProductLogic: the product sections' console API (XAIExplainerSections), mixed in before Slicer's base
    assert _names(classes["XAIExplainerLogic"].bases) == ["ProductLogic", "ScriptedLoadableModuleLogic"]
    assert _names(classes["XAIExplainerTest"].bases) == ["ScriptedLoadableModuleTest"]
    assert _names(classes["XAIExplainerParameterNode"].decorator_list) == ["parameterNodeWrapper"]
    test_methods = [f.name for f in classes["XAIExplainerTest"].body if isinstance(f, ast.FunctionDef)]
    assert "runTest" in test_methods and sum(m.startswith("test_") for m in test_methods) >= 1


def test_module_metadata(tree):
    init = next(f for f in _classes(tree)["XAIExplainer"].body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
    assigned = {t.attr for n in ast.walk(init) if isinstance(n, ast.Assign) for t in n.targets
                if isinstance(t, ast.Attribute)}
    assert {"title", "categories", "contributors", "helpText", "acknowledgementText"} <= assigned
    assert "'Explainability'" in ast.unparse(init)  # ast.unparse quotes with '


def test_widget_loads_the_ui_and_binds_the_parameter_node(tree):
    source = ast.unparse(_classes(tree)["XAIExplainerWidget"])
    assert 'slicer.util.loadUI(self.resourcePath("UI/XAIExplainer.ui"))' in source.replace("'", '"')
    assert "setMRMLScene(slicer.mrmlScene)" in source
    assert "self._parameterNode.connectGui(self.ui)" in source
    assert source.count("tryWithErrorDisplay") >= 3  # Segment, Explain, Cancel


# ---- .ui <-> module <-> parameter node --------------------------------------------------------------------------

def test_every_self_ui_attribute_is_a_widget_in_the_ui(tree, ui):
    names = {w.get("name") for w in ui.iter("widget")} | {w.get("name") for w in ui.iter("layout")}
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute)
            and n.value.attr == "ui" and isinstance(n.value.value, ast.Name) and n.value.value.id == "self"}
    assert used, "the widget uses no self.ui.* (static check would be vacuous)"
    assert not used - names, f"self.ui names missing from the .ui: {sorted(used - names)}"


def test_slicer_parameter_names_are_fields_of_the_parameter_node(tree, ui):
    fields = _parameter_fields(tree)
    bindings = _ui_bindings(ui)
    assert not set(bindings) - set(fields), f"unknown SlicerParameterName(s): {sorted(set(bindings) - set(fields))}"
    # method, device (menus filled at run time: registry labels, devices present) and the per-method option JSON
    # are bound by the widget's own code
    by_code = {"method", "device", "methodOptions"}
    unbound = set(fields) - set(bindings) - by_code
    assert not unbound, f"parameter fields without a widget: {sorted(unbound)}"
    source = ast.unparse(tree)
    assert all(f"p.{name}" in source or f"parameterNode.{name}" in source for name in by_code)


def test_bound_widgets_match_the_field_types_slicer_can_connect(tree, ui):
    """Mirrors Slicer's guiConnectors: a mismatch raises 'Unable to create GUI connector' when the module opens."""
    fields = _parameter_fields(tree)
    for parameter, (widget_class, widget_name) in _ui_bindings(ui).items():
        annotation = ast.unparse(fields[parameter].annotation)
        base = re.sub(r"^Annotated\[(\w+),.*\]$", r"\1", annotation)
        if widget_class == "qMRMLNodeComboBox":
            ok = base.startswith("vtkMRML")
        elif widget_class == "ctkPathLineEdit":
            ok = base == "Path"
        elif widget_class == "QComboBox":
            ok = "Choice(" in annotation
        elif widget_class == "QSpinBox":
            ok = base == "int"
        elif widget_class in ("QDoubleSpinBox", "ctkSliderWidget"):
            ok = base == "float" and (widget_class == "QDoubleSpinBox" or "WithinRange(" in annotation)
        elif widget_class == "QCheckBox":
            ok = base == "bool"
        elif widget_class == "QLineEdit":
            ok = base == "str"
        else:
            ok = False
        assert ok, f"{widget_name} ({widget_class}) cannot bind '{parameter}: {annotation}'"


def test_ui_has_the_sections_and_controls_of_the_issue(ui):
    widgets = {w.get("name"): w.get("class") for w in ui.iter("widget")}
    titles = {w.find("property[@name='text']/string").text for w in ui.iter("widget")
              if w.get("class") == "ctkCollapsibleButton"}
    assert titles == {"Input", "Segment", "Explain", "Results"}
    assert widgets["progressBar"] == "QProgressBar" and widgets["cancelButton"] == "QPushButton"
    assert widgets["topKSliderWidget"] == "ctkSliderWidget" and widgets["modelPathLineEdit"] == "ctkPathLineEdit"
    # every node selector gets the scene from the module widget
    receivers = {c.find("receiver").text for c in ui.iter("connection") if c.find("slot").text == "setMRMLScene(vtkMRMLScene*)"}
    assert receivers == {n for n, c in widgets.items() if c == "qMRMLNodeComboBox"}


# ---- imports -------------------------------------------------------------------------------------------------------

def _top_level_imports(tree: ast.Module) -> set[str]:
    found: set[str] = set()

    def visit(statements):
        for node in statements:
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module.split(".")[0])
            elif isinstance(node, (ast.If, ast.Try, ast.With)):  # still executed at import time
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit(getattr(node, field, []) or [])
            elif isinstance(node, ast.ExceptHandler):
                visit(node.body)

    visit(tree.body)
    return found


def test_no_top_level_torch_or_monai(tree):
    imports = _top_level_imports(tree)
    assert "slicer" in imports  # sanity: the walk sees the real imports
    assert not imports & {"torch", "monai", "captum", "shap"}


def test_library_modules_the_module_imports_at_load_time_stay_light():
    code = ("import sys, XAIExplainerLib.background, XAIExplainerLib.progress, XAIExplainerLib.pipelines.agg2exp_io; "
            "heavy = sorted(m for m in ('torch', 'monai', 'slicer', 'qt', 'vtk') if m in sys.modules); "
            "print(heavy); sys.exit(1 if heavy else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# ---- method menu ----------------------------------------------------------------------------------------------

def test_the_module_lists_no_method_names(tree):
    """The menu comes from the registry; the only method name in the module is the parameter node's default."""
    from XAIExplainerLib.attribution.registry import available_methods

    names = {spec.name for spec in available_methods("segmentation")}
    product = [n for n in tree.body if not (isinstance(n, ast.ClassDef) and n.name == "XAIExplainerTest")]
    literals = {n.value for part in product for n in ast.walk(part) if isinstance(n, ast.Constant) and n.value in names}
    assert literals == {ast.literal_eval(_parameter_fields(tree)["method"].value)}  # the default, nothing else
    assert "METHODS" not in {t.id for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                             for t in ([n.target] if isinstance(n, ast.AnnAssign) else n.targets)
                             if isinstance(t, ast.Name)}


def test_parameter_node_observer_never_writes_the_parameter_node(tree):
    """Loading a scene modifies the parameter node; an observer that reapplied method defaults then overwrote the
    saved options. Defaults may only follow the user's own choice (the combo box's ``activated`` signal)."""
    widget = _classes(tree)["XAIExplainerWidget"]
    observer = next(f for f in widget.body if isinstance(f, ast.FunctionDef) and f.name == "_onParameterNodeModified")
    writes = [ast.unparse(t) for n in ast.walk(observer) for t in getattr(n, "targets", [])
              if isinstance(t, ast.Attribute)]
    calls = {n.func.attr for n in ast.walk(observer) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    assert not writes and not calls & {"applyMethodDefaults", "setMethodOption"}, (writes, calls)
    source = ast.unparse(widget)
    assert '"activated(int)", self.onMethodActivated' in source.replace("'", '"')


# ---- packaging -----------------------------------------------------------------------------------------------------

def test_cmake_lists_every_module_file():
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    listed = set(re.findall(r"^\s+([\w./-]+\.\w+)\s*$", cmake, re.MULTILINE))
    on_disk = {p.relative_to(MODULE_DIR).as_posix() for p in MODULE_DIR.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
               and p.name != "CMakeLists.txt" and not any(part.startswith(".") for part in p.parts)}
    assert on_disk == listed
    assert "slicerMacroBuildScriptedModule" in cmake and "WITH_GENERIC_TESTS" in cmake


def test_extension_index_entry_and_icons():
    import json

    entry = json.loads((ROOT / "Resources" / "XAIExplainer.json").read_text())
    assert entry["build_dependencies"] == ["PyTorch"] and entry["category"] and entry["scm_revision"] == "main"
    assert "REPLACE-WITH-OWNER" in entry["scm_url"]  # placeholder until the repository is published
    assert entry["category"] == "Segmentation"
    from PIL import Image

    for icon in (MODULE_DIR / "Resources/Icons/XAIExplainer.png", ROOT / "Resources/Icons/XAIExplainer.png"):
        assert Image.open(icon).size == (128, 128)


# ---- progress lines and pure helpers -------------------------------------------------------------------------------

def test_progress_lines_round_trip(capsys):
    from XAIExplainerLib.progress import cli_progress, parse_progress_line

    report, close = cli_progress(True)
    sent = [(0.0, "preprocessing"), (0.1234, "SmoothGrad sample 3 / 20"), (1.0, "done"), (1.7, "over"), (-2, "")]
    for fraction, message in sent:
        report(fraction, message)
    close()
    lines = capsys.readouterr().out.splitlines()
    parsed = [parse_progress_line(line) for line in lines]
    assert parsed == [(0.0, "preprocessing"), (0.1234, "SmoothGrad sample 3 / 20"), (1.0, "done"), (1.0, "over"),
                      (0.0, "")]
    for other in ("wrote out.nii.gz (labels: 0=background)", "PROGRESS", "PROGRESS nan x", "PROGRESS abc x", ""):
        assert parse_progress_line(other) is None


def test_parse_classes(tree):
    parse = _pure_function(tree, "parseClasses")
    assert parse("") == [] and parse("  ") == []
    assert parse("liver spleen") == ["liver", "spleen"]
    assert parse("left kidney, 3 ,spleen") == ["left kidney", "3", "spleen"]


def test_slicer_start_loads_no_simpleitk_torch_or_monai():
    """Slicer imports every scripted module at start: the module file and ``import XAIExplainerLib`` must not pull
    SimpleITK (slow), torch or MONAI. (slicer-core's own ``import slicer`` loads torch, so for the module file only
    SimpleITK/MONAI are checked; the library import is checked for all three.)"""
    code = ("import sys; sys.path.insert(0, 'Testing'); import XAIExplainerLib; "
            "bare = sorted(m for m in ('SimpleITK', 'torch', 'monai') if m in sys.modules); "
            "import slicer_standins; slicer_standins.load_module(); "
            "module = sorted(m for m in ('SimpleITK', 'monai') if m in sys.modules); "
            "print(bare, module); sys.exit(1 if bare or module else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
