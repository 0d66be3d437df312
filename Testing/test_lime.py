"""Image-Reg-LIME (issue 11): known answers on linear models, agreement with the `lime` package, reference mode,
multi-target = single-target runs, and bad input rejected before any model evaluation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from XAIExplainerLib.attribution import RegressionScore, get_method
from XAIExplainerLib.attribution.lime import (
    cosine_distances,
    exponential_kernel,
    image_reg_lime,
    sample_design,
)
from XAIExplainerLib.errors import GeometryMismatchError, MethodParameterError, UnknownClassError

NAMES = ["defocus", "astig_v", "astig_o"]


class VoxelLinear(torch.nn.Module):
    """``y_t = Σ_v A_tv x_v`` (float64): with fill zero, exactly linear in supervoxel presence."""

    def __init__(self, shape=(8, 8, 8), n_out: int = 3, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.A = torch.nn.Parameter(torch.randn(n_out, *shape, generator=g, dtype=torch.float64))
        self.calls = 0

    def forward(self, x):
        self.calls += x.shape[0]
        return (x[:, 0:1] * self.A.unsqueeze(0)).sum((2, 3, 4))


class Nonlinear(VoxelLinear):
    def forward(self, x):
        y = super().forward(x)
        return torch.tanh(y / 20.0) + 0.1 * y ** 2 / 100.0


def _volume(shape=(8, 8, 8), seed=1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, 1, *shape, generator=g, dtype=torch.float64) + 0.5)


def _coefficients(model: VoxelLinear, x: torch.Tensor, ids: torch.Tensor) -> np.ndarray:
    """c_tj = Σ_{v in j} A_tv x_v: the exact coefficient of supervoxel j's presence for target t."""
    contrib = (model.A * x[0, 0]).detach().reshape(model.A.shape[0], -1)
    n = int(ids.max()) + 1
    return torch.zeros(model.A.shape[0], n, dtype=torch.float64).index_add_(1, ids.flatten(), contrib).numpy()


def test_registered_for_regression_with_documented_defaults():
    spec = get_method("image_reg_lime")
    assert spec.model_kinds == ("regression",)
    assert spec.defaults() == {"n_samples": 1000, "kernel_width": 0.25, "alpha": 1.0, "fill": "zero",
                               "supervoxels": "slic", "n_segments": 512, "compactness": 0.01,
                               "reference_width": 1.0, "blur_sigma": 2.0}
    with pytest.raises(MethodParameterError, match="kernel_width"):
        spec.validate({"kernel_width": 0})


def test_linear_model_coefficients_recovered_and_prediction_reproduced():
    model, x = VoxelLinear(), _volume()
    target = RegressionScore.build("higher", NAMES)
    res = image_reg_lime(model, x, target, supervoxels="cubes", n_segments=8, n_samples=200, alpha=1e-12, seed=3)
    exact = _coefficients(model, x, res.segments)
    rel = np.abs(res.weights.numpy() - exact).max() / np.abs(exact).max()
    assert rel < 1e-6
    assert np.abs(np.array(res.intercept)).max() < 1e-6 * np.abs(exact).max()
    # all supervoxels kept: intercept + Σ weights = the model's prediction, for every target
    with torch.no_grad():
        y = model(x)[0].numpy()
    np.testing.assert_allclose(np.array(res.intercept) + res.weights.numpy().sum(1), y, rtol=1e-8)
    assert np.allclose(res.r2, 1.0)
    # painted back: every voxel carries its supervoxel's weight
    assert torch.equal(res.attributions[1], res.weights[1].float()[res.segments])
    assert res.n_model_evaluations == 200


def test_multi_target_equals_single_target_runs_on_same_samples():
    model, x = Nonlinear(), _volume()
    common = dict(supervoxels="cubes", n_segments=8, n_samples=60, seed=5)
    calls = model.calls
    both = image_reg_lime(model, x, RegressionScore.build("higher", NAMES), **common)
    assert model.calls - calls == 60  # one forward per sample for all three targets
    for t, name in enumerate(NAMES):
        single = image_reg_lime(model, x, RegressionScore.build("higher", NAMES, name), **common)
        np.testing.assert_allclose(single.weights.numpy()[0], both.weights.numpy()[t], rtol=1e-9, atol=1e-12)
        assert single.intercept[0] == pytest.approx(both.intercept[t], rel=1e-9, abs=1e-12)
        assert single.r2[0] == pytest.approx(both.r2[t], rel=1e-9)


def test_agrees_with_lime_base_for_every_target():
    from lime.lime_base import LimeBase
    from sklearn.linear_model import Ridge

    model = Nonlinear(shape=(16, 16, 16))
    z, y, w = np.mgrid[:16, :16, :16]
    x = torch.from_numpy(np.sin(z / 3.0) + np.cos(y / 2.5) * np.sin(w / 4.0) + 2.0)[None, None]
    with pytest.warns(UserWarning, match="SLIC produced"):
        res = image_reg_lime(model, x, RegressionScore.build("higher", NAMES), supervoxels="slic", n_segments=27,
                             compactness=0.01, n_samples=80, seed=0)
    n = res.weights.shape[1]
    assert res.params["n_segments_obtained"] == n == int(res.segments.max()) + 1 > 2
    base = LimeBase(lambda d: np.sqrt(np.exp(-(d ** 2) / 0.25 ** 2)))
    distances = cosine_distances(res.design)
    for t in range(len(NAMES)):
        intercept, pairs, score, _ = base.explain_instance_with_data(
            res.design, res.scores, distances, t, n, feature_selection="none", model_regressor=Ridge(alpha=1.0))
        theirs = np.zeros(n)
        for j, w in pairs:
            theirs[j] = w
        np.testing.assert_allclose(res.weights.numpy()[t], theirs, rtol=1e-9, atol=1e-12)
        assert res.intercept[t] == pytest.approx(intercept, rel=1e-9)
        assert res.r2[t] == pytest.approx(score, rel=1e-9)


def test_samples_and_kernel_are_limes():
    design = sample_design(5, 10, seed=7)
    ref = np.random.RandomState(7).randint(0, 2, 50).reshape(10, 5)
    ref[0] = 1
    assert np.array_equal(design, ref)
    d = cosine_distances(design)
    assert d[0] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(exponential_kernel(d, 0.25), np.sqrt(np.exp(-d ** 2 / 0.0625)))


def test_reference_mode_weights_follow_documented_formula():
    model, x = VoxelLinear(), _volume()
    with torch.no_grad():
        y0 = float(model(x)[0, 2])
    a_star = y0 + 5.0
    target = RegressionScore.build("closeness", NAMES, "astig_o", reference=a_star)
    common = dict(supervoxels="cubes", n_segments=8, n_samples=100, seed=2)
    res = image_reg_lime(model, x, target, reference_width=0.5, **common)
    # independent recomputation of the documented weighting from the raw predictions
    coef = _coefficients(model, x, res.segments)[2]
    r = np.abs(res.design @ coef - a_star)
    kernel = exponential_kernel(cosine_distances(res.design), 0.25)
    expected = kernel * np.exp(-(r / (0.5 * abs(y0 - a_star))) ** 2)
    np.testing.assert_allclose(res.sample_weights, expected, rtol=1e-9)
    np.testing.assert_allclose(res.scores[:, 0], -(r ** 2), rtol=1e-9)
    # a wider reference window moves the weights toward plain LIME's kernel
    wide = image_reg_lime(model, x, target, reference_width=1e6, **common)
    np.testing.assert_allclose(wide.sample_weights, kernel, rtol=1e-9)
    assert not np.allclose(wide.weights.numpy(), res.weights.numpy())
    # known answer: a* above every sample's prediction makes |y − a*| = a* − y exactly linear, so the surrogate
    # is −c: supervoxels raising y (c > 0) pull toward a* (weight < 0, "against not-a*"), the others support not-a*
    far = float(np.abs(coef).sum()) * 10 + y0
    far_target = RegressionScore.build("closeness", NAMES, "astig_o", reference=far)
    exact = image_reg_lime(model, x, far_target, reference_width=0.5, alpha=1e-12, **common)
    np.testing.assert_allclose(exact.weights.numpy()[0], -coef, rtol=1e-6)
    assert res.params["reads"] == "positive = supports not-a*"


@pytest.mark.parametrize("kwargs, error, match", [
    ({"n_samples": 0}, MethodParameterError, "n_samples"),
    ({"n_samples": -5}, MethodParameterError, "n_samples"),
    ({"kernel_width": 0.0}, MethodParameterError, "kernel_width"),
    ({"kernel_width": -1.0}, MethodParameterError, "kernel_width"),
    ({"fill": "noise"}, MethodParameterError, "fill"),
    ({"supervoxels": torch.zeros(4, 4, 4, dtype=torch.long)}, GeometryMismatchError, "grid"),
    ({"supervoxels": "watershed"}, MethodParameterError, "supervoxels"),
])
def test_bad_options_fail_before_any_model_evaluation(kwargs, error, match):
    model, x = VoxelLinear(), _volume()
    x_before = x.clone()
    with pytest.raises(error, match=match) as info:
        image_reg_lime(model, x, RegressionScore.build("higher", NAMES), **kwargs)
    assert "\n" not in str(info.value)
    assert model.calls == 0
    assert torch.equal(x, x_before)


def test_reference_without_a_target_and_unknown_targets_rejected():
    model, x = VoxelLinear(), _volume()
    with pytest.raises(MethodParameterError, match="needs one target"):
        image_reg_lime(model, x, RegressionScore.build("closeness", NAMES, None, reference=0.1),
                       supervoxels="cubes", n_segments=8)
    assert model.calls == 0
    with pytest.raises(UnknownClassError):
        RegressionScore.build("higher", NAMES, "coma")
    with pytest.raises(UnknownClassError):
        RegressionScore.build("higher", NAMES, 7)


def test_fill_mean_and_blur_change_the_perturbation():
    model, x = VoxelLinear(), _volume()
    target = RegressionScore.build("higher", NAMES)
    common = dict(supervoxels="cubes", n_segments=8, n_samples=40, alpha=1e-12, seed=1)
    zero = image_reg_lime(model, x, target, fill="zero", **common)
    mean = image_reg_lime(model, x, target, fill="mean", **common)
    # with the supervoxel's own mean as fill, a linear model's coefficient is Σ A (x − mean_j) over the supervoxel
    ids = mean.segments
    means = torch.zeros(8, dtype=torch.float64).index_add_(0, ids.flatten(), x[0, 0].flatten()) / \
        torch.bincount(ids.flatten()).double()
    shifted = x.clone()
    shifted[0, 0] = x[0, 0] - means[ids]
    np.testing.assert_allclose(mean.weights.numpy(), _coefficients(model, shifted, ids), rtol=1e-6, atol=1e-8)
    blur = image_reg_lime(model, x, target, fill="blur", blur_sigma=1.5, **common)
    from scipy.ndimage import gaussian_filter

    blurred = torch.from_numpy(gaussian_filter(x.numpy(), sigma=(0, 0, 1.5, 1.5, 1.5)))
    np.testing.assert_allclose(blur.weights.numpy(), _coefficients(model, x - blurred, ids), rtol=1e-6, atol=1e-8)
    assert not np.allclose(blur.weights.numpy(), zero.weights.numpy())
