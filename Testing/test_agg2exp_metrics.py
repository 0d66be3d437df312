"""Quality metrics: known answers on a voxel-wise linear segmentation model."""
import numpy as np
import pytest
import torch

from XAIExplainerLib.attribution import AttributionResult, ClassAggregate
from XAIExplainerLib.errors import CancelledError, UnknownMethodError
from XAIExplainerLib.metrics import average_sensitivity, complexity, evaluate_attributions, faithfulness_correlation

W = torch.tensor([-1.0, 1.0, 2.0], dtype=torch.float64)
B = torch.tensor([0.5, 0.0, -0.6], dtype=torch.float64)


def linear_model(x):
    """Per-voxel logits l_c(v) = w_c x(v) + b_c: f̂_c is exactly linear in x on the fixed mask."""
    return W.view(1, -1, 1, 1, 1) * x + B.view(1, -1, 1, 1, 1)


def _setup(seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((1, 1, 10, 12, 14), generator=gen, dtype=torch.float64)
    target = ClassAggregate.from_logits(linear_model(x), label_names=["bg", "mid", "high"])
    assert not target.absent
    return x, target


def exact_contributions(model, x, target, **kwargs):
    """x ⊙ ∂f̂_c/∂x for the linear model = each voxel's exact contribution to f̂_c(x) - f̂_c(0)."""
    maps = W.view(-1, 1, 1, 1) * x[0, 0] * target.masks.to(torch.float64)
    return AttributionResult(maps.float(), list(target.names), "exact", seconds=0.5, n_model_evaluations=1)


def gradient(model, x, target, **kwargs):
    maps = W.view(-1, 1, 1, 1) * target.masks.to(torch.float64)
    return AttributionResult(maps.float(), list(target.names), "gradient")


def test_faithfulness_is_one_for_exact_contributions_and_low_for_noise():
    x, target = _setup()
    exact = exact_contributions(linear_model, x, target)
    r = faithfulness_correlation(linear_model, x, target, exact, n_subsets=32, subset_fraction=0.05, seed=1)
    np.testing.assert_allclose(r, 1.0, atol=1e-6)
    noise = torch.randn(exact.attributions.shape, generator=torch.Generator().manual_seed(5))
    r_noise = faithfulness_correlation(linear_model, x, target, noise, n_subsets=32, subset_fraction=0.05, seed=1)
    assert np.all(np.abs(r_noise) < 0.6)
    negated = faithfulness_correlation(linear_model, x, target, -exact.attributions, n_subsets=32,
                                       subset_fraction=0.05, seed=1)
    np.testing.assert_allclose(negated, -1.0, atol=1e-6)


def test_faithfulness_batches_all_classes_per_forward():
    x, target = _setup()
    calls = []

    def counting(batch):
        calls.append(batch.shape[0])
        return linear_model(batch)

    faithfulness_correlation(counting, x, target, exact_contributions(None, x, target), n_subsets=20, batch_size=8)
    assert calls == [1, 8, 8, 4]  # one clean forward, then 20 perturbed inputs on the batch axis, all classes each


def test_complexity_known_map():
    a = np.zeros((2, 2, 2, 5))
    a[0].flat[:6] = [10.0, -5.0, 1.0, 1.0001, -0.99, 2.0]  # > 0.1·10 = 1 strictly: 10, -5, 1.0001, 2
    np.testing.assert_allclose(complexity(a), [4 / 20, 0.0])
    np.testing.assert_allclose(complexity(a, theta=0.45), [2 / 20, 0.0])


def test_average_sensitivity_zero_for_input_independent_method():
    x, target = _setup()
    sens = average_sensitivity(linear_model, x, target, gradient, n_samples=2, noise=0.1, seed=0)
    np.testing.assert_allclose(sens, 0.0, atol=1e-7)


def test_average_sensitivity_of_input_times_gradient_grows_with_noise():
    x, target = _setup()
    small = average_sensitivity(linear_model, x, target, exact_contributions, n_samples=3, noise=0.01, seed=3)
    large = average_sensitivity(linear_model, x, target, exact_contributions, n_samples=3, noise=0.1, seed=3)
    again = average_sensitivity(linear_model, x, target, exact_contributions, n_samples=3, noise=0.1, seed=3)
    assert np.all(small > 0) and np.all(large > 5 * small)
    np.testing.assert_array_equal(large, again)


def test_evaluate_attributions_reports_per_class_and_absent(monkeypatch):
    x, _ = _setup()
    x = x.clamp(0.0, 0.3)  # nothing is bright enough for "high"
    target = ClassAggregate.from_logits(linear_model(x), label_names=["bg", "mid", "high"])
    assert target.absent == ["high"]
    result = exact_contributions(linear_model, x, target)
    out = evaluate_attributions(linear_model, x, target, exact_contributions, result,
                                faithfulness={"n_subsets": 16, "subset_fraction": 0.05},
                                sensitivity={"n_samples": 1})
    assert out["classes"]["bg"]["faithfulness_correlation"] == pytest.approx(1.0, abs=1e-6)
    assert out["classes"]["high"]["faithfulness_correlation"] is None
    assert "absent" in out["classes"]["high"]["note"]
    assert out["classes"]["high"]["complexity"] == 0.0
    assert out["wall_time_s"] == 0.5


def test_unknown_method_and_cancel():
    x, target = _setup()
    with pytest.raises(UnknownMethodError, match="Unknown attribution method"):
        average_sensitivity(linear_model, x, target, "no_such_method", n_samples=1)
    with pytest.raises(CancelledError):
        faithfulness_correlation(linear_model, x, target, exact_contributions(None, x, target), cancel=lambda: True)
