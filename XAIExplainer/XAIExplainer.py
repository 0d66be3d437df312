"""XAIExplainer: segment a volume with a 3D network and explain the segmentation (Agg2Exp) inside 3D Slicer.

The module follows Slicer's scripted-module template: a typed parameter node bound to the ``.ui`` through
``SlicerParameterName`` properties, a widget that only wires the GUI, and a logic usable from the Python console.
The heavy work (torch, MONAI) never runs in Slicer's process: the logic starts
``PythonSlicer -m XAIExplainerLib.cli segment|explain ... --progress-lines`` as a child process, polls its output
from a ``qt.QTimer`` for the progress bar, and turns the files it writes into MRML nodes with
``XAIExplainerLib.slicer_bridge``. torch and MONAI are therefore never imported at the top level.
"""
from __future__ import annotations

import csv
import importlib.util
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import qt
import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, Decimals, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


def _libraryParentFolder() -> Path:
    """The folder that contains the ``XAIExplainerLib`` package, added to ``sys.path`` when missing.

    In an installed extension the package is installed next to this file (qt-scripted-modules/XAIExplainerLib),
    a folder Slicer already puts on ``sys.path``; in a source checkout it is a sibling of the module's folder.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here, here.parent):
        if (candidate / "XAIExplainerLib" / "__init__.py").is_file():
            if str(candidate) not in sys.path:
                sys.path.insert(0, str(candidate))
            return candidate
    raise ImportError(
        f"XAIExplainerLib was found neither in '{here}' nor in '{here.parent}'; reinstall the XAIExplainer extension."
    )


LIBRARY_FOLDER = _libraryParentFolder()

from XAIExplainerLib.background import BackgroundCommand  # noqa: E402 (needs the path set above; Qt-, torch-free)


#
# Attribution methods: the one table to extend when a method is added
#


@dataclass(frozen=True)
class MethodSpec:
    """How the module offers one attribution method of ``XAIExplainerLib.attribution.ATTRIBUTION_METHODS``.

    ``samplesLabel``/``samplesDefault`` describe the CLI's ``--samples`` option (samples, steps or coalitions;
    ``None`` when the method has none); ``parameters`` maps a method keyword (sent as ``--param key=value``) to
    ``(parameter-node field, default)``. Defaults are the ones of the papers the methods come from.
    """

    label: str
    description: str
    samplesLabel: Optional[str] = None
    samplesDefault: Optional[int] = None
    parameters: dict = field(default_factory=dict)


METHODS: dict[str, MethodSpec] = {
    "vanilla_gradient": MethodSpec(
        "Vanilla gradient", "Gradient of the class score with respect to the input (Simonyan et al., 2014)."),
    "smoothgrad": MethodSpec(
        "SmoothGrad", "Gradients averaged over noisy copies of the input (Smilkov et al., 2017): n = 20, "
        "noise sigma = 0.1 of the intensity range.", "Samples", 20, {"noise_level": ("noiseLevel", 0.1)}),
    "integrated_gradients": MethodSpec(
        "Integrated Gradients", "Gradients integrated along the path from a zero baseline (Sundararajan et al., "
        "2017), 20 steps.", "Steps", 20),
    "kernel_shap_cubes": MethodSpec(
        "KernelSHAP (cubes)", "Shapley values of a grid of cubic supervoxels (Lundberg & Lee, 2017): 512 cubes, "
        "1000 coalitions.", "Coalitions", 1000, {"n_cubes": ("nCubes", 512)}),
    "kernel_shap_semantic": MethodSpec(
        "KernelSHAP (semantic)", "Shapley values of the predicted segments as supervoxels (Agg2Exp): 200 "
        "coalitions.", "Coalitions", 200),
}

#: pip name per importable module, installed on first use. torch comes from the PyTorch extension; numpy, VTK and
#: SimpleITK belong to Slicer and are pinned (never upgraded or reinstalled) during the install.
PIP_DEPENDENCIES: dict[str, str] = {
    "monai": "monai",
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
    "networkx": "networkx",
    "matplotlib": "matplotlib",
    "tqdm": "tqdm",
}
SLICER_OWNED_PACKAGES = ("numpy", "SimpleITK", "vtk")


def parseClasses(text: str) -> list[str]:
    """Class names or indices typed by the user: comma-separated (names may contain spaces), else space-separated."""
    text = (text or "").strip()
    if not text:
        return []
    parts = text.split(",") if "," in text else text.split()
    return [p.strip() for p in parts if p.strip()]


def parseLabelSummary(lines: list[str]) -> dict[int, str]:
    """Label names from the segment command's ``wrote <file> (labels: 0=background, 1=liver)`` line."""
    for line in reversed(lines):
        head, sep, tail = line.rpartition("(labels: ")
        if not sep or not head.startswith("wrote ") or not tail.endswith(")"):
            continue
        names: dict[int, str] = {}
        for item in tail[:-1].split(", "):
            value, eq, name = item.partition("=")
            if eq and value.strip().isdigit():
                names[int(value)] = name
        return names
    return {}


#
# XAIExplainer
#


class XAIExplainer(ScriptedLoadableModule):
    """Uses ScriptedLoadableModule base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("XAI Explainer")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Explainability")]
        self.parent.dependencies = []
        self.parent.contributors = ["XAIExplainer developers"]
        self.parent.helpText = _("""
Segment a CT or MRI volume with a 3D network (Swin UNETR state dict, MONAI bundle or TorchScript) and explain
the segmentation with Agg2Exp: voxel attributions (vanilla gradient, SmoothGrad, Integrated Gradients, KernelSHAP)
of every class, aggregated into a region-of-interest importance matrix and graph.
Results are heatmap volumes (diverging colours, zero transparent), a volume rendering, a table and chart of the
RoI importance, and the RoI graph drawn on the anatomy in the 3D view. Every result node carries its provenance
(method, parameters, seed, model hash) as node attributes.
The computation runs in a background process: Slicer stays responsive and Cancel stops it.
""")
        self.parent.acknowledgementText = _("""
Agg2Exp aggregates voxel attributions over regions of interest to explain 3D segmentation networks.
Built on MONAI, PyTorch, SimpleITK and 3D Slicer; the Slicer module follows Slicer's scripted module template.
""")


#
# XAIExplainerParameterNode
#


@parameterNodeWrapper
class XAIExplainerParameterNode:
    """The module's state, saved with the scene.

    inputVolume - the volume to segment / explain (never modified).
    modelPath - weights (.pt + JSON), MONAI bundle folder or TorchScript file.
    device - where the network runs.
    outputSegmentation - where the Segment button puts its result (a new node when empty).
    method, nSamples, noiseLevel, nCubes, seed - the attribution method and its parameters (see METHODS).
    classes - class names or indices to explain (empty: every class of the model).
    roiSegmentation - regions for the importance matrix (atlas, ground truth); empty: the predicted segments.
    variant - which attribution mass the matrix counts.
    computeMetrics - also compute faithfulness, sensitivity and complexity (slower).
    topK, graphThreshold - which edges the RoI graph draws (0 = no top-k limit); changes redraw the graph.
    heatmapVolume - the heatmap shown over the input.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    modelPath: Path
    device: Annotated[str, Choice(["auto", "cpu", "cuda:0"])] = "auto"
    outputSegmentation: vtkMRMLSegmentationNode
    method: Annotated[str, Choice(list(METHODS))] = "smoothgrad"
    classes: str = ""
    nSamples: Annotated[int, WithinRange(1, 100000)] = 20
    noiseLevel: Annotated[float, WithinRange(0.0, 1.0), Decimals(3)] = 0.1
    nCubes: Annotated[int, WithinRange(8, 100000)] = 512
    seed: Annotated[int, WithinRange(0, 2**31 - 1)] = 0
    roiSegmentation: vtkMRMLSegmentationNode
    variant: Annotated[str, Choice(["absolute", "positive", "negative", "mean"])] = "absolute"
    computeMetrics: bool = False
    topK: Annotated[float, WithinRange(0, 50), Decimals(0)] = 0
    graphThreshold: Annotated[float, WithinRange(0.0, 1.0), Decimals(2)] = 0.8
    heatmapVolume: vtkMRMLScalarVolumeNode


#
# XAIExplainerWidget
#


class XAIExplainerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Uses ScriptedLoadableModuleWidget base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._lastMethod = None
        self._results: Optional[dict] = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/XAIExplainer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        self.uiWidget = uiWidget
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = XAIExplainerLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.explainButton.connect("clicked(bool)", self.onExplainButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.topKSliderWidget.connect("valueChanged(double)", self.onGraphSettingsChanged)
        self.ui.graphThresholdSliderWidget.connect("valueChanged(double)", self.onGraphSettingsChanged)
        self.ui.heatmapSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onHeatmapSelected)
        self.ui.compareButton.connect("clicked(bool)", self.onCompareButton)
        # only heatmaps (tagged by the bridge's provenance) are offered in the Results section
        self.ui.heatmapSelector.addAttribute("vtkMRMLScalarVolumeNode", "XAIExplainer.result", "heatmap")
        self.ui.progressBar.setRange(0, 1000)
        self.ui.progressBar.setValue(0)
        self.ui.cancelButton.enabled = False

        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        if self.logic is not None:
            self.logic.cancel()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        if self.logic is not None:
            self.logic.cancel()
        self._results = None
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: Optional[XAIExplainerParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # ui element that has a SlicerParameterName property is kept in sync with the parameter node
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._lastMethod = self._parameterNode.method
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:
            return
        if p.method != self._lastMethod:
            self._lastMethod = p.method
            self.logic.applyMethodDefaults(p)
        self._updateMethodWidgets(p.method)
        self._updateButtons()

    def _updateMethodWidgets(self, method: str) -> None:
        """Show only the parameters the chosen method uses (from the METHODS table)."""
        spec = METHODS[method]
        self.ui.methodComboBox.toolTip = spec.description
        self.ui.nSamplesLabel.text = (spec.samplesLabel or _("Samples")) + ":"
        self.ui.nSamplesLabel.visible = self.ui.nSamplesSpinBox.visible = spec.samplesLabel is not None
        used = {fieldName for fieldName, _default in spec.parameters.values()}
        for fieldName in XAIExplainerLogic.methodParameterFields():
            fieldWidget = slicer.parameterNodeWrapper.findChildWidgetForParameter(self.uiWidget, fieldName)
            if fieldWidget is None:
                continue
            fieldWidget.visible = fieldName in used
            formLayout = fieldWidget.parentWidget().layout()
            label = formLayout.labelForField(fieldWidget) if hasattr(formLayout, "labelForField") else None
            if label is not None:
                label.visible = fieldName in used

    def _updateButtons(self) -> None:
        p = self._parameterNode
        running = self.logic.isRunning()
        ready = bool(p and p.inputVolume and p.modelPath and str(p.modelPath) not in ("", "."))
        self.ui.segmentButton.enabled = ready and not running
        self.ui.explainButton.enabled = ready and not running
        self.ui.cancelButton.enabled = running
        tip = "" if ready else _("Select an input volume and a model file first.")
        self.ui.segmentButton.toolTip = tip or _("Segment the input volume with the model.")
        self.ui.explainButton.toolTip = tip or _("Compute attributions, the RoI importance matrix and graph.")

    # --- actions ----------------------------------------------------------------------------------------------

    def _onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.setValue(int(round(1000 * fraction)))
        self.ui.statusLabel.text = message

    def _started(self, what: str) -> None:
        self.ui.progressBar.setValue(0)
        self.ui.statusLabel.text = _("{what}: starting (loading the model can take a while)").format(what=what)
        self._updateButtons()

    def _finished(self, result, error: Optional[str]) -> None:
        self._updateButtons()
        if error is not None:
            self.ui.statusLabel.text = _("Failed")
            slicer.util.errorDisplay(_("XAIExplainer failed: {error}").format(error=error), windowTitle="XAIExplainer")
            return
        self.ui.progressBar.setValue(1000)
        if isinstance(result, dict):  # an explanation
            self._results = result
            self.ui.resultsCollapsibleButton.collapsed = False
            first = next((n for k, n in result.items() if k.startswith("heatmap:")), None)
            if first is not None:
                self._parameterNode.heatmapVolume = first
            self.ui.statusLabel.text = _("Done: {n} heatmaps, RoI table and graph added to the scene.").format(
                n=sum(1 for k in result if k.startswith("heatmap:")))
        elif result is not None:  # a segmentation
            self._parameterNode.outputSegmentation = result
            self.ui.statusLabel.text = _("Done: segmentation '{name}'.").format(name=result.GetName())

    def onSegmentButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start the segmentation."), waitCursor=True):
            self.logic.ensureDependencies()
            p = self._parameterNode
            self.logic.segment(p.inputVolume, p.modelPath, device=p.device, outputSegmentation=p.outputSegmentation,
                               onProgress=self._onProgress, onFinished=self._finished)
            self._started(_("Segment"))

    def onExplainButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start the explanation."), waitCursor=True):
            self.logic.ensureDependencies()
            p = self._parameterNode
            self.logic.explain(
                p.inputVolume, p.modelPath, method=p.method, classes=parseClasses(p.classes),
                nSamples=p.nSamples, methodParameters=self.logic.methodParameters(p),
                roiSegmentation=p.roiSegmentation, computeMetrics=p.computeMetrics, seed=p.seed,
                variant=p.variant, graphTopK=int(p.topK), graphThreshold=p.graphThreshold, device=p.device,
                onProgress=self._onProgress, onFinished=self._finished)
            self._started(_("Explain"))

    def onCancelButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to cancel."), waitCursor=True):
            self.logic.cancel()
            self.ui.statusLabel.text = _("Cancelled")
            self.ui.progressBar.setValue(0)
            self._updateButtons()

    def onGraphSettingsChanged(self, value=None) -> None:
        if not self._results or "graph" not in self._results:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to redraw the RoI graph."), waitCursor=True):
            self.logic.updateGraph(self._results, int(self.ui.topKSliderWidget.value),
                                   float(self.ui.graphThresholdSliderWidget.value))

    def onHeatmapSelected(self, node) -> None:
        if node is None or not node.GetAttribute("XAIExplainer.result") == "heatmap":
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to show the heatmap."), waitCursor=True):
            self.logic.showHeatmap(node, self._parameterNode.inputVolume if self._parameterNode else None)

    def onCompareButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to show the heatmap comparison."), waitCursor=True):
            heatmaps = self.logic.heatmapNodes(self._results)
            if not heatmaps:
                raise ValueError(_("No heatmaps to compare: run Explain first."))
            background = self._parameterNode.inputVolume if self._parameterNode else None
            if background is None:
                raise ValueError(_("Select the input volume the heatmaps explain."))
            self.logic.showComparison(heatmaps, background)


#
# XAIExplainerLogic
#


class _Task:
    """One running CLI command, what to do with its files when it succeeds, and whom to tell."""

    def __init__(self, command: BackgroundCommand, load: Callable[[BackgroundCommand], Any], workDir: Path,
                 keepWorkDir: bool, onProgress: Optional[Callable[[float, str], None]], onFinished: Optional[Callable]) -> None:
        self.command = command
        self.load = load
        self.workDir = workDir
        self.keepWorkDir = keepWorkDir
        self.onProgress = onProgress
        self.onFinished = onFinished


class XAIExplainerLogic(ScriptedLoadableModuleLogic):
    """Segment and explain without the GUI, e.g. from the Python console::

        logic = slicer.modules.xaiexplainer.widgetRepresentation().self().logic  # or XAIExplainerLogic()
        seg = logic.segment(volumeNode, "/path/model.pt", wait=True)
        nodes = logic.explain(volumeNode, "/path/model.pt", method="smoothgrad", wait=True)

    Without ``wait`` the call returns at once and ``onFinished(result, errorMessage)`` is called later from the
    Qt event loop. Input nodes are only read (written to a temporary NIfTI file for the background process).
    """

    POLL_INTERVAL_MS = 200

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._task: Optional[_Task] = None
        self._timer: Optional[qt.QTimer] = None

    def getParameterNode(self):
        return XAIExplainerParameterNode(super().getParameterNode())

    # --- methods table helpers --------------------------------------------------------------------------------

    @staticmethod
    def methodParameterFields() -> list[str]:
        """Every parameter-node field that some method uses (so the GUI can hide the unused ones)."""
        return sorted({f for spec in METHODS.values() for f, _d in spec.parameters.values()})

    @staticmethod
    def applyMethodDefaults(parameterNode) -> None:
        """Reset the sample count and the method's own parameters to the defaults of its paper."""
        spec = METHODS[parameterNode.method]
        with slicer.util.NodeModify(parameterNode.parameterNode):
            if spec.samplesDefault is not None:
                parameterNode.nSamples = spec.samplesDefault
            for fieldName, default in spec.parameters.values():
                setattr(parameterNode, fieldName, default)

    @staticmethod
    def methodParameters(parameterNode) -> dict:
        """``{method keyword: value}`` for the chosen method, read from the parameter node."""
        spec = METHODS[parameterNode.method]
        return {key: getattr(parameterNode, fieldName) for key, (fieldName, _d) in spec.parameters.items()}

    # --- dependencies -----------------------------------------------------------------------------------------

    def ensureDependencies(self, askConfirmation: bool = True) -> None:
        """Install what the background process needs, once: torch via the PyTorch extension, the rest via pip.

        Slicer's own numpy, VTK and SimpleITK are pinned to their installed versions during the pip install, so a
        dependency can never replace them.
        """
        if importlib.util.find_spec("torch") is None:
            try:
                import PyTorchUtils
            except ModuleNotFoundError:
                raise RuntimeError(_("XAIExplainer needs the PyTorch extension: install 'PyTorch' from the "
                                     "Extensions Manager and restart Slicer.")) from None
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            if not torchLogic.torchInstalled():
                torch = torchLogic.installTorch(askConfirmation=askConfirmation)
                if torch is None:
                    raise RuntimeError(_("PyTorch is required; it was not installed. Install it with the PyTorch "
                                         "module (Utilities > PyTorch) and try again."))
        missing = [pipName for module, pipName in PIP_DEPENDENCIES.items() if importlib.util.find_spec(module) is None]
        if not missing:
            return
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                _("XAIExplainer needs these Python packages, which will be downloaded and installed now: {p}.")
                .format(p=", ".join(missing)), windowTitle="XAIExplainer"):
            raise RuntimeError(_("Missing Python packages: {p}.").format(p=", ".join(missing)))
        from importlib.metadata import PackageNotFoundError, version

        constraints = Path(slicer.util.tempDirectory("XAIExplainer-pip")) / "constraints.txt"
        pins = []
        for name in SLICER_OWNED_PACKAGES:
            try:
                pins.append(f"{name}=={version(name)}")
            except PackageNotFoundError:  # shipped without pip metadata (Slicer's VTK): nothing pip could replace
                logging.debug(f"XAIExplainer: no version metadata for {name}; not pinned")
        constraints.write_text("\n".join(pins) + "\n")
        slicer.util.pip_install([*missing, "-c", str(constraints)])
        importlib.invalidate_caches()

    # --- background process -----------------------------------------------------------------------------------

    @staticmethod
    def pythonSlicerExecutable() -> str:
        """Slicer's own Python launcher (sets Slicer's library paths for the child process)."""
        executable = shutil.which("PythonSlicer")
        if not executable and getattr(slicer, "app", None) is not None:
            candidate = Path(slicer.app.applicationDirPath()) / ("PythonSlicer.exe" if os.name == "nt" else
                                                                  "PythonSlicer")
            executable = str(candidate) if candidate.exists() else None
        if not executable:
            raise RuntimeError(_("PythonSlicer was not found next to Slicer; reinstall Slicer."))
        return executable

    @staticmethod
    def processEnvironment() -> dict:
        """Slicer's startup environment with the library's folder on PYTHONPATH."""
        env = dict(slicer.util.startupEnvironment())
        paths = [str(LIBRARY_FOLDER)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def isRunning(self) -> bool:
        """True from the start of a computation until its results were loaded (or it failed / was cancelled)."""
        return self._task is not None

    def cancel(self) -> None:
        """Stop the running computation (its process and children) and discard its partial files."""
        task = self._task
        if task is None:
            return
        task.command.cancel()
        self._stopTimer()
        self._task = None
        shutil.rmtree(task.workDir, ignore_errors=True)
        logging.info("XAIExplainer: computation cancelled")

    def _stopTimer(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def _start(self, cliArgs: list, load: Callable[[BackgroundCommand], Any], workDir: Path, keepWorkDir: bool,
               onProgress, onFinished, wait: bool):
        if self.isRunning():
            raise RuntimeError(_("Another XAIExplainer computation is running; wait for it or press Cancel."))
        args = [self.pythonSlicerExecutable(), "-m", "XAIExplainerLib.cli", *[str(a) for a in cliArgs],
                "--progress-lines"]
        logging.info("XAIExplainer: running " + " ".join(args))
        command = BackgroundCommand(args, env=self.processEnvironment()).start()
        self._task = _Task(command, load, workDir, keepWorkDir, onProgress, onFinished)
        if wait:
            while command.running:
                self._pollOutput()
                slicer.app.processEvents()
                time.sleep(self.POLL_INTERVAL_MS / 1000.0)
            return self._complete(raiseErrors=True)
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._onTimer)
        self._timer.start()
        return None

    def _pollOutput(self) -> None:
        if self._task is not None:
            self._pollTask(self._task)

    @staticmethod
    def _pollTask(task: _Task) -> None:
        """Log the command's new output lines and forward its latest progress line."""
        out = task.command.poll()
        for line in out.lines:
            logging.info(f"XAIExplainer: {line}")
        if out.progress is not None and task.onProgress is not None:
            task.onProgress(*out.progress)

    def _onTimer(self) -> None:
        if self._task is None:
            self._stopTimer()
            return
        self._pollOutput()
        if not self._task.command.running:
            self._stopTimer()
            self._complete(raiseErrors=False)

    def _complete(self, raiseErrors: bool):
        """Load the outputs of the finished command into nodes (or report why it failed); clean up."""
        task, self._task = self._task, None
        if task is None:
            return None
        self._pollTask(task)
        result, error = None, None
        if task.command.cancelled:
            error = _("cancelled")
        elif task.command.returncode != 0:
            error = task.command.error_text()
        else:
            try:
                result = task.load(task.command)
            except Exception as exc:  # noqa: BLE001 - reported to the user, with the traceback in the log
                logging.exception("XAIExplainer: loading the results failed")
                error = f"{type(exc).__name__}: {exc}"
        if not task.keepWorkDir or error is not None:
            shutil.rmtree(task.workDir, ignore_errors=True)
        if task.onFinished is not None:
            task.onFinished(result, error)
        if error is not None and raiseErrors:
            raise RuntimeError(error)
        return result

    # --- inputs -----------------------------------------------------------------------------------------------

    @staticmethod
    def _checkInputs(inputVolume, modelPath) -> Path:
        if inputVolume is None:
            raise ValueError(_("Select an input volume."))
        if inputVolume.GetImageData() is None:
            raise ValueError(_("The input volume '{name}' has no voxels.").format(name=inputVolume.GetName()))
        model = Path(str(modelPath or ""))
        if not str(modelPath or "").strip() or not model.exists():
            raise ValueError(_("Select a model: a weights file (.pt with its JSON), a MONAI bundle folder or a "
                               "TorchScript file. '{path}' does not exist.").format(path=model))
        return model

    @staticmethod
    def writeInputVolume(volumeNode, path: Path) -> Path:
        """Copy the node's voxels and geometry into a NIfTI file; the node and its storage node stay untouched."""
        from XAIExplainerLib.slicer_bridge.volumes import volume_from_node
        from XAIExplainerLib.volume import write_volume

        return Path(write_volume(volume_from_node(volumeNode), path))

    @staticmethod
    def writeRoiSegmentation(segmentationNode, referenceVolume, labelsPath: Path, namesPath: Path) -> None:
        """Export the segments as a label map on the input's grid (label v = v-th segment) plus a CSV of names."""
        from XAIExplainerLib.slicer_bridge.volumes import volume_from_node
        from XAIExplainerLib.volume import write_volume

        segmentIds = vtk.vtkStringArray()
        segmentationNode.GetSegmentation().GetSegmentIDs(segmentIds)
        if segmentIds.GetNumberOfValues() == 0:
            raise ValueError(_("The RoI segmentation '{name}' has no segments.").format(name=segmentationNode.GetName()))
        labelNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "XAIExplainer RoIs (temporary)")
        try:
            if not slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(
                    segmentationNode, segmentIds, labelNode, referenceVolume):
                raise RuntimeError(_("Could not export '{name}' to a label map on the input's grid.")
                                   .format(name=segmentationNode.GetName()))
            write_volume(volume_from_node(labelNode), labelsPath)
        finally:
            slicer.mrmlScene.RemoveNode(labelNode)
        segmentation = segmentationNode.GetSegmentation()
        with open(namesPath, "w", newline="") as f:
            writer = csv.writer(f)
            for i in range(segmentIds.GetNumberOfValues()):
                writer.writerow([i + 1, segmentation.GetSegment(segmentIds.GetValue(i)).GetName()])

    # --- segment ----------------------------------------------------------------------------------------------

    def segment(self, inputVolume, modelPath, device: str = "auto", outputSegmentation=None,
                onProgress: Optional[Callable[[float, str], None]] = None, onFinished: Optional[Callable] = None,
                wait: bool = False):
        """Segment ``inputVolume`` in the background; the result is a segmentation node (``outputSegmentation``
        is emptied and reused when given). With ``wait`` the node is returned, else passed to ``onFinished``."""
        model = self._checkInputs(inputVolume, modelPath)
        workDir = Path(slicer.util.tempDirectory("XAIExplainer-segment"))
        inputFile = self.writeInputVolume(inputVolume, workDir / "input.nii.gz")
        labelsFile = workDir / "labels.nii.gz"
        args = ["segment", "--input", inputFile, "--model", model, "--output", labelsFile, "--device", device]

        def load(command: BackgroundCommand):
            from XAIExplainerLib.volume import read_volume

            names = parseLabelSummary(command.output)
            return self.labelsToSegmentation(read_volume(labelsFile), names, inputVolume, outputSegmentation,
                                             {"XAIExplainer.model": str(model), "XAIExplainer.device": device})

        return self._start(args, load, workDir, False, onProgress, onFinished, wait)

    @staticmethod
    def labelsToSegmentation(labels, names: dict, referenceVolume, segmentationNode=None,
                             attributes: Optional[dict] = None):
        """A label :class:`~XAIExplainerLib.volume.Volume` as a segmentation node, segments named by ``names``."""
        from XAIExplainerLib.slicer_bridge.explanation import add_segmentation_node

        top = int(labels.array.max()) if labels.array.size else 0
        labelNames = [names.get(v, "background" if v == 0 else f"label {v}") for v in range(top + 1)]
        baseName = f"{referenceVolume.GetName()} segmentation"
        newNode = add_segmentation_node(labels, labelNames, baseName)
        newNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolume)
        for key, value in (attributes or {}).items():
            newNode.SetAttribute(key, value)
        if segmentationNode is None:
            return newNode
        # reuse the node the user chose: replace its segments, keep its name and display settings
        segmentationNode.GetSegmentation().RemoveAllSegments()
        segmentationNode.GetSegmentation().DeepCopy(newNode.GetSegmentation())
        for key, value in (attributes or {}).items():
            segmentationNode.SetAttribute(key, value)
        slicer.mrmlScene.RemoveNode(newNode)
        segmentationNode.CreateDefaultDisplayNodes()
        return segmentationNode

    # --- explain ----------------------------------------------------------------------------------------------

    def explain(self, inputVolume, modelPath, method: str = "smoothgrad", classes: Optional[list] = None,
                nSamples: Optional[int] = None, methodParameters: Optional[dict] = None, roiSegmentation=None,
                computeMetrics: bool = False, seed: int = 0, variant: str = "absolute", graphTopK: int = 0,
                graphThreshold: float = 0.8, device: str = "auto",
                onProgress: Optional[Callable[[float, str], None]] = None, onFinished: Optional[Callable] = None,
                wait: bool = False):
        """Explain the model's segmentation of ``inputVolume`` with Agg2Exp in the background.

        The result (returned with ``wait``, else passed to ``onFinished``) is the dict of
        ``XAIExplainerLib.slicer_bridge.explanation.add_explanation_to_scene`` plus "folder" (the saved
        explanation: heatmaps, matrix, graph, figures, provenance). ``graphTopK`` = 0 draws all edges that the
        threshold keeps.
        """
        if method not in METHODS:
            raise ValueError(_("Unknown method '{m}'; choose one of {all}.").format(m=method, all=", ".join(METHODS)))
        model = self._checkInputs(inputVolume, modelPath)
        spec = METHODS[method]
        workDir = Path(slicer.util.tempDirectory("XAIExplainer-explain"))
        inputFile = self.writeInputVolume(inputVolume, workDir / "input.nii.gz")
        outputFolder = workDir / "explanation"
        args = ["explain", "--input", inputFile, "--model", model, "--method", method, "--output", outputFolder,
                "--variant", variant, "--seed", int(seed), "--device", device]
        if graphThreshold is not None:
            args += ["--graph-threshold", float(graphThreshold)]
        if graphTopK:
            args += ["--graph-top-k", int(graphTopK)]
        if classes:
            args += ["--classes", *[str(c) for c in classes]]
        if spec.samplesLabel is not None:
            args += ["--samples", int(nSamples if nSamples is not None else spec.samplesDefault)]
        for key, value in (methodParameters or {}).items():
            args += ["--param", f"{key}={value}"]
        if computeMetrics:
            args.append("--metrics")
        if roiSegmentation is not None:
            roisFile, namesFile = workDir / "rois.nii.gz", workDir / "roi_names.csv"
            self.writeRoiSegmentation(roiSegmentation, inputVolume, roisFile, namesFile)
            args += ["--rois", roisFile, "--roi-names", namesFile]

        def load(command: BackgroundCommand):
            return self.loadExplanation(outputFolder, inputVolume, inputFile, graphTopK or None, graphThreshold)

        return self._start(args, load, workDir, True, onProgress, onFinished, wait)

    @staticmethod
    def loadExplanation(folder: Path, inputVolume, inputFile: Path, graphTopK: Optional[int] = None,
                        graphThreshold: Optional[float] = 0.8) -> dict:
        """Nodes for a folder written by ``xai-explainer explain`` (heatmaps over ``inputVolume``, table, graph)."""
        from XAIExplainerLib.pipelines.agg2exp_io import load_explanation
        from XAIExplainerLib.slicer_bridge.explanation import add_explanation_to_scene
        from XAIExplainerLib.volume import read_volume

        explanation = load_explanation(folder, image=read_volume(inputFile))
        nodes = add_explanation_to_scene(explanation, input_node=inputVolume,
                                         name=f"{inputVolume.GetName()} {explanation.provenance.get('method', '')}",
                                         top_k=graphTopK, threshold=graphThreshold)
        for key, node in nodes.items():
            if key.startswith("heatmap:"):
                node.SetAttribute("XAIExplainer.folder", str(folder))
        nodes["folder"] = Path(folder)
        if getattr(slicer, "app", None) is not None and "chart" in nodes:
            slicer.modules.plots.logic().ShowChartInLayout(nodes["chart"])
        return nodes

    # --- results ----------------------------------------------------------------------------------------------

    @staticmethod
    def updateGraph(results: dict, topK: int, threshold: float) -> None:
        """Redraw the RoI graph of an explanation for a new top-k (0 = no limit) and mass threshold."""
        from XAIExplainerLib.slicer_bridge.graph import update_roi_graph

        update_roi_graph(results["graph"], top_k=int(topK) or None, threshold=float(threshold))

    @staticmethod
    def showHeatmap(heatmapNode, backgroundNode=None) -> None:
        """Overlay ``heatmapNode`` (symmetric window, diverging colours) on ``backgroundNode`` in the slice views."""
        from XAIExplainerLib.slicer_bridge.heatmaps import show_heatmap

        show_heatmap(heatmapNode, backgroundNode)

    @staticmethod
    def heatmapNodes(results: Optional[dict] = None) -> list:
        """The heatmaps of ``results`` (an explanation's nodes), else every heatmap the module put in the scene."""
        if results:
            nodes = [n for k, n in results.items() if k.startswith("heatmap:") and n.GetScene() is not None]
            if nodes:
                return nodes
        return [n for n in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                if n.GetAttribute("XAIExplainer.result") == "heatmap"]

    @staticmethod
    def showComparison(heatmapNodes: list, backgroundNode, labels: Optional[list] = None,
                       orientation: str = "Axial"):
        """Show the heatmaps side by side over ``backgroundNode`` in linked slice views (one per heatmap).

        Returns the bridge's ComparisonLayout (slice node ids, composite nodes, layout id).
        """
        from XAIExplainerLib.slicer_bridge.comparison import comparison_layout

        return comparison_layout(list(heatmapNodes), backgroundNode, labels=labels, orientation=orientation)


#
# XAIExplainerTest
#


class XAIExplainerTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Developer mode > Reload and Test): segments and explains a synthetic volume with a tiny
    TorchScript threshold model, through the logic and the background process."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()
        import tempfile

        self.tempDir = Path(tempfile.mkdtemp(prefix="XAIExplainerTest-"))

    def tearDown(self) -> None:
        shutil.rmtree(self.tempDir, ignore_errors=True)

    def runTest(self) -> None:
        self.setUp()
        self.test_XAIExplainerSegment()
        self.setUp()
        self.test_XAIExplainerExplain()

    def _thresholdModel(self) -> Path:
        """TorchScript network: class 1 ("dense") where the CT is brighter than 0 HU, plus its model JSON."""
        import json

        import torch

        class ThresholdNet(torch.nn.Module):
            def forward(self, x):
                return torch.cat([torch.zeros_like(x), 40 * (x - 0.5)], dim=1)

        path = self.tempDir / "threshold.ts"
        torch.jit.trace(ThresholdNet(), torch.zeros(1, 1, 32, 32, 32)).save(str(path))
        (self.tempDir / "threshold.json").write_text(json.dumps({
            "label_names": ["background", "dense"], "modality": "CT", "spacing": [2.0, 2.0, 2.0],
            "roi_size": [32, 32, 32]}))
        return path

    def _sphereVolume(self):
        """32^3 volume at 2 mm: a 200 HU ball of radius 16 mm in -500 HU; returns (node, expected mask)."""
        import numpy as np

        z, y, x = np.mgrid[:32, :32, :32]
        ball = ((x - 15.5) ** 2 + (y - 15.5) ** 2 + (z - 15.5) ** 2) <= 8.0 ** 2
        array = np.where(ball, 200.0, -500.0).astype(np.int16)
        node = slicer.util.addVolumeFromArray(array, ijkToRAS=np.diag([2.0, 2.0, 2.0, 1.0]),
                                              name="XAIExplainerTestCT")
        return node, ball

    def test_XAIExplainerSegment(self) -> None:
        import numpy as np

        self.delayDisplay("Segmenting a synthetic volume")
        logic = XAIExplainerLogic()
        logic.ensureDependencies()
        model = self._thresholdModel()
        volumeNode, ball = self._sphereVolume()
        before = slicer.util.arrayFromVolume(volumeNode).copy()

        progress = []
        segmentation = logic.segment(volumeNode, model, device="cpu", wait=True,
                                     onProgress=lambda f, m: progress.append(f))

        self.assertIsNotNone(segmentation)
        segments = segmentation.GetSegmentation()
        self.assertEqual(segments.GetNumberOfSegments(), 1)
        segmentId = segments.GetNthSegmentID(0)
        self.assertEqual(segments.GetSegment(segmentId).GetName(), "dense")
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volumeNode) > 0
        dice = 2.0 * np.logical_and(mask, ball).sum() / (mask.sum() + ball.sum())
        self.assertGreater(dice, 0.95)
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(volumeNode), before), "input node was modified")
        self.assertTrue(progress and max(progress) == 1.0, "no progress lines were received")
        self.delayDisplay("Segment test passed")

    def test_XAIExplainerExplain(self) -> None:
        import numpy as np

        self.delayDisplay("Explaining a synthetic volume")
        logic = XAIExplainerLogic()
        logic.ensureDependencies()
        model = self._thresholdModel()
        volumeNode, ball = self._sphereVolume()

        nodes = logic.explain(volumeNode, model, method="vanilla_gradient", classes=["dense"], device="cpu",
                              wait=True)

        heatmap = nodes["heatmap:dense"]
        self.assertEqual(heatmap.GetImageData().GetDimensions(), volumeNode.GetImageData().GetDimensions())
        self.assertEqual(heatmap.GetAttribute("XAIExplainer.method"), "vanilla_gradient")
        # known answer: d/dx of the sum over the predicted ball of 40 (x - 0.5) is 40 on the ball, 0 elsewhere
        values = slicer.util.arrayFromVolume(heatmap)
        self.assertTrue(np.allclose(values, np.where(ball, 40.0, 0.0), atol=1e-4))
        table = nodes["table"]
        self.assertEqual(table.GetNumberOfRows(), 1)
        logic.updateGraph(nodes, topK=1, threshold=0.5)  # the top-k slider's call
        self.delayDisplay("Explain test passed")
