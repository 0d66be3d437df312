"""XAIExplainer: segment a volume with a 3D network and explain the segmentation (Agg2Exp) inside 3D Slicer.

The module follows Slicer's scripted-module template and holds only the widget, the parameter node and calls:
installs are :mod:`XAIExplainerLib.install`, MRML import/export is :mod:`XAIExplainerLib.slicer_bridge`, the method
menu comes from the method registry through the bridge, and the heavy work (torch, MONAI) runs in a child
``PythonSlicer -m XAIExplainerLib.cli ... --progress-lines --result-json`` process polled from a ``qt.QTimer``.
Nothing of the library is imported at Slicer start (no SimpleITK, torch or MONAI load while Slicer starts).
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
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
if str(Path(__file__).resolve().parent) not in sys.path:  # Slicer puts it there; a plain import may not
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from XAIExplainerSections import SECTIONS, ProductLogic  # noqa: E402
from XAIExplainerSections.base import optionWidget, showOptionValue  # noqa: E402
DOCUMENTATION_URL = "https://github.com/REPLACE-WITH-OWNER/SlicerXAIExplainer#readme"
DEMO_SAMPLE_NAME = "XAIExplainerDemoT1"


def parseClasses(text: str) -> list[str]:
    """Class names or indices typed by the user: comma-separated (names may contain spaces), else space-separated."""
    text = (text or "").strip()
    if not text:
        return []
    parts = text.split(",") if "," in text else text.split()
    return [p.strip() for p in parts if p.strip()]


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
        self.parent.contributors = ["XAIExplainer developers (XAIExplainer project)"]
        self.parent.helpText = _("""
Segment a CT or MRI volume with a 3D network (Swin UNETR weights, MONAI bundle or TorchScript) and explain the
segmentation with Agg2Exp: voxel attributions of every class, aggregated into a region-of-interest importance
matrix and graph. Press <b>Load demo</b>, then <b>Explain</b>, for a first result.
The computation runs in a background process: Slicer stays responsive and Cancel stops it.
<b>For research only, not for clinical use.</b>
See the <a href="{url}">documentation</a> for details.
""").format(url=DOCUMENTATION_URL)
        self.parent.acknowledgementText = _("""
Agg2Exp aggregates voxel attributions over regions of interest to explain 3D segmentation networks.
Built on MONAI, PyTorch, SimpleITK and 3D Slicer. The demo T1 is the Colin27 template as distributed with MRIcron
(Copyright 2006-2010 Chris Rorden, BSD-3-clause).
""")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """Offer the demo T1 in the Sample Data module, as Slicer's extension template does."""
    import SampleData

    folder = LIBRARY_FOLDER / "XAIExplainerLib" / "Resources" / "DemoData"
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="XAIExplainer",
        sampleName=DEMO_SAMPLE_NAME,
        thumbnailFileName=str(Path(__file__).resolve().parent / "Resources" / "Icons" / "XAIExplainer.png"),
        uris=(folder / "Colin27_T1_3mm.nii.gz").as_uri(),
        fileNames="Colin27_T1_3mm.nii.gz",
        nodeNames="Colin27 T1 (XAIExplainer demo)",
        loadFileType="VolumeFile",
    )


#
# XAIExplainerParameterNode
#


@parameterNodeWrapper
class XAIExplainerParameterNode:
    """The module's state, saved with the scene.

    inputVolume - the volume to segment / explain (never modified).
    modelPath - weights (.pt + JSON), MONAI bundle folder or TorchScript file.
    device - where the network runs ("auto", "cpu", "cuda:N", "mps"; the menu lists what is present).
    outputSegmentation - where the Segment button puts its result (a new node when empty).
    method - registry name of the attribution method; methodOptions - JSON {method: {option: value}}.
    classes - class names or indices to explain (empty: every class of the model).
    roiSegmentation - regions for the importance matrix (atlas, ground truth); empty: the predicted segments.
    variant - which attribution mass the matrix counts.
    computeMetrics - also compute faithfulness, sensitivity and complexity (slower).
    topK, graphThreshold - which edges the RoI graph draws (0 = no top-k limit); changes redraw the graph.
    heatmapVolume - the heatmap shown over the input.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    modelPath: Path
    device: str = "auto"
    outputSegmentation: vtkMRMLSegmentationNode
    method: str = "smoothgrad"
    methodOptions: str = "{}"
    classes: str = ""
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
        self._results: Optional[dict] = None
        self._optionWidgets: dict[str, Any] = {}
        self._shownMethod: Optional[str] = None

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

        self.ui.loadDemoButton.connect("clicked(bool)", self.onLoadDemoButton)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.explainButton.connect("clicked(bool)", self.onExplainButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.topKSliderWidget.connect("valueChanged(double)", self.onGraphSettingsChanged)
        self.ui.graphThresholdSliderWidget.connect("valueChanged(double)", self.onGraphSettingsChanged)
        self.ui.heatmapSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onHeatmapSelected)
        self.ui.compareButton.connect("clicked(bool)", self.onCompareButton)
        self.ui.showChartButton.connect("clicked(bool)", self.onShowChartButton)
        # "activated" fires only for the user's choice, never when a loaded scene sets the parameter node: a
        # reloaded scene keeps its saved options instead of getting the new method's defaults.
        self.ui.methodComboBox.connect("activated(int)", self.onMethodActivated)
        self.ui.deviceComboBox.connect("activated(int)", self.onDeviceActivated)
        # only heatmaps (tagged by the bridge's provenance) are offered in the Results section
        self.ui.heatmapSelector.addAttribute("vtkMRMLScalarVolumeNode", "XAIExplainer.result", "heatmap")
        self.ui.progressBar.setRange(0, 1000)
        self.ui.progressBar.setValue(0)
        self.ui.cancelButton.enabled = False
        self._fillMenus()
        self.sections = [section(self) for section in SECTIONS]
        insertAt = self.uiWidget.layout().indexOf(self.ui.explainCollapsibleButton) + 1
        for offset, section in enumerate(self.sections):
            section.setup(self.uiWidget.layout(), insertAt + offset)

        self.initializeParameterNode()

    def _fillMenus(self) -> None:
        """Method labels from the registry (name kept as item data) and the compute devices actually present."""
        self.ui.methodComboBox.clear()
        for spec in self.logic.methodMenu():
            self.ui.methodComboBox.addItem(spec.label, spec.name)
            self.ui.methodComboBox.setItemData(self.ui.methodComboBox.count - 1, spec.description, qt.Qt.ToolTipRole)
        self.ui.deviceComboBox.clear()
        for device, label in self.logic.computeDevices():
            self.ui.deviceComboBox.addItem(label, device)

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
        self.logic.offerDemoModel(self._parameterNode)
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
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        """Show the parameter node's state; never changes it (a loaded scene's values are kept as saved)."""
        p = self._parameterNode
        if p is None:
            return
        self._selectItem(self.ui.methodComboBox, p.method)
        self._selectItem(self.ui.deviceComboBox, p.device)
        if p.method != self._shownMethod:
            self._buildOptionWidgets(p.method)
        self._showOptionValues()
        self._updateButtons()

    @staticmethod
    def _selectItem(comboBox, data: str) -> None:
        index = comboBox.findData(data)
        if index >= 0 and comboBox.currentIndex != index:
            wasBlocked = comboBox.blockSignals(True)
            comboBox.currentIndex = index
            comboBox.blockSignals(wasBlocked)

    def _buildOptionWidgets(self, method: str) -> None:
        """One widget per option of the method's registry entry: range, choices, label and tooltip from there."""
        layout = self.ui.methodOptionsLayout
        while layout.rowCount() > 0:
            layout.removeRow(0)
        self._optionWidgets = {}
        self._shownMethod = method
        spec = self.logic.methodSpec(method)
        if spec is None:
            return
        self.ui.methodComboBox.toolTip = f"{spec.description}\n{spec.reference}"
        for option in spec.options:
            if option.allow_array:
                continue  # arrays (e.g. a baseline volume) are for the Python API
            widget = self._optionWidget(option)
            widget.toolTip = self.logic.optionTooltip(option)
            layout.addRow(option.display_label + ":", widget)
            self._optionWidgets[option.name] = widget

    def _optionWidget(self, option):
        """A widget for one registry option (shared with the sections) that sends its value to the parameter node."""
        return optionWidget(option, self._setOption)

    def _showOptionValues(self) -> None:
        values = self.logic.methodOptionValues(self._parameterNode)
        for name, widget in self._optionWidgets.items():
            showOptionValue(widget, values.get(name))

    def _setOption(self, name: str, value) -> None:
        if self._parameterNode is not None:
            self.logic.setMethodOption(self._parameterNode, name, value)

    def onMethodActivated(self, index: int) -> None:
        """The user picked a method: it starts from its paper's defaults unless values were stored for it."""
        if self._parameterNode is not None:
            self._parameterNode.method = self.ui.methodComboBox.itemData(index)

    def onDeviceActivated(self, index: int) -> None:
        if self._parameterNode is not None:
            self._parameterNode.device = self.ui.deviceComboBox.itemData(index)

    def _updateButtons(self) -> None:
        p = self._parameterNode
        running = self.logic.isRunning()
        ready = bool(p and p.inputVolume and p.modelPath and str(p.modelPath) not in ("", "."))
        self.ui.segmentButton.enabled = ready and not running
        self.ui.explainButton.enabled = ready and not running
        self.ui.cancelButton.enabled = running
        self.ui.loadDemoButton.enabled = not running
        tip = "" if ready else _("Select an input volume and a model file first (or press Load demo).")
        self.ui.segmentButton.toolTip = tip or _("Segment the input volume with the model.")
        self.ui.explainButton.toolTip = tip or _("Compute attributions, the RoI importance matrix and graph.")
        for section in getattr(self, "sections", ()):
            section.updateButtons(running, ready)

    # --- actions ----------------------------------------------------------------------------------------------

    def _onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.setValue(int(round(1000 * fraction)))
        self.ui.statusLabel.text = message

    def _started(self, what: str) -> None:
        self.ui.progressBar.setValue(0)
        self.ui.statusLabel.text = _("{what}: starting (loading the model can take a while)").format(what=what)
        self._updateButtons()

    def _reportFinished(self, error: Optional[str]) -> bool:
        """Reset the buttons after a computation; show its error. True when it succeeded."""
        self._updateButtons()
        if error is not None:
            self.ui.statusLabel.text = _("Failed")
            slicer.util.errorDisplay(_("XAIExplainer failed: {error}").format(error=error), windowTitle="XAIExplainer")
            return False
        self.ui.progressBar.setValue(1000)
        return True

    def _finished(self, result, error: Optional[str]) -> None:
        if not self._reportFinished(error):
            return
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

    def _ensureDependencies(self) -> bool:
        """Install what is missing; a declined install is a calm status message, not an error popup."""
        from XAIExplainerLib.errors import InstallDeclinedError

        try:
            self.logic.ensureDependencies()
        except InstallDeclinedError as exc:
            self.ui.statusLabel.text = _("Not started: {reason} Press the button again to install.").format(
                reason=str(exc))
            return False
        return True

    def onLoadDemoButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to load the demo."), waitCursor=True):
            volume = self.logic.loadDemo(self._parameterNode)
            slicer.util.setSliceViewerLayers(background=volume, fit=True)
            self.ui.statusLabel.text = _("Demo loaded: press Explain (or Segment).")

    def _rememberModelPath(self) -> None:
        """Keep the model in the path field's history (saved in Slicer's settings under its settingKey)."""
        self.ui.modelPathLineEdit.addCurrentPathToHistory()

    def onSegmentButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start the segmentation."), waitCursor=True):
            if not self._ensureDependencies():
                return
            self._rememberModelPath()
            p = self._parameterNode
            self.logic.segment(p.inputVolume, p.modelPath, device=p.device, outputSegmentation=p.outputSegmentation,
                               onProgress=self._onProgress, onFinished=self._finished)
            self._started(_("Segment"))

    def onExplainButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start the explanation."), waitCursor=True):
            if not self._ensureDependencies():
                return
            self._rememberModelPath()
            p = self._parameterNode
            self.logic.explain(
                p.inputVolume, p.modelPath, method=p.method, classes=parseClasses(p.classes),
                methodParameters=self.logic.methodOptionValues(p), roiSegmentation=p.roiSegmentation,
                computeMetrics=p.computeMetrics, seed=p.seed, variant=p.variant, graphTopK=int(p.topK),
                graphThreshold=p.graphThreshold, device=p.device, onProgress=self._onProgress,
                onFinished=self._finished)
            self._started(_("Explain"))

    def onCancelButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to cancel."), waitCursor=True):
            self.logic.cancel()
            self.ui.statusLabel.text = _("Cancelled")
            self.ui.progressBar.setValue(0)
            self._updateButtons()

    def onGraphSettingsChanged(self, value=None) -> None:
        """Redraw the graph of the shown heatmap's run (found through the scene, so it works after a reload)."""
        heatmap = self._parameterNode.heatmapVolume if self._parameterNode else None
        if heatmap is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to redraw the RoI graph."), waitCursor=True):
            self.logic.updateGraph(heatmap, int(self.ui.topKSliderWidget.value),
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

    def onShowChartButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to show the chart."), waitCursor=True):
            heatmap = self._parameterNode.heatmapVolume if self._parameterNode else None
            if not self.logic.showChart(heatmap):
                raise ValueError(_("No importance chart for this heatmap: run Explain first."))


#
# XAIExplainerLogic
#


class XAIExplainerLogic(ProductLogic, ScriptedLoadableModuleLogic):
    """Segment and explain without the GUI, e.g. from the Python console::

        logic = XAIExplainerLogic()
        seg = logic.segment(volumeNode, "/path/model.pt", wait=True)
        nodes = logic.explain(volumeNode, "/path/model.pt", method="smoothgrad", wait=True)

    Missing Python packages are installed first (asking before anything is downloaded). Without ``wait`` the call
    returns at once and ``onFinished(result, errorMessage)`` is called later from the Qt event loop. Input nodes
    are only read (written to a temporary NIfTI file, removed with its folder when the job ends).
    """

    POLL_INTERVAL_MS = 200

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._job = None  # the running XAIExplainerLib.background.BackgroundJob
        self._timer = None
        #: interpreter of the background process; None: Slicer's PythonSlicer launcher
        self.pythonExecutable: Optional[str] = None
        self.dependenciesChecked = False
        #: where job work folders are made; None: Slicer's temporary folder (the system's outside Slicer)
        self.workRoot: Optional[Path] = None

    def getParameterNode(self):
        return XAIExplainerParameterNode(super().getParameterNode())

    # --- method menu (from the registry, through the bridge) ------------------------------------------------

    @staticmethod
    def methodMenu() -> list:
        from XAIExplainerLib.slicer_bridge.methods import method_menu

        return method_menu("segmentation")

    @staticmethod
    def methodSpec(name: str):
        """The registry entry of ``name``, or None for a name no longer registered (e.g. in an old scene)."""
        from XAIExplainerLib.errors import UnknownMethodError
        from XAIExplainerLib.slicer_bridge.methods import method_spec

        try:
            return method_spec(name)
        except UnknownMethodError:
            return None

    @staticmethod
    def optionTooltip(option) -> str:
        from XAIExplainerLib.slicer_bridge.methods import option_tooltip

        return option_tooltip(option)

    def methodOptionValues(self, parameterNode) -> dict:
        """The chosen method's option values: stored ones (saved with the scene) over the registry's defaults."""
        from XAIExplainerLib.slicer_bridge.methods import decode_options, option_values

        spec = self.methodSpec(parameterNode.method)
        if spec is None:
            return {}
        return option_values(spec, decode_options(parameterNode.methodOptions).get(spec.name))

    def setMethodOption(self, parameterNode, name: str, value) -> None:
        """Store one option value of the chosen method (validated by the registry) in the parameter node."""
        from XAIExplainerLib.slicer_bridge.methods import decode_options, encode_options

        spec = self.methodSpec(parameterNode.method)
        option = spec.option(name) if spec is not None else None
        if option is None:
            raise ValueError(_("The method '{m}' has no option '{o}'.").format(m=parameterNode.method, o=name))
        stored = decode_options(parameterNode.methodOptions)
        stored.setdefault(spec.name, {})[name] = option.validate(value, spec.name)
        parameterNode.methodOptions = encode_options(stored)

    @staticmethod
    def computeDevices() -> list:
        from XAIExplainerLib.slicer_bridge.module_io import compute_devices

        return compute_devices()

    # --- demo -------------------------------------------------------------------------------------------------

    def loadDemo(self, parameterNode=None):
        """Load the demo T1 and select it with the demo model, so Explain is the next (second) click.

        The same file is offered in the Sample Data module (registered at startup); loading it here through the
        bridge works also when the module was reloaded without that registration.
        """
        from XAIExplainerLib.slicer_bridge import module_io

        volume = module_io.load_demo_volume()
        if parameterNode is not None:
            with slicer.util.NodeModify(parameterNode.parameterNode):
                parameterNode.inputVolume = volume
                parameterNode.modelPath = module_io.DEMO_MODEL
        return volume

    @staticmethod
    def offerDemoModel(parameterNode) -> None:
        """An empty Model field (shown as ".") gets the shipped demo model, so there is always something to try."""
        if str(parameterNode.modelPath or "").strip() in ("", "."):
            from XAIExplainerLib.slicer_bridge.module_io import DEMO_MODEL

            parameterNode.modelPath = DEMO_MODEL

    # --- dependencies -----------------------------------------------------------------------------------------

    def ensureDependencies(self, askConfirmation: bool = True) -> None:
        """Install what the background process needs, once per session (list: XAIExplainerLib's requirements).

        torch comes from the PyTorch extension with the library's version range; Slicer's numpy and SimpleITK and
        the installed torch are pinned during the pip install. Declining raises InstallDeclinedError.
        """
        if self.dependenciesChecked:
            return
        from XAIExplainerLib.install import ensure_dependencies

        confirm = None
        if askConfirmation:
            def confirm(message: str) -> bool:
                return slicer.util.confirmOkCancelDisplay(message, windowTitle="XAIExplainer")
        installed = ensure_dependencies(slicer.util.pip_install, confirm,
                                        lambda requirement: self._installTorch(requirement, askConfirmation))
        if installed:
            logging.info("XAIExplainer: installed " + ", ".join(installed))
        self.dependenciesChecked = True

    @staticmethod
    def _installTorch(requirement: str, askConfirmation: bool) -> Optional[str]:
        """torch through the PyTorch extension (a build for this GPU); returns its version, None when declined."""
        from XAIExplainerLib.errors import DependencyError

        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            raise DependencyError(_("XAIExplainer needs the PyTorch extension: install 'PyTorch' from the "
                                    "Extensions Manager and restart Slicer.")) from None
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=askConfirmation,
                                                              torchVersionRequirement=requirement)
        return None if torch is None else str(torch.__version__)

    # --- background process -----------------------------------------------------------------------------------

    def pythonSlicerExecutable(self) -> str:
        """Slicer's own Python launcher (sets Slicer's library paths for the child process)."""
        if self.pythonExecutable:
            return self.pythonExecutable
        executable = shutil.which("PythonSlicer")
        if not executable and hasattr(slicer, "app"):
            candidate = Path(slicer.app.applicationDirPath()) / ("PythonSlicer.exe" if os.name == "nt" else
                                                                  "PythonSlicer")
            executable = str(candidate) if candidate.exists() else None
        if not executable:
            raise RuntimeError(_("PythonSlicer was not found next to Slicer; reinstall Slicer."))
        return executable

    @staticmethod
    def processEnvironment() -> dict:
        """Slicer's startup environment (outside Slicer: this process's) with the library's folder on PYTHONPATH."""
        env = dict(slicer.util.startupEnvironment()) if hasattr(slicer, "app") else dict(os.environ)
        paths = [str(LIBRARY_FOLDER)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def newWorkFolder(self, kind: str) -> Path:
        """A fresh temporary folder for one job (under Slicer's temporary path); removed when the job ends."""
        root = self.workRoot or (slicer.app.temporaryPath if hasattr(slicer, "app") else None)
        return Path(tempfile.mkdtemp(prefix=f"XAIExplainer-{kind}-", dir=root))

    def isRunning(self) -> bool:
        """True from the start of a computation until its results were loaded (or it failed / was cancelled)."""
        return self._job is not None

    def cancel(self) -> None:
        """Stop the running computation (its whole process tree) and delete its temporary folder."""
        job, self._job = self._job, None
        self._stopTimer()
        if job is not None:
            job.cancel()
            logging.info("XAIExplainer: computation cancelled")

    def _stopTimer(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def _start(self, cliArgs: list, load: Callable[[dict], Any], workDir: Path, onProgress, onFinished, wait: bool):
        """Run ``xai-explainer <cliArgs>`` as a BackgroundJob; poll it from a QTimer (or here, with ``wait``)."""
        from XAIExplainerLib.slicer_bridge.module_io import BackgroundJob

        if self.isRunning():
            raise RuntimeError(_("Another XAIExplainer computation is running; wait for it or press Cancel."))
        args = [self.pythonSlicerExecutable(), "-m", "XAIExplainerLib.cli", *[str(a) for a in cliArgs],
                "--progress-lines"]
        logging.info("XAIExplainer: running " + " ".join(args))
        self._job = BackgroundJob(args, workDir, load, onProgress, onFinished, env=self.processEnvironment()).start()
        if wait:
            while self._job.running:
                self._job.poll()
                if hasattr(slicer, "app"):
                    slicer.app.processEvents()
                time.sleep(self.POLL_INTERVAL_MS / 1000.0)
            return self._complete(raiseErrors=True)
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._onTimer)
        self._timer.start()
        return None

    def _onTimer(self) -> None:
        if self._job is None:
            self._stopTimer()
            return
        self._job.poll()
        if not self._job.running:
            self._stopTimer()
            self._complete(raiseErrors=False)

    def _complete(self, raiseErrors: bool):
        """Hand the finished job's result (or error) to its caller; the job has deleted its work folder."""
        job, self._job = self._job, None
        if job is None:
            return None
        result, error = job.finish()
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

    def _prepare(self, kind: str, inputVolume, modelPath) -> tuple[Path, Path, Path]:
        """Check inputs and dependencies, export the input (parent transform hardened) into a new work folder."""
        from XAIExplainerLib.slicer_bridge.module_io import export_input_volume

        model = self._checkInputs(inputVolume, modelPath)
        self.ensureDependencies()
        workDir = self.newWorkFolder(kind)
        try:
            inputFile, hardened = export_input_volume(inputVolume, workDir / "input.nii.gz")
        except Exception:
            shutil.rmtree(workDir, ignore_errors=True)
            raise
        if hardened:
            logging.info(f"XAIExplainer: the parent transform of '{inputVolume.GetName()}' was applied to the "
                         "exported input; results are placed in world coordinates")
        return model, workDir, inputFile

    # --- segment ----------------------------------------------------------------------------------------------

    def segment(self, inputVolume, modelPath, device: str = "auto", outputSegmentation=None,
                onProgress: Optional[Callable[[float, str], None]] = None, onFinished: Optional[Callable] = None,
                wait: bool = False):
        """Segment ``inputVolume`` in the background; the result is a segmentation node (``outputSegmentation``
        is emptied and reused when given). With ``wait`` the node is returned, else passed to ``onFinished``."""
        model, workDir, inputFile = self._prepare("segment", inputVolume, modelPath)
        labelsFile = workDir / "labels.nii.gz"
        args = ["segment", "--input", inputFile, "--model", model, "--output", labelsFile, "--device", device]

        def load(record: dict):
            from XAIExplainerLib.slicer_bridge.module_io import labels_to_segmentation
            from XAIExplainerLib.volume import read_volume

            return labels_to_segmentation(read_volume(record["labels"]), record["label_names"], inputVolume,
                                          outputSegmentation, {"XAIExplainer.model": str(model),
                                                               "XAIExplainer.device": device})

        return self._start(args, load, workDir, onProgress, onFinished, wait)

    # --- explain ----------------------------------------------------------------------------------------------

    def explain(self, inputVolume, modelPath, method: str = "smoothgrad", classes: Optional[list] = None,
                methodParameters: Optional[dict] = None, roiSegmentation=None, computeMetrics: bool = False,
                seed: int = 0, variant: str = "absolute", graphTopK: int = 0, graphThreshold: float = 0.8,
                device: str = "auto", onProgress: Optional[Callable[[float, str], None]] = None,
                onFinished: Optional[Callable] = None, wait: bool = False):
        """Explain the model's segmentation of ``inputVolume`` with Agg2Exp in the background.

        ``methodParameters``: the method's options (registry names, e.g. ``{"n_samples": 10}``), checked before
        anything starts. The result (returned with ``wait``, else passed to ``onFinished``) is the dict of
        ``add_explanation_to_scene`` plus "folder_item" (the run's Subject Hierarchy folder).
        """
        from XAIExplainerLib.slicer_bridge.methods import method_cli_args, method_spec

        spec = method_spec(method)
        methodArgs = method_cli_args(spec, methodParameters or {})
        model, workDir, inputFile = self._prepare("explain", inputVolume, modelPath)
        outputFolder = workDir / "explanation"
        args = ["explain", "--input", inputFile, "--model", model, "--method", spec.name, "--output", outputFolder,
                "--variant", variant, "--seed", int(seed), "--device", device, *methodArgs]
        if graphThreshold is not None:
            args += ["--graph-threshold", float(graphThreshold)]
        if graphTopK:
            args += ["--graph-top-k", int(graphTopK)]
        if classes:
            args += ["--classes", *[str(c) for c in classes]]
        if computeMetrics:
            args.append("--metrics")
        if roiSegmentation is not None:
            args += self._exportRois(roiSegmentation, inputVolume, workDir)

        def load(record: dict):
            from XAIExplainerLib.slicer_bridge.module_io import load_explanation_nodes

            return load_explanation_nodes(Path(record["folder"]), inputVolume, inputFile, spec.label,
                                          graphTopK or None, graphThreshold)

        return self._start(args, load, workDir, onProgress, onFinished, wait)

    @staticmethod
    def _exportRois(roiSegmentation, inputVolume, workDir: Path) -> list:
        from XAIExplainerLib.slicer_bridge.module_io import export_roi_segmentation

        roisFile, namesFile = workDir / "rois.nii.gz", workDir / "roi_names.csv"
        export_roi_segmentation(roiSegmentation, inputVolume, roisFile, namesFile)
        return ["--rois", roisFile, "--roi-names", namesFile]

    # --- results ----------------------------------------------------------------------------------------------

    @staticmethod
    def graphForHeatmap(heatmapNode):
        """The RoI graph of the run that made ``heatmapNode``, rebuilt from the scene (works after a reload)."""
        from XAIExplainerLib.slicer_bridge.graph import restore_roi_graph

        points = heatmapNode.GetNodeReference("XAIExplainer.graph") if heatmapNode is not None else None
        return restore_roi_graph(points) if points is not None else None

    def updateGraph(self, heatmapNode, topK: int, threshold: float):
        """Redraw the RoI graph of ``heatmapNode``'s run for a new top-k (0 = no limit) and mass threshold."""
        from XAIExplainerLib.slicer_bridge.graph import update_roi_graph

        graph = self.graphForHeatmap(heatmapNode)
        if graph is None:
            return None
        return update_roi_graph(graph, top_k=int(topK) or None, threshold=float(threshold))

    @staticmethod
    def showHeatmap(heatmapNode, backgroundNode=None) -> None:
        """Overlay ``heatmapNode`` on ``backgroundNode``; its window is the one chosen when it was created."""
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
        """Show the heatmaps side by side over ``backgroundNode`` in linked slice views (one per heatmap)."""
        from XAIExplainerLib.slicer_bridge.comparison import comparison_layout

        return comparison_layout(list(heatmapNodes), backgroundNode, labels=labels, orientation=orientation)

    @staticmethod
    def chartForHeatmap(heatmapNode):
        """The RoI importance chart of the run that made ``heatmapNode`` (through scene references), or None."""
        points = heatmapNode.GetNodeReference("XAIExplainer.graph") if heatmapNode is not None else None
        return points.GetNodeReference("XAIExplainer.chart") if points is not None else None

    def showChart(self, heatmapNode) -> bool:
        """Show the importance chart of ``heatmapNode``'s run in the layout: only when the user asks for it."""
        chart = self.chartForHeatmap(heatmapNode)
        if chart is None:
            return False
        slicer.modules.plots.logic().ShowChartInLayout(chart)
        return True


#
# XAIExplainerTest
#


class XAIExplainerTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Developer mode > Reload and Test): segments and explains a synthetic volume with a tiny
    TorchScript threshold model, through the logic and the background process."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()
        self.tempDir = Path(tempfile.mkdtemp(prefix="XAIExplainerTest-"))

    def tearDown(self) -> None:
        """Remove the test's files and nodes, so a test run leaves neither behind."""
        shutil.rmtree(self.tempDir, ignore_errors=True)
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        for test in (self.test_XAIExplainerSegment, self.test_XAIExplainerExplain):
            self.setUp()
            try:
                test()
            finally:
                self.tearDown()

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
        self.assertFalse(list(Path(slicer.app.temporaryPath).glob("XAIExplainer-explain-*")), "work folder left")
        table = nodes["table"]
        self.assertEqual(table.GetNumberOfRows(), 1)
        logic.updateGraph(heatmap, topK=1, threshold=0.5)  # the top-k slider's call
        self.delayDisplay("Explain test passed")
