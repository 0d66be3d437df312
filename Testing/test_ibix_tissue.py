"""The shipped three-channel tissue network (T1 → grey / white / CSF fractions) and multi-channel IBIX on it.

Proves: the weights are small float16 with a config the ImageToImageModel adapter loads; the recorded held-out
(right-hemisphere) metrics are what the shipped file gives through the adapter; and on this real nonlinear
network the per-channel maps are consistent: Σ_{M^f} of channel c's forward map (one JVP) equals Σ_{M^x} of the
backward map of M^f painted on channel c only (one VJP), and the exact Eq. 6 block scores are fractions in [0, 1].
About 30 s on one CPU core (2 mm MNI152 grid)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "XAIExplainerLib" / "Resources" / "TissueModel"


def _training_script():
    spec = importlib.util.spec_from_file_location("train_tissue_segmenter", ROOT / "tools" /
                                                  "train_tissue_segmenter.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tissue():
    pytest.importorskip("nilearn")
    from XAIExplainerLib.pipelines.ibix import load_image_to_image

    model = load_image_to_image(FOLDER / "tissue_unet.pt", device="cpu")
    script = _training_script()
    model_space, targets, left, inside = script.training_data(model.config)
    return model, script, model_space, targets, left, inside


def test_weights_are_small_float16_with_a_loadable_config(tissue):
    model = tissue[0]
    weights = FOLDER / "tissue_unet.pt"
    assert weights.stat().st_size <= 3 * 1024 * 1024
    state = torch.load(weights, map_location="cpu")
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.float16}
    assert model.kind == "image_to_image" and model.channel_names == ["grey_matter", "white_matter", "csf"]


def test_recorded_held_out_metrics_are_reproduced_through_the_adapter(tissue):
    model, script, model_space, targets, left, inside = tissue
    recorded = json.loads((FOLDER / "evaluation.json").read_text())["metrics_float16"]
    x = model.to_tensor(model_space)
    with torch.no_grad():
        pred = model(x)[0].numpy()
    right = (~left) & inside
    for c, name in enumerate(model.channel_names):
        p, t = pred[c][right], targets[c][right]
        assert abs(float(np.abs(p - t).mean()) - recorded[name]["mae"]) < 2e-3
        r2 = 1 - float(((p - t) ** 2).sum() / ((t - t.mean()) ** 2).sum())
        assert abs(r2 - recorded[name]["r2"]) < 2e-3
    assert recorded["white_matter"]["r2"] > 0.8 and recorded["grey_matter"]["r2"] > 0.7  # what the README claims


def test_per_channel_forward_and_backward_maps_are_adjoint_and_eq6_is_a_fraction(tissue):
    from XAIExplainerLib.attribution.ibix import backward_map_exact, forward_map_exact
    from XAIExplainerLib.attribution.ibix_blocks import block_scores_exact
    from XAIExplainerLib.attribution.supervoxels import cube_supervoxels

    model, _, model_space, targets, left, inside = tissue
    x = model.to_tensor(model_space)
    z, y, w = (int(v) for v in np.argwhere((~left) & inside & (targets[1] > 0.9))[2000])  # right white matter
    m_x = torch.zeros(x.shape[2:])
    m_x[z - 2:z + 2, y - 2:y + 2, w - 2:w + 2] = 1
    m_f = torch.zeros(x.shape[2:])
    m_f[z - 5:z + 5, y - 5:y + 5, w - 5:w + 5] = 1
    forward = forward_map_exact(model, x, m_x)  # (3, D, H, W)
    for c in range(3):
        one_channel = torch.zeros((3, *m_f.shape))
        one_channel[c] = m_f
        lhs = float((forward[c] * m_f).sum())
        rhs = float((backward_map_exact(model, x, one_channel)[0] * m_x).sum())
        assert abs(lhs) > 1e-3 and abs(lhs - rhs) <= 1e-3 * abs(lhs), (c, lhs, rhs)
    cubes = cube_supervoxels(tuple(x.shape[2:]), 64).numpy()
    inner, mirrored = cubes[z, y, w], cubes[z, y, x.shape[4] - 1 - w]  # the block holding M^f; its mirror image
    blocks = np.where(cubes == inner, 0, np.where(cubes == mirrored, 1, -1))
    scores = block_scores_exact(model, x, m_f, blocks, batch_size=2)
    # the block under M^f dominates; its mirror image still reaches M^f a little (instance norm: global statistics)
    assert np.all((scores >= 0) & (scores <= 1)) and scores[0] > 5 * scores[1] > 0
