"""The shipped lesion classifier and inpainter: small, load through their adapters, and do their job on data
they were not trained on (the ITK k-means T1)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from XAIExplainerLib.datasets import lesions
from XAIExplainerLib.datasets.samples import available_datasets
from XAIExplainerLib.models.outputs import ClassifierModel
from XAIExplainerLib.models.partial_conv import composite, load_inpainter

RESOURCES = Path(__file__).resolve().parents[1] / "XAIExplainerLib" / "Resources"
CLASSIFIER = RESOURCES / "LesionClassifier" / "lesion_cnn.pt"
INPAINTER = RESOURCES / "Inpainter" / "inpainter.pt"
needs_data = pytest.mark.skipif(not available_datasets()["kmeans_t1"], reason="insighttoolkit5-examples missing")


def test_weights_are_small_float16_with_config_and_evaluation():
    for weights in (CLASSIFIER, INPAINTER):
        assert weights.stat().st_size <= 3 * 2 ** 20
        state = torch.load(weights, map_location="cpu", weights_only=True)
        assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
        evaluation = json.loads((weights.parent / "evaluation.json").read_text())
        assert "command" in evaluation


@needs_data
def test_classifier_separates_held_out_lesion_patches():
    model = ClassifierModel.load(CLASSIFIER, device="cpu")
    assert model.label_names == ["healthy", "lesion"]
    patches = lesions.make_patches(("kmeans",), 16, seed=99)
    p = [model.predict(patches.volume(i))["lesion"] for i in range(len(patches))]
    lesion, healthy = np.array(p)[patches.labels == 1], np.array(p)[patches.labels == 0]
    # rank statistic (AUC) on 8 + 8 unseen patches of an unseen subject
    auc = np.mean([(a > b) + 0.5 * (a == b) for a in lesion for b in healthy])
    assert auc >= 0.75
    model.layer(model.config.extra["last_conv_layer"])  # Grad-CAM's layer exists


@needs_data
def test_inpainter_beats_the_mean_fill_and_keeps_known_voxels():
    net = load_inpainter(INPAINTER)
    patches = lesions.make_patches(("kmeans",), 6, seed=98, lesion_fraction=0.0)
    rng = np.random.default_rng(0)
    holes = torch.from_numpy(np.stack([lesions.random_holes(32, rng) for _ in range(6)])[:, None].astype(np.float32))
    x = torch.from_numpy(patches.images)
    with torch.no_grad():
        out = composite(x, net(x * (1 - holes), 1 - holes), holes)
    assert torch.equal(out[holes == 0], x[holes == 0])
    mean_fill = (x * (1 - holes)).sum(dim=(2, 3, 4), keepdim=True) / (1 - holes).sum(dim=(2, 3, 4), keepdim=True)
    err_net = ((out - x).abs() * holes).sum() / holes.sum()
    err_mean = ((mean_fill - x).abs() * holes).sum() / holes.sum()
    assert err_net < err_mean
