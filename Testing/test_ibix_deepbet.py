"""IBIX exact mode on a real TorchScript network (deepbet, configured by Testing/deepbet_model.json) and Colin27.

Known answer without a closed form: forward and backward maps are adjoint, so Σ_{M^f} J·M^x (forward map summed over
the output region) must equal Σ_{M^x} Jᵀ·M^f (backward map summed over the input region), and the backward map's
directional derivative must match a central finite difference of Σ_{M^f} f. Skipped where deepbet or Colin27 is
not installed; about 30 s on one CPU core (256³ model grid)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from XAIExplainerLib.attribution.ibix import backward_map_exact, forward_map_exact

ibix_demo = pytest.importorskip("XAIExplainerLib.extras.ibix_demo")


@pytest.fixture(scope="module")
def deepbet():
    try:
        weights = ibix_demo.deepbet_weights()
    except FileNotFoundError:
        pytest.skip("deepbet is not installed")
    if not ibix_demo.COLIN27.exists():
        pytest.skip("Colin27 (mricron-data) is not installed")
    from XAIExplainerLib.pipelines.ibix import load_image_to_image
    from XAIExplainerLib.volume import read_volume

    model = load_image_to_image(weights, device="cpu", config=ibix_demo.DEEPBET_CONFIG)
    return model, model.to_tensor(model.preprocess(read_volume(ibix_demo.COLIN27)))


def test_exact_forward_and_backward_maps_on_deepbet_are_adjoint(deepbet):
    model, x = deepbet
    with torch.no_grad():
        brain = model(x)[0, 1]
    border = torch.nonzero((brain > 0.2) & (brain < 0.8))
    z, y, w = (int(v) for v in border[len(border) // 2])  # a voxel on the brain-mask border, where decisions hang
    m_x = torch.zeros(x.shape[2:])
    m_x[z - 3:z + 3, y - 3:y + 3, w - 3:w + 3] = 1
    m_f = torch.zeros(x.shape[2:])
    m_f[z - 6:z + 6, y - 6:y + 6, w - 6:w + 6] = 1
    forward = forward_map_exact(model, x, m_x)   # (2, D, H, W): one JVP
    # M^f on the brain channel only (softmax channels sum to one, so both channels together have derivative 0)
    brain_only = backward_map_exact(model, x, torch.stack([torch.zeros_like(m_f), m_f]))
    brain_lhs, brain_rhs = float((forward[1] * m_f).sum()), float((brain_only[0] * m_x).sum())
    assert abs(brain_lhs) > 1e-3 and abs(brain_lhs - brain_rhs) <= 2e-3 * abs(brain_lhs)
    # central finite difference of Σ_{M^f} brain probability along M^x agrees with the exact directional derivative
    eps = 0.002  # the input is z-scored (unit ~ 1); larger steps see the curvature of the sigmoid-like border
    with torch.no_grad():
        plus, minus = model(x + eps * m_x), model(x - eps * m_x)
    finite = float(((plus - minus)[0, 1] * m_f).sum()) / (2 * eps)
    assert abs(finite - brain_lhs) <= 0.05 * abs(brain_lhs)
