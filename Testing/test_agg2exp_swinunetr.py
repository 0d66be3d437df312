"""explain_volume on a tiny random MONAI SwinUNETR (64³ model grid; a 32³ grid leaves a 1-voxel bottleneck that instance norm rejects): invariants on a real architecture."""
import numpy as np
import pytest
import torch

from XAIExplainerLib.pipelines.roi_importance import roi_importance
from XAIExplainerLib.pipelines.agg2exp import explain_volume
from XAIExplainerLib.models import ModelConfig, SegmentationModel
from XAIExplainerLib.volume import Volume


@pytest.fixture(scope="module")
def swin_model():
    from monai.networks.nets import SwinUNETR

    torch.manual_seed(0)
    config = ModelConfig(label_names=["background", "a", "b"], modality="CT", feature_size=12,
                         spacing=(2.0, 2.0, 2.0), roi_size=(64, 64, 64))
    net = SwinUNETR(in_channels=1, out_channels=3, feature_size=12, spatial_dims=3)
    with torch.no_grad():  # make sure all three classes occur in the prediction: bias the output layer
        net.out.conv.conv.bias.copy_(torch.tensor([0.0, 0.0, 0.0]))
    return SegmentationModel.from_network(net, config, device="cpu")


def test_swinunetr_pipeline_invariants(swin_model):
    from XAIExplainerLib.attribution import vanilla_gradient

    seen = {}

    def spy(model, x, target, **kwargs):  # the registry's vanilla gradient, recording what the pipeline passed
        kwargs.pop("seed")  # vanilla gradient is deterministic
        result = vanilla_gradient(model, x, target, **kwargs)
        seen.update(x=x, target=target, result=result)
        return result

    rng = np.random.default_rng(0)
    hu = rng.normal(0, 300, (64, 64, 64)).astype(np.float32)  # 2 mm grid = the model grid, RAS after reorient
    vol = Volume(hu, spacing=(2.0, 2.0, 2.0))
    expl = explain_volume(vol, swin_model, method=spy)
    present = [k for k, n in enumerate(expl.class_names) if n not in expl.absent_classes]
    assert present  # a random network predicts at least one class
    np.testing.assert_allclose(expl.matrix[present].sum(axis=1), 1.0, atol=1e-9)
    for k, name in enumerate(expl.class_names):
        if name in expl.absent_classes:
            np.testing.assert_array_equal(expl.matrix[k], 0.0)
    # The matrix is measured in model space: recompute it from the model-space gradient and the class masks.
    target = seen["target"]
    attr = swin_model.to_array(seen["result"].attributions)
    masks = swin_model.to_array(target.masks.to(torch.uint8)).astype(bool)
    labels = np.zeros(masks.shape[1:], int)
    for k, c in enumerate(target.classes):
        labels[masks[k]] = c
    direct = roi_importance(attr, labels, target.names, roi_ids=[0, 1, 2], roi_names=swin_model.label_names,
                            absent=target.absent)
    np.testing.assert_allclose(expl.matrix, direct.matrix, atol=1e-6)
    assert expl.provenance["model"]["sha256"] == swin_model.sha256
    # heatmaps come back on the input grid; here that grid equals the model grid up to the RAS flip
    heat = expl.attributions[expl.class_names[present[0]]].array
    assert heat.shape == vol.shape
    np.testing.assert_allclose(np.abs(heat).sum(), np.abs(attr[present[0]]).sum(), rtol=1e-5)
