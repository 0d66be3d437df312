"""The IBIX section: run an image-to-image network, paint a region on its input or output, see what it maps to.

Workflow: "Run network" loads the output channels as volumes (one per channel). The user paints M^x on the input
or M^f on an output channel as a segment in the Segment Editor, picks it here and presses "Run IBIX": a forward
map (what the painted input region changes, one heatmap per output channel, shown over that channel) or a
backward map (which input makes the painted output region, one heatmap shown over the input).
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

import qt

import slicer
from slicer.i18n import tr as _

from .base import Section

IBIX_MODES = ("forward", "backward")


class IbixLogic:
    """IBIX from the Python console (mixed into ``XAIExplainerLogic``)::

        outputs = logic.runImageToImage(volumeNode, "/path/model.pt", wait=True)     # channel -> volume node
        maps = logic.ibix(volumeNode, "/path/model.pt", mode="backward", maskSegmentation=seg,
                          segmentId="Segment_1", exact=True, wait=True)               # map name -> heatmap node
        volumeNode, regionSegmentation = logic.loadIbixDemo(parameterNode)  # Colin27 brain + tissue U-Net
    """

    def loadIbixDemo(self, parameterNode=None):
        """Load the IBIX demo (the Colin27 T1 brain at 2 mm and a painted M^x in the right corona radiata) and
        select it with the shipped tissue U-Net. Returns (volume node, segmentation node)."""
        from XAIExplainerLib.slicer_bridge import section_demos

        volume, region = section_demos.load_ibix_demo()
        if parameterNode is not None:
            with slicer.util.NodeModify(parameterNode.parameterNode):
                parameterNode.inputVolume = volume
                parameterNode.modelPath = section_demos.IBIX_DEMO_MODEL
        return volume, region

    def runImageToImage(self, inputVolume, modelPath, device: str = "auto",
                        onProgress: Optional[Callable[[float, str], None]] = None,
                        onFinished: Optional[Callable] = None, wait: bool = False):
        """The network's output channels as volumes on the input's grid (channel name → node)."""
        model, workDir, inputFile = self._prepare("ibix-output", inputVolume, modelPath)
        args = ["ibix-output", "--input", inputFile, "--model", model, "--output", workDir / "outputs",
                "--device", device]

        def load(record: dict):
            from XAIExplainerLib.slicer_bridge.ibix import load_output_nodes

            return load_output_nodes(record["channels"], inputVolume, str(model))

        return self._start(args, load, workDir, onProgress, onFinished, wait)

    def ibix(self, inputVolume, modelPath, mode: str, maskSegmentation, segmentId: str, exact: bool = False,
             multiscale: bool = False, resolution: Optional[str] = None, channel: Optional[str] = None,
             jitters: int = 100, jitterRange: Optional[float] = None, blocksCount: int = 500, blocks: str = "slic",
             threshold: float = 0.0, variant: Optional[str] = None, device: str = "auto",
             onProgress: Optional[Callable[[float, str], None]] = None, onFinished: Optional[Callable] = None,
             wait: bool = False):
        """Forward map of a painted input region (``mode="forward"``) or backward map of a painted output region.

        The segment ``segmentId`` of ``maskSegmentation`` is exported onto the input's grid (resampled when it was
        painted on another one). For a backward map painted on an output channel's volume the channel is found
        from the segmentation's reference geometry unless ``channel`` is given. Returns map name → heatmap node.
        """
        from XAIExplainerLib.slicer_bridge.ibix import export_segment_mask, painted_channel

        if mode not in IBIX_MODES:
            raise ValueError(_("IBIX mode must be 'forward' or 'backward', not '{mode}'.").format(mode=mode))
        model, workDir, inputFile = self._prepare("ibix", inputVolume, modelPath)
        try:
            export_segment_mask(maskSegmentation, segmentId, inputVolume, workDir / "mask.nii.gz", inputFile)
        except Exception:
            import shutil

            shutil.rmtree(workDir, ignore_errors=True)
            raise
        args = ["ibix", "--input", inputFile, "--model", model, "--mode", mode, "--mask", workDir / "mask.nii.gz",
                "--output", workDir / "maps", "--device", device, "--jitters", int(jitters)]
        args += self._ibixOptions(mode, exact, multiscale, resolution, jitterRange, blocksCount, blocks, threshold,
                                  variant)
        channel = channel if channel is not None or mode == "forward" else painted_channel(maskSegmentation)
        if channel is not None and mode == "backward":
            args += ["--channel", channel]
        segmentName = maskSegmentation.GetSegmentation().GetSegment(segmentId).GetName()
        label = f"{mode}{' exact' if exact else ''}: {segmentName}" + (f" in {channel}" if channel else "")
        logging.info(f"XAIExplainer: IBIX {label}")

        def load(record: dict):
            from XAIExplainerLib.slicer_bridge.ibix import load_map_nodes

            return load_map_nodes(record, inputVolume, workDir, label)

        return self._start(args, load, workDir, onProgress, onFinished, wait)

    @staticmethod
    def _ibixOptions(mode: str, exact: bool, multiscale: bool, resolution: Optional[str],
                     jitterRange: Optional[float], blocksCount: int, blocks: str, threshold: float,
                     variant: Optional[str]) -> list:
        args: list = ["--exact"] if exact else []
        if jitterRange is not None:
            args += ["--jitter-range", float(jitterRange)]
        if mode == "backward":
            args += ["--blocks", blocks, "--blocks-count", int(blocksCount)]
            if multiscale:
                args += ["--multiscale", "--threshold", float(threshold)]
            if resolution:
                args += ["--resolution", resolution]
            if variant:
                args += ["--backward-variant", variant]
        elif variant:
            args += ["--forward-variant", variant]
        return args


class IbixSection(Section):
    """Widgets of the IBIX section (built in code, below "Explain")."""

    title = _("IBIX: image-to-image (paint a region, see what it maps to)")

    def build(self, form) -> None:
        import ctk

        self.loadDemoButton = qt.QPushButton(_("Load demo"))
        self.loadDemoButton.toolTip = _("Load the Colin27 T1 brain (2 mm), a painted region in its white matter and "
                                        "the shipped tissue U-Net (T1 -> grey/white/CSF); then Run network, Run IBIX.")
        self.loadDemoButton.connect("clicked(bool)", self.onLoadDemo)
        form.addRow(self.loadDemoButton)
        self.runNetworkButton = qt.QPushButton(_("Run network"))
        self.runNetworkButton.toolTip = _("Run the image-to-image model on the input volume and load its output "
                                          "channels as volumes, so M^f can be painted on them.")
        self.runNetworkButton.connect("clicked(bool)", self.onRunNetwork)
        form.addRow(self.runNetworkButton)
        self.modeComboBox = qt.QComboBox()
        self.modeComboBox.addItem(_("Forward: painted input region -> output change"), "forward")
        self.modeComboBox.addItem(_("Backward: painted output region -> input influence"), "backward")
        form.addRow(_("Mapping:"), self.modeComboBox)
        self.segmentSelector = slicer.qMRMLSegmentSelectorWidget()
        self.segmentSelector.setMRMLScene(slicer.mrmlScene)
        self.segmentSelector.toolTip = _("The painted region: M^x on the input (forward) or M^f on an output "
                                         "channel volume (backward). Paint it in the Segment Editor.")
        form.addRow(_("Painted region:"), self.segmentSelector)
        self.exactCheckBox = qt.QCheckBox(_("Exact derivatives (one JVP / one backward pass; seconds)"))
        self.exactCheckBox.checked = True
        form.addRow(self.exactCheckBox)
        self.multiscaleCheckBox = qt.QCheckBox(_("Multiscale blocks (backward)"))
        form.addRow(self.multiscaleCheckBox)
        self.blockScoresCheckBox = qt.QCheckBox(_("Exact: score blocks (Eq. 6) instead of voxels"))
        form.addRow(self.blockScoresCheckBox)
        self.jittersSpinBox = qt.QSpinBox()
        self.jittersSpinBox.setRange(1, 1000)
        self.jittersSpinBox.value = 100
        self.jittersSpinBox.toolTip = _("N jitters per sign (2N model runs per region) when not exact.")
        form.addRow(_("Jitters N:"), self.jittersSpinBox)
        self.blocksSpinBox = ctk.ctkSliderWidget()
        self.blocksSpinBox.decimals, self.blocksSpinBox.minimum, self.blocksSpinBox.maximum = 0, 2, 5000
        self.blocksSpinBox.value = 500
        form.addRow(_("Blocks K:"), self.blocksSpinBox)
        self.runButton = qt.QPushButton(_("Run IBIX"))
        self.runButton.connect("clicked(bool)", self.onRunIbix)
        form.addRow(self.runButton)

    def updateButtons(self, running: bool, ready: bool) -> None:
        self.loadDemoButton.enabled = not running
        tip = "" if ready else _("Select an input volume and an image-to-image model first.")
        for button in (self.runNetworkButton, self.runButton):
            button.enabled = ready and not running
            if tip:
                button.toolTip = tip

    def onLoadDemo(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to load the IBIX demo."), waitCursor=True):
            volume, region = self.logic.loadIbixDemo(self.parameterNode)
            slicer.util.setSliceViewerLayers(background=volume, fit=True)
            self.segmentSelector.setCurrentNode(region)
            self.modeComboBox.currentIndex = self.modeComboBox.findData("forward")
            self.widget.ui.statusLabel.text = _("IBIX demo loaded: press Run network, then Run IBIX (forward).")

    def onRunNetwork(self) -> None:
        p = self.parameterNode
        self.start(_("Run network"), self.logic.runImageToImage, inputVolume=p.inputVolume,
                   modelPath=p.modelPath, device=p.device)

    def onRunIbix(self) -> None:
        p = self.parameterNode
        exact = bool(self.exactCheckBox.checked)
        self.start(_("IBIX"), self.logic.ibix, inputVolume=p.inputVolume, modelPath=p.modelPath,
                   mode=self.modeComboBox.itemData(self.modeComboBox.currentIndex), maskSegmentation=self.segmentSelector.currentNode(),
                   segmentId=self.segmentSelector.currentSegmentID(), exact=exact,
                   multiscale=bool(self.multiscaleCheckBox.checked),
                   resolution="blocks" if exact and self.blockScoresCheckBox.checked else None,
                   jitters=int(self.jittersSpinBox.value), blocksCount=int(self.blocksSpinBox.value),
                   device=p.device)

    def showResult(self, result) -> str:
        if not result:
            return _("Done.")
        first = next(iter(result.values()))
        if first.GetAttribute("XAIExplainer.result") == "ibix-output":
            slicer.util.setSliceViewerLayers(background=first, fit=True)
            return _("Done: output channels {names} loaded; paint M^f on one of them.").format(
                names=", ".join(result))
        return _("Done: {n} IBIX map(s) shown as heatmaps.").format(n=len(result))


__all__ = ["IbixLogic", "IbixSection", "IBIX_MODES"]
