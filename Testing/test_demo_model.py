"""The shipped demo Swin UNETR segments real MRI (Colin27) into the AAL-derived structures it was trained for."""
from __future__ import annotations

import numpy as np
import pytest

from XAIExplainerLib.datasets import samples as sample_data
from XAIExplainerLib.datasets.brain_structures import STRUCTURE_NAMES, structure_of, structures_from_aal
from XAIExplainerLib.extras.demo import DEMO_MODEL_PATH
from XAIExplainerLib.models import SegmentationModel
from XAIExplainerLib.volume import resample_to_reference, resample_to_spacing


def test_structure_grouping_follows_aal_names():
    assert structure_of("Frontal_Sup_Orb_L") == "frontal_L"
    assert structure_of("Hippocampus_R") == "limbic_R"
    assert structure_of("Thalamus_L") == "deep_grey_L"
    assert structure_of("Vermis_4_5") == "cerebellum"
    _, names = sample_data.aal_atlas()
    groups = {structure_of(n) for n in names.values()}
    assert groups == set(STRUCTURE_NAMES[1:])


def test_demo_model_segments_colin27_with_useful_dice():
    model = SegmentationModel.load(DEMO_MODEL_PATH, device="cpu")
    assert model.label_names == STRUCTURE_NAMES
    image = resample_to_spacing(sample_data.colin27_t1_hires(), (2.0, 2.0, 2.0))  # unseen reconstruction
    aal, names = sample_data.aal_atlas()
    reference = structures_from_aal(resample_to_reference(aal, image, "nearest").array.astype(np.int64), names)
    labels = model.segment(image, return_probabilities=False).labels.array
    assert labels.shape == image.shape
    dice = []
    for c in range(1, len(STRUCTURE_NAMES)):
        p, r = labels == c, reference == c
        dice.append(2 * (p & r).sum() / (p.sum() + r.sum()))
    # Chance level for 13 structures is far below this; the measured figures are in the README.
    assert np.mean(dice) > 0.4, dict(zip(STRUCTURE_NAMES[1:], np.round(dice, 3)))
    brain = (reference > 0)
    assert (labels[brain] > 0).mean() > 0.8  # the brain is labelled as brain
