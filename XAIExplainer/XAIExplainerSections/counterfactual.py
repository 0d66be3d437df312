"""Counterfactual section: the smallest region whose inpainted replacement makes a classifier drop a class
(Major et al.; ``xai-explainer counterfactual``).

The Logic runs the real command in the background (``self._prepare`` / ``self._start``) and loads its folder with
:mod:`XAIExplainerLib.slicer_bridge.counterfactual`: the region as a segment, the soft map as a heatmap, the
inpainted volume beside the original in linked views, and the probability change in a table and the status line.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Optional

import qt

import slicer
from slicer.i18n import tr as _

from .base import Section

PLAIN_FILLS = ("zero", "mean", "blur")
SHIPPED = "shipped"  # the partial-convolution inpainter in Resources/Inpainter


class CounterfactualLogic:
    """Console API (mixed into ``XAIExplainerLogic``)::

        nodes = logic.counterfactual(volumeNode, "/path/classifier.pt", "/path/inpainter.pt", targetClass="lesion",
                                     wait=True)
        nodes = logic.counterfactual(volumeNode, classifier, "zero", methodParameters={"steps": 50}, wait=True)
        print(nodes["status"])   # p(lesion) 0.97 → 0.04 (-0.93); 812 voxels replaced (inpainter)
        volume, lesion, brain = logic.loadCounterfactualDemo(parameterNode)  # patch + lesion + shipped classifier
    """

    def loadCounterfactualDemo(self, parameterNode=None):
        """Load the counterfactual demo (a 32³ Colin27 T1 patch at 2 mm with one synthetic lesion, its ground truth
        and brain mask as segmentations) and select it with the shipped lesion classifier, so "Find counterfactual
        region" is the next click. Returns (volume, lesion segmentation, brain segmentation)."""
        from XAIExplainerLib.slicer_bridge import section_demos

        volume, lesion, brain = section_demos.load_counterfactual_demo()
        if parameterNode is not None:
            with slicer.util.NodeModify(parameterNode.parameterNode):
                parameterNode.inputVolume = volume
                parameterNode.modelPath = section_demos.COUNTERFACTUAL_DEMO_MODEL
        return volume, lesion, brain

    @staticmethod
    def counterfactualOptions() -> list:
        """The method's options from the registry (name, label, default, allowed), for menus and tooltips."""
        from XAIExplainerLib.slicer_bridge.methods import method_spec

        return [o for o in method_spec("counterfactual").options if o.name != "fill"]

    def counterfactual(self, inputVolume, modelPath, inpainter: str = SHIPPED, targetClass=None,
                       organSegmentation=None, methodParameters: Optional[dict] = None, seed: int = 0,
                       device: str = "auto", linkViews: bool = True,
                       onProgress: Optional[Callable[[float, str], None]] = None,
                       onFinished: Optional[Callable] = None, wait: bool = False):
        """Optimise the counterfactual region of ``targetClass`` (name or index; None = predicted) in the background.

        ``inpainter``: "shipped" (the module's partial-convolution inpainter), other inpainter weights (.pt + JSON)
        or "zero" / "mean" / "blur".
        ``organSegmentation``: its segments (union) confine the region; ``methodParameters`` are registry options
        (``steps``, ``lambda3``, ``size_term``...), checked before anything starts. The result is the dict of
        :func:`load_counterfactual_nodes` (with "status": the probability change in words).
        """
        from XAIExplainerLib.slicer_bridge.counterfactual import counterfactual_cli_args

        options = dict(methodParameters or {})
        if "fill" in options:
            raise ValueError(_("Choose the fill with the 'inpainter' argument (a weights file or zero/mean/blur)."))
        methodArgs = counterfactual_cli_args(options)
        inpainterArg = str(inpainter)
        if inpainterArg not in (SHIPPED, *PLAIN_FILLS) and not Path(inpainterArg).is_file():
            raise ValueError(_("Select an inpainter: shipped, a weights file (.pt with its JSON) or zero, mean, blur. "
                               "'{path}' does not exist.").format(path=inpainterArg))
        model, workDir, inputFile = self._prepare("counterfactual", inputVolume, modelPath)
        outputFolder = workDir / "counterfactual"
        args = ["counterfactual", "--input", inputFile, "--model", model, "--inpainter", inpainterArg,
                "--output", outputFolder, "--seed", int(seed), "--device", device, *methodArgs]
        if targetClass is not None and str(targetClass) != "":
            args += ["--class", str(targetClass)]
        if organSegmentation is not None:
            args += ["--organ-mask", self._exportOrgan(organSegmentation, inputVolume, workDir)]

        def load(record: dict):
            from XAIExplainerLib.slicer_bridge.counterfactual import load_counterfactual_nodes

            return load_counterfactual_nodes(Path(record.get("output", outputFolder)), inputVolume,
                                             link_views=linkViews)

        return self._start(args, load, workDir, onProgress, onFinished, wait)

    @staticmethod
    def _exportOrgan(organSegmentation, inputVolume, workDir: Path) -> Path:
        from XAIExplainerLib.slicer_bridge.module_io import export_roi_segmentation

        labels = workDir / "organ.nii.gz"
        try:
            export_roi_segmentation(organSegmentation, inputVolume, labels, workDir / "organ_names.csv")
        except Exception:
            shutil.rmtree(workDir, ignore_errors=True)
            raise
        return labels


class CounterfactualSection(Section):
    """Widgets: inpainter (file or plain fill), class, organ segmentation, steps and weights, Run."""

    title = "Counterfactual"

    def build(self, form) -> None:
        self.loadDemoButton = qt.QPushButton(_("Load demo"))
        self.loadDemoButton.toolTip = _("Load a 32³ Colin27 T1 patch (2 mm) with a synthetic lesion, its ground truth "
                                        "and brain mask, and the shipped lesion classifier; then press Find "
                                        "counterfactual region.")
        self.loadDemoButton.connect("clicked(bool)", self.onLoadDemo)
        form.addRow(self.loadDemoButton)
        self.inpainterCombo = qt.QComboBox()
        self.inpainterCombo.editable = True
        for fill in (SHIPPED, *PLAIN_FILLS):
            self.inpainterCombo.addItem(fill)
        self.inpainterCombo.toolTip = _("The shipped partial-convolution inpainter, other inpainter weights (type the "
                                        ".pt path; its JSON beside it), or a plain fill "
                                        "(zero, mean, blur: out-of-distribution, for comparison).")
        form.addRow(_("Inpainter:"), self.inpainterCombo)
        self.classEdit = qt.QLineEdit()
        self.classEdit.placeholderText = _("predicted class")
        form.addRow(_("Class:"), self.classEdit)
        self.organSelector = slicer.qMRMLNodeComboBox()
        self.organSelector.nodeTypes = ["vtkMRMLSegmentationNode"]
        self.organSelector.noneEnabled = True
        self.organSelector.addEnabled = False
        self.organSelector.setMRMLScene(slicer.mrmlScene)
        self.organSelector.toolTip = _("Optional organ: confines the region (and enables the Dice size term).")
        form.addRow(_("Organ mask:"), self.organSelector)
        self.optionEdits = {}
        for option in self.logic.counterfactualOptions():
            edit = qt.QLineEdit(str(option.default))
            edit.toolTip = f"{option.help} ({option.allowed()})"
            self.optionEdits[option.name] = edit
            form.addRow(option.display_label + ":", edit)
        self.runButton = qt.QPushButton(_("Find counterfactual region"))
        self.runButton.connect("clicked(bool)", self.onRun)
        form.addRow(self.runButton)

    def updateButtons(self, running: bool, ready: bool) -> None:
        self.runButton.enabled = ready and not running
        self.loadDemoButton.enabled = not running

    def onLoadDemo(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to load the counterfactual demo."), waitCursor=True):
            volume, _lesion, brain = self.logic.loadCounterfactualDemo(self.parameterNode)
            self.organSelector.setCurrentNode(brain)
            self.classEdit.text = "lesion"
            slicer.util.setSliceViewerLayers(background=volume, fit=True)
            self.widget.ui.statusLabel.text = _("Counterfactual demo loaded: press Find counterfactual region.")

    def onRun(self) -> None:
        p = self.parameterNode
        options = {name: edit.text for name, edit in self.optionEdits.items() if edit.text.strip()}
        self.start(_("Counterfactual"), self.logic.counterfactual, inputVolume=p.inputVolume, modelPath=p.modelPath,
                   inpainter=self.inpainterCombo.currentText, targetClass=self.classEdit.text.strip() or None,
                   organSegmentation=self.organSelector.currentNode(), methodParameters=options, device=p.device)

    def showResult(self, result) -> str:
        return result.get("status", "") if isinstance(result, dict) else ""
