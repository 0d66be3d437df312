"""One-click demos of the Regression, IBIX and Counterfactual sections: the demo input as a volume node and the
shipped model.

The inputs are made from the shipped Colin27 T1 by :mod:`XAIExplainerLib.datasets.section_demos` (skull-stripped
with the shipped mask, 2 mm, scaled as in training); no nilearn or mricron-data is needed inside Slicer. Colin27 is
a different subject from the MNI152 template both networks were trained on. A node of the demo's name already in
the scene is reused, so pressing "Load demo" twice adds nothing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .scene import get_context
from .volumes import add_volume_node

__all__ = ["COUNTERFACTUAL_DEMO_BRAIN_NAME", "COUNTERFACTUAL_DEMO_LESION_NAME", "COUNTERFACTUAL_DEMO_MODEL",
           "COUNTERFACTUAL_DEMO_NODE_NAME", "IBIX_DEMO_MODEL", "IBIX_DEMO_NODE_NAME", "IBIX_DEMO_REGION_NAME",
           "REGRESSION_DEMO_MODEL", "REGRESSION_DEMO_NODE_NAME", "load_counterfactual_demo", "load_ibix_demo",
           "load_regression_demo"]

_RESOURCES = Path(__file__).resolve().parents[1] / "Resources"
REGRESSION_DEMO_MODEL = _RESOURCES / "TissueRegressor" / "tissue_regressor.pt"
IBIX_DEMO_MODEL = _RESOURCES / "TissueModel" / "tissue_unet.pt"
REGRESSION_DEMO_NODE_NAME = "Colin27 T1 patch (XAIExplainer regression demo)"
IBIX_DEMO_NODE_NAME = "Colin27 T1 brain 2 mm (XAIExplainer IBIX demo)"
IBIX_DEMO_REGION_NAME = "IBIX demo region"
COUNTERFACTUAL_DEMO_MODEL = _RESOURCES / "LesionClassifier" / "lesion_cnn.pt"
COUNTERFACTUAL_DEMO_NODE_NAME = "Colin27 T1 patch with lesion (XAIExplainer counterfactual demo)"
COUNTERFACTUAL_DEMO_LESION_NAME = "Counterfactual demo lesion (ground truth)"
COUNTERFACTUAL_DEMO_BRAIN_NAME = "Counterfactual demo brain mask"


def _existing(name: str, class_name: str) -> Any:
    node = get_context().scene.GetFirstNodeByName(name)
    return node if node is not None and node.IsA(class_name) else None


def load_regression_demo() -> Any:
    """The 32³ Colin27 patch (right hemisphere: cortex, white matter, lateral ventricle) as a volume node."""
    from ..datasets.section_demos import regression_demo_patch

    node = _existing(REGRESSION_DEMO_NODE_NAME, "vtkMRMLScalarVolumeNode")
    return node if node is not None else add_volume_node(regression_demo_patch(), REGRESSION_DEMO_NODE_NAME)


def load_ibix_demo() -> tuple[Any, Any]:
    """(volume node, segmentation node): the 2 mm Colin27 brain and a painted M^x (right corona radiata), so a
    forward IBIX map is two clicks away (Run network, Run IBIX)."""
    from ..datasets.section_demos import ibix_demo_brain, ibix_demo_region
    from .module_io import labels_to_segmentation

    volume = _existing(IBIX_DEMO_NODE_NAME, "vtkMRMLScalarVolumeNode")
    if volume is None:
        brain = ibix_demo_brain()
        volume = add_volume_node(brain, IBIX_DEMO_NODE_NAME)
    else:
        from .volumes import volume_from_node

        brain = volume_from_node(volume)
    segmentation = _existing(IBIX_DEMO_REGION_NAME, "vtkMRMLSegmentationNode")
    if segmentation is None:
        region = brain.with_array(ibix_demo_region(brain).astype("uint8"))
        segmentation = labels_to_segmentation(region, ["background", "M^x: right corona radiata"], volume)
        segmentation.SetName(IBIX_DEMO_REGION_NAME)
    return volume, segmentation


def load_counterfactual_demo() -> tuple[Any, Any, Any]:
    """(volume, lesion segmentation, brain segmentation): a 32³ Colin27 patch (2 mm, / tissue median) with one
    synthetic lesion the shipped lesion classifier calls "lesion", its ground truth (to compare the counterfactual
    region with) and the brain mask (the optional organ mask)."""
    from ..datasets.section_demos import counterfactual_demo
    from .module_io import labels_to_segmentation

    volume = _existing(COUNTERFACTUAL_DEMO_NODE_NAME, "vtkMRMLScalarVolumeNode")
    lesion = _existing(COUNTERFACTUAL_DEMO_LESION_NAME, "vtkMRMLSegmentationNode")
    brain = _existing(COUNTERFACTUAL_DEMO_BRAIN_NAME, "vtkMRMLSegmentationNode")
    if volume is not None and lesion is not None and brain is not None:
        return volume, lesion, brain
    demo = counterfactual_demo()
    if volume is None:
        volume = add_volume_node(demo.image, COUNTERFACTUAL_DEMO_NODE_NAME)
    if lesion is None:
        lesion = labels_to_segmentation(demo.lesion, ["background", "lesion (ground truth)"], volume)
        lesion.SetName(COUNTERFACTUAL_DEMO_LESION_NAME)
    if brain is None:
        brain = labels_to_segmentation(demo.brain, ["background", "brain"], volume)
        brain.SetName(COUNTERFACTUAL_DEMO_BRAIN_NAME)
    return volume, lesion, brain
