"""Regression section: explain a regression network's prediction (Image-Reg-LIME, CAM and gradient methods).

The method menu and every option widget come from the method registry (methods for "regression" models), so a
method registered later shows up here with its options; :func:`XAIExplainerLib.slicer_bridge.regression.
regression_command` says which ``xai-explainer`` command runs it. The section's settings are stored on the
module's parameter node as one JSON parameter (``Regression``) plus a node reference for the supervoxel
segmentation, so they are saved with the scene without adding fields to the module's parameter node class.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import qt

import slicer
from slicer.i18n import tr as _

from .base import Section, optionWidget, showOptionValue

SETTINGS_PARAMETER = "Regression"
LABEL_SEGMENTATION_REFERENCE = "Regression.labelSegmentation"
DEFAULT_SETTINGS: dict[str, Any] = {"method": "image_reg_lime", "targets": "", "score": "higher",
                                    "reference": None, "options": {}, "view": "multiple_targets"}
VIEW_LABELS = {"single_target": "Single target", "multiple_targets": "Multiple targets",
               "multiple_methods": "Multiple methods"}


def _scriptedModuleNode(parameterNode):
    """The MRML node under the module's parameter-node wrapper (or the node itself)."""
    return parameterNode.parameterNode if hasattr(parameterNode, "parameterNode") else parameterNode


def _currentData(comboBox):
    """The chosen item's data (``itemData`` works alike in PythonQt and PyQt; ``currentData`` is ambiguous)."""
    return comboBox.itemData(comboBox.currentIndex) if comboBox.currentIndex >= 0 else None


class RegressionLogic:
    """Console API of the Regression section (mixed into ``XAIExplainerLogic``)::

        nodes = logic.explainRegression(volumeNode, "/path/regressor.pt", targets=["grey_matter"], wait=True)
        nodes = logic.explainRegression(volumeNode, model, targets=["astig_o"], score="closeness", reference=0.093,
                                        methodParameters={"n_samples": 500}, labelSegmentation=segNode, wait=True)
        logic.showComparisonView("multiple_targets", volumeNode)
        volumeNode = logic.loadRegressionDemo(parameterNode)  # Colin27 patch + shipped tissue regressor
    """

    # --- demo ---------------------------------------------------------------------------------------------------

    def loadRegressionDemo(self, parameterNode=None):
        """Load the regression demo (a 32³ Colin27 T1 patch at 2 mm) and select it with the shipped tissue-fraction
        regressor, so "Explain regression" is the next click. Returns the volume node."""
        from XAIExplainerLib.slicer_bridge import section_demos

        volume = section_demos.load_regression_demo()
        if parameterNode is not None:
            with slicer.util.NodeModify(parameterNode.parameterNode):
                parameterNode.inputVolume = volume
                parameterNode.modelPath = section_demos.REGRESSION_DEMO_MODEL
        return volume

    # --- menus and stored settings ------------------------------------------------------------------------------

    @staticmethod
    def regressionMethodMenu() -> list:
        from XAIExplainerLib.slicer_bridge.regression import regression_methods

        return regression_methods()

    @staticmethod
    def regressionScores() -> tuple:
        from XAIExplainerLib.slicer_bridge.regression import regression_scores

        return regression_scores()

    @staticmethod
    def regressionSettings(parameterNode) -> dict:
        """The section's settings saved in the parameter node (defaults for what was never set)."""
        try:
            stored = json.loads(_scriptedModuleNode(parameterNode).GetParameter(SETTINGS_PARAMETER) or "{}")
        except json.JSONDecodeError:
            stored = {}
        return {**DEFAULT_SETTINGS, **(stored if isinstance(stored, dict) else {})}

    def setRegressionSetting(self, parameterNode, key: str, value) -> None:
        if key not in DEFAULT_SETTINGS:
            raise ValueError(_("Unknown Regression setting '{key}'.").format(key=key))
        settings = self.regressionSettings(parameterNode)
        settings[key] = value
        _scriptedModuleNode(parameterNode).SetParameter(SETTINGS_PARAMETER, json.dumps(settings, sort_keys=True))

    def regressionOptionValues(self, parameterNode, method: Optional[str] = None) -> dict:
        """The method's option values: stored ones (validated) over the registry's defaults."""
        from XAIExplainerLib.slicer_bridge.methods import option_values

        settings = self.regressionSettings(parameterNode)
        spec = self.methodSpec(method or settings["method"])
        return {} if spec is None else option_values(spec, settings["options"].get(spec.name))

    def setRegressionOption(self, parameterNode, name: str, value) -> None:
        """Store one option of the section's method (validated by the registry)."""
        settings = self.regressionSettings(parameterNode)
        spec = self.methodSpec(settings["method"])
        option = spec.option(name) if spec is not None else None
        if option is None:
            raise ValueError(_("The method '{m}' has no option '{o}'.").format(m=settings["method"], o=name))
        options = settings["options"]
        options.setdefault(spec.name, {})[name] = option.validate(value, spec.name)
        self.setRegressionSetting(parameterNode, "options", options)

    @staticmethod
    def regressionTargetNames(modelPath) -> Optional[list]:
        """The model's target names from its JSON (None when unreadable: the process will say why)."""
        from XAIExplainerLib.errors import XAIExplainerError
        from XAIExplainerLib.slicer_bridge.regression import regression_target_names

        try:
            return regression_target_names(modelPath)
        except (XAIExplainerError, OSError):
            return None

    # --- run ----------------------------------------------------------------------------------------------------

    def explainRegression(self, inputVolume, modelPath, method: str = "image_reg_lime",
                          targets: Optional[list] = None, score: str = "higher", reference: Optional[float] = None,
                          labelSegmentation=None, methodParameters: Optional[dict] = None, seed: int = 0,
                          device: str = "auto", onProgress: Optional[Callable[[float, str], None]] = None,
                          onFinished: Optional[Callable] = None, wait: bool = False):
        """Explain a regression model's prediction on ``inputVolume`` in the background.

        ``targets``: names or indices (None: every target). ``score``: "higher", "lower" or "closeness" with
        ``reference`` a* for one target ("why was a* not predicted?"; positive then supports not-a*).
        ``labelSegmentation``: its segments (on the input's grid) replace SLIC as supervoxels. Targets, score,
        reference and options are checked before anything is exported or started. The result (returned with
        ``wait``, else passed to ``onFinished``) is the dict of ``load_regression_nodes``.
        """
        from XAIExplainerLib.slicer_bridge.methods import method_spec
        from XAIExplainerLib.slicer_bridge.regression import (
            check_regression_request, export_label_segmentation, regression_cli_args)

        spec = method_spec(method)
        reference = None if reference is None else float(reference)
        self._checkInputs(inputVolume, modelPath)
        check_regression_request(spec, modelPath, targets, score, reference, methodParameters,
                                 labelSegmentation is not None)
        model, workDir, inputFile = self._prepare("regression", inputVolume, modelPath)
        labelFile, segmentNames = None, []
        if labelSegmentation is not None:
            try:
                labelFile, segmentNames = export_label_segmentation(labelSegmentation, inputVolume, workDir)
            except Exception:
                shutil.rmtree(workDir, ignore_errors=True)
                raise
        methodArgs = regression_cli_args(spec, methodParameters or {}, labelFile)
        outputFolder = workDir / "explanation"
        args = [*methodArgs, "--input", inputFile, "--model", model, "--output", outputFolder, "--device", device]
        if not spec.deterministic:
            args += ["--seed", int(seed)]
        if targets:
            args += ["--targets", *[str(t) for t in targets]]
        args += ["--score", score] + (["--reference", repr(reference)] if reference is not None else [])

        def load(record: dict):
            from XAIExplainerLib.slicer_bridge.regression import load_regression_nodes

            return load_regression_nodes(Path(record.get("folder", outputFolder)), inputVolume, inputFile,
                                         spec.label, labelFile, segmentNames)

        return self._start(args, load, workDir, onProgress, onFinished, wait)

    # --- comparison ---------------------------------------------------------------------------------------------

    @staticmethod
    def comparisonChoices(backgroundNode) -> tuple:
        """(methods, targets) of the heatmaps of ``backgroundNode`` in the scene, in the order they were made."""
        from XAIExplainerLib.slicer_bridge.comparison import heatmap_entries

        entries = heatmap_entries(None, backgroundNode) if backgroundNode is not None else []
        return list(dict.fromkeys(e.method for e in entries)), list(dict.fromkeys(e.target for e in entries))

    @staticmethod
    def showComparisonView(view: str, backgroundNode, method: Optional[str] = None, target: Optional[str] = None,
                           heatmapNodes: Optional[list] = None, orientation: str = "Axial"):
        """The report's three views in linked slice views: "single_target" (one method, one target),
        "multiple_targets" (one method's latest run, every target) or "multiple_methods" (one target, the latest
        heatmap of every method). Returns the bridge's ``ComparisonLayout``."""
        from XAIExplainerLib.slicer_bridge.comparison import show_comparison_view

        return show_comparison_view(view, backgroundNode, heatmapNodes, method, target, orientation)


class RegressionSection(Section):
    """Method, targets, score (+ reference a*), supervoxels from a segmentation, options; results and comparison."""

    title = _("Regression")

    def build(self, form) -> None:
        self._optionWidgets: dict[str, Any] = {}
        self._shownMethod: Optional[str] = None
        self.loadDemoButton = qt.QPushButton(_("Load demo"))
        self.loadDemoButton.toolTip = _("Load a 32³ patch of the Colin27 T1 (2 mm) and the shipped grey/white/CSF "
                                        "fraction regressor; then press Explain regression.")
        self.loadDemoButton.connect("clicked(bool)", self.onLoadDemo)
        form.addRow(self.loadDemoButton)
        self.methodComboBox = qt.QComboBox()
        for spec in self.logic.regressionMethodMenu():
            self.methodComboBox.addItem(spec.label, spec.name)
            self.methodComboBox.setItemData(self.methodComboBox.count - 1, spec.description, qt.Qt.ToolTipRole)
        self.methodComboBox.connect("activated(int)", lambda i: self._set("method", self.methodComboBox.itemData(i)))
        form.addRow(_("Method:"), self.methodComboBox)
        self.targetsLineEdit = qt.QLineEdit()
        self.targetsLineEdit.toolTip = _("Target names or indices, comma- or space-separated; empty: every target.")
        self.targetsLineEdit.connect("editingFinished()", lambda: self._set("targets", self.targetsLineEdit.text))
        form.addRow(_("Targets:"), self.targetsLineEdit)
        self.scoreComboBox = qt.QComboBox()
        for score in self.logic.regressionScores():
            self.scoreComboBox.addItem(score, score)
        self.scoreComboBox.toolTip = _("higher: the prediction; lower: its negative; closeness: why was the "
                                       "reference a* not predicted (one target; positive = supports not-a*).")
        self.scoreComboBox.connect("activated(int)", lambda i: self._set("score", self.scoreComboBox.itemData(i)))
        form.addRow(_("Score:"), self.scoreComboBox)
        self.referenceSpinBox = qt.QDoubleSpinBox()
        self.referenceSpinBox.decimals = 4
        self.referenceSpinBox.setRange(-1e9, 1e9)
        self.referenceSpinBox.toolTip = _("Reference value a* of score 'closeness' (in the target's unit).")
        self.referenceSpinBox.connect("valueChanged(double)", lambda v: self._set("reference", float(v)))
        form.addRow(_("Reference a*:"), self.referenceSpinBox)
        self.labelSegmentationSelector = slicer.qMRMLNodeComboBox()
        self.labelSegmentationSelector.nodeTypes = ["vtkMRMLSegmentationNode"]
        self.labelSegmentationSelector.noneEnabled = True
        self.labelSegmentationSelector.addEnabled = False
        self.labelSegmentationSelector.removeEnabled = False
        self.labelSegmentationSelector.setMRMLScene(slicer.mrmlScene)
        self.labelSegmentationSelector.toolTip = _("Use these segments as supervoxels instead of SLIC or cubes.")
        self.labelSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self._onLabelSegmentation)
        form.addRow(_("Supervoxels from:"), self.labelSegmentationSelector)
        self.optionsForm = qt.QFormLayout()
        form.addRow(self.optionsForm)
        self.runButton = qt.QPushButton(_("Explain regression"))
        self.runButton.connect("clicked(bool)", self.onRunButton)
        form.addRow(self.runButton)
        self._buildComparison(form)

    def _buildComparison(self, form) -> None:
        self.viewComboBox = qt.QComboBox()
        for view, label in VIEW_LABELS.items():
            self.viewComboBox.addItem(_(label), view)
        self.viewComboBox.connect("activated(int)", lambda i: self._set("view", self.viewComboBox.itemData(i)))
        self.compareMethodComboBox = qt.QComboBox()
        self.compareTargetComboBox = qt.QComboBox()
        self.compareButton = qt.QPushButton(_("Compare"))
        self.compareButton.toolTip = _("Show the heatmaps of the input side by side in linked slice views.")
        self.compareButton.connect("clicked(bool)", self.onCompareButton)
        form.addRow(_("Comparison:"), self.viewComboBox)
        form.addRow(_("Method shown:"), self.compareMethodComboBox)
        form.addRow(_("Target shown:"), self.compareTargetComboBox)
        form.addRow(self.compareButton)

    # --- settings <-> widgets -----------------------------------------------------------------------------------

    def _set(self, key: str, value) -> None:
        if self.parameterNode is not None:
            self.logic.setRegressionSetting(self.parameterNode, key, value)

    def _setOption(self, name: str, value) -> None:
        if self.parameterNode is not None:
            with slicer.util.tryWithErrorDisplay(_("Invalid option value."), waitCursor=False):
                self.logic.setRegressionOption(self.parameterNode, name, value)

    def _onLabelSegmentation(self, node) -> None:
        if self.parameterNode is not None:
            self.parameterNode.parameterNode.SetNodeReferenceID(LABEL_SEGMENTATION_REFERENCE,
                                                                node.GetID() if node is not None else None)

    def _buildOptionWidgets(self, method: str) -> None:
        """One widget per registry option of ``method``; arrays are for the Python API (the segmentation
        selector supplies the label-map form of the supervoxels option)."""
        while self.optionsForm.rowCount() > 0:
            self.optionsForm.removeRow(0)
        self._optionWidgets, self._shownMethod = {}, method
        spec = self.logic.methodSpec(method)
        if spec is None:
            return
        self.methodComboBox.toolTip = f"{spec.description}\n{spec.reference}"
        for option in spec.options:
            if option.allow_array and option.choices is None:
                continue
            widget = optionWidget(option, self._setOption)
            widget.toolTip = self.logic.optionTooltip(option)
            self.optionsForm.addRow(option.display_label + ":", widget)
            self._optionWidgets[option.name] = widget
        self.labelSegmentationSelector.enabled = spec.option("supervoxels") is not None

    def _showSettings(self) -> None:
        p = self.parameterNode
        if p is None:
            return
        settings = self.logic.regressionSettings(p)
        self.widget._selectItem(self.methodComboBox, settings["method"])
        self.widget._selectItem(self.scoreComboBox, settings["score"])
        self.widget._selectItem(self.viewComboBox, settings["view"])
        if settings["method"] != self._shownMethod:
            self._buildOptionWidgets(settings["method"])
        values = self.logic.regressionOptionValues(p)
        for name, widget in self._optionWidgets.items():
            showOptionValue(widget, values.get(name))
        if not self.targetsLineEdit.hasFocus():
            self.targetsLineEdit.text = settings["targets"]
        names = self._targetNames(p.modelPath)
        self.targetsLineEdit.placeholderText = (_("all: {names}").format(names=", ".join(names)) if names
                                                else _("all targets"))
        closeness = settings["score"] == "closeness"
        self.referenceSpinBox.enabled = closeness
        showOptionValue(self.referenceSpinBox, settings["reference"] or 0.0)
        wasBlocked = self.labelSegmentationSelector.blockSignals(True)
        self.labelSegmentationSelector.setCurrentNode(p.parameterNode.GetNodeReference(LABEL_SEGMENTATION_REFERENCE))
        self.labelSegmentationSelector.blockSignals(wasBlocked)

    def _targetNames(self, modelPath) -> Optional[list]:
        """The model's target names, read again only when the model path changes (this runs on every edit)."""
        key = str(modelPath or "")
        if getattr(self, "_targetNamesFor", (None,))[0] != key:
            self._targetNamesFor = (key, self.logic.regressionTargetNames(modelPath) if key.strip(". ") else None)
        return self._targetNamesFor[1]

    def updateButtons(self, running: bool, ready: bool) -> None:
        self._showSettings()  # called on every parameter-node change: keeps the widgets in step with the scene
        self.runButton.enabled = ready and not running
        self.loadDemoButton.enabled = not running
        self.runButton.toolTip = (_("Explain the regression model's prediction for the chosen targets.") if ready
                                  else _("Select an input volume and a regression model first."))
        self._fillComparisonMenus()

    def _fillComparisonMenus(self) -> None:
        p = self.parameterNode
        methods, targets = self.logic.comparisonChoices(p.inputVolume if p is not None else None)
        for comboBox, items in ((self.compareMethodComboBox, methods), (self.compareTargetComboBox, targets)):
            current = _currentData(comboBox)
            if [comboBox.itemData(i) for i in range(comboBox.count)] == items:
                continue
            comboBox.clear()
            for item in items:
                spec = self.logic.methodSpec(item) if comboBox is self.compareMethodComboBox else None
                comboBox.addItem(spec.label if spec is not None else item, item)
            self.widget._selectItem(comboBox, current)
        self.compareButton.enabled = bool(methods)

    # --- actions ------------------------------------------------------------------------------------------------

    def onRunButton(self) -> None:
        from XAIExplainerLib.slicer_bridge.regression import parse_targets

        p = self.parameterNode
        self._set("targets", self.targetsLineEdit.text)  # also when the field still has the focus
        settings = self.logic.regressionSettings(p)
        closeness = settings["score"] == "closeness"
        self.start(_("Regression"), self.logic.explainRegression, inputVolume=p.inputVolume, modelPath=p.modelPath,
                   method=settings["method"], targets=parse_targets(settings["targets"]) or None,
                   score=settings["score"], reference=float(self.referenceSpinBox.value) if closeness else None,
                   labelSegmentation=p.parameterNode.GetNodeReference(LABEL_SEGMENTATION_REFERENCE),
                   methodParameters=self.logic.regressionOptionValues(p), seed=p.seed, device=p.device)

    def onLoadDemo(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to load the regression demo."), waitCursor=True):
            volume = self.logic.loadRegressionDemo(self.parameterNode)
            slicer.util.setSliceViewerLayers(background=volume, fit=True)
            self.widget.ui.statusLabel.text = _("Regression demo loaded: press Explain regression.")

    def onCompareButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to show the comparison."), waitCursor=True):
            p = self.parameterNode
            self.logic.showComparisonView(self.logic.regressionSettings(p)["view"], p.inputVolume,
                                          method=_currentData(self.compareMethodComboBox) or None,
                                          target=_currentData(self.compareTargetComboBox) or None)

    def showResult(self, result) -> str:
        heatmaps = {k.split(":", 1)[1]: n for k, n in result.items() if k.startswith("heatmap:")}
        if heatmaps and self.parameterNode is not None:
            self.parameterNode.heatmapVolume = next(iter(heatmaps.values()))  # also in the Results section
        self._fillComparisonMenus()
        blank = [f"{t} ({n.GetAttribute('XAIExplainer.blank_reason')})" for t, n in heatmaps.items()
                 if n.GetAttribute("XAIExplainer.blank_reason")]
        message = _("Done: {n} regression heatmaps ({targets}) and their table added.").format(
            n=len(heatmaps), targets=", ".join(heatmaps))
        return message + (" " + _("Blank maps: {blank}").format(blank="; ".join(blank)) if blank else "")
