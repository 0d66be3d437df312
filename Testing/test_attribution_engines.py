"""Targets with known answers, the one batching loop, the input policy and what provenance says about precision."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from XAIExplainerLib.attribution import (  # noqa: E402
    OutputMask,
    RegressionScore,
    SlidingWindow,
    Target,
    integrated_gradients,
    smoothgrad,
    vanilla_gradient,
)
from XAIExplainerLib.attribution import _batching  # noqa: E402
from XAIExplainerLib.attribution.inputs import baseline_tensor, prepare_input  # noqa: E402
from XAIExplainerLib.attribution.kernel_shap import kernel_shap  # noqa: E402
from XAIExplainerLib.attribution.supervoxels import cube_supervoxels  # noqa: E402
from XAIExplainerLib.errors import (  # noqa: E402
    CancelledError,
    DeviceError,
    GeometryMismatchError,
    ModelCapabilityError,
)

SHAPE = (4, 5, 6)


def linear_regressor(n_outputs=3, seed=0):
    """ŷ = W·vec(x) + b: (B, 1, D, H, W) -> (B, T), float64."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(SHAPE)), n_outputs)).double()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


# ----------------------------------------------------------------------------------------------- RegressionScore
def test_regression_closeness_gradient_is_minus_two_residual_times_weights():
    net = linear_regressor()
    x = torch.rand(1, 1, *SHAPE, dtype=torch.float64)
    reference = [0.3, -1.0, 2.0]
    target = RegressionScore.build("closeness", ["age", "volume", "score"], None, reference)
    assert isinstance(target, Target) and target.num_targets == 3
    result = vanilla_gradient(net, x, target)
    y = net(x)[0]
    W = net[1].weight.reshape(3, *SHAPE)
    for t in range(3):
        expected = -2 * (y[t] - reference[t]) * W[t]
        torch.testing.assert_close(result.attributions[t], expected, rtol=1e-12, atol=1e-12)


def test_regression_higher_lower_and_one_named_output():
    net = linear_regressor()
    x = torch.rand(1, 1, *SHAPE, dtype=torch.float64)
    W = net[1].weight.reshape(3, *SHAPE)
    higher = vanilla_gradient(net, x, RegressionScore.build("higher", ["a", "b", "c"], "b"))
    lower = vanilla_gradient(net, x, RegressionScore.build("lower", ["a", "b", "c"], 2))
    assert higher.target_names == ["b"] and lower.target_names == ["c"]
    torch.testing.assert_close(higher.attributions[0], W[1], rtol=0, atol=1e-14)
    torch.testing.assert_close(lower.attributions[0], -W[2], rtol=0, atol=1e-14)
    # IG completeness on the (quadratic) closeness score with an exact rule: Σ IG = f(x) − f(0)
    close = RegressionScore.build("closeness", ["a", "b", "c"], None, 0.5)
    ig = integrated_gradients(net, x, close, n_steps=4, rule="gausslegendre")
    scores = close(net(x))[0] - close(net(torch.zeros_like(x)))[0]
    torch.testing.assert_close(ig.attributions.flatten(1).sum(1), scores, rtol=1e-10, atol=1e-10)


def test_regression_score_rejects_a_missing_reference():
    with pytest.raises(ValueError, match="reference"):
        RegressionScore.build("closeness", ["a", "b"])


# ----------------------------------------------------------------------------------------------- OutputMask
def identity_volume(channels=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, channels, *SHAPE, dtype=torch.float64, generator=g)


def masks(k=2, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(k, *SHAPE, generator=g) > 0.5


def test_output_mask_gradient_of_identity_is_the_mask():
    x, m = identity_volume(), masks()
    target = OutputMask(m, channels=[0, 1])
    result = vanilla_gradient(torch.nn.Identity(), x, target)
    assert result.attributions.shape == (2, 2) + SHAPE  # (K, C, D, H, W): two input channels
    for k in range(2):
        torch.testing.assert_close(result.attributions[k, k], m[k].double(), rtol=0, atol=0)
        assert float(result.attributions[k, 1 - k].abs().max()) == 0.0  # channel k's score ignores channel 1-k


def test_output_mask_window_by_window_equals_the_mask_and_skips_empty_windows():
    big = (20, 18, 16)
    x = torch.rand(1, 1, *big, dtype=torch.float64)
    m = torch.zeros(big, dtype=torch.bool)
    m[:5, :4, :3] = True  # one corner: most windows see none of it
    target = OutputMask(m, channels=[0], names=["corner"])
    result = vanilla_gradient(torch.nn.Identity(), x, target, window=SlidingWindow((8, 8, 8), overlap=0.5))
    torch.testing.assert_close(result.attributions[0], m.double(), rtol=1e-12, atol=1e-12)
    assert result.params["windows_evaluated"] < result.params["windows_total"]


def test_kernel_shap_of_output_mask_on_identity_is_the_exact_shapley_value():
    """score = Σ_{v∈M} x_v is additive over cubes: φ_f = Σ_{v ∈ M∩f} (x_v − b), recovered exactly."""
    x, m = identity_volume(channels=1), masks(k=1)
    ids = cube_supervoxels(SHAPE, 8)
    target = OutputMask(m[0], channels=[0])
    result = kernel_shap(torch.nn.Identity(), x, target, supervoxels=ids, n_samples=64, baseline=0.25)
    for f in range(8):
        inside = (ids == f) & m[0]
        expected = float(((x[0, 0] - 0.25) * inside).sum())
        got = float(result.attributions[0][ids == f][0])
        assert got == pytest.approx(expected, abs=1e-6)


# ----------------------------------------------------------------------------------------------- precision truth
def _recording_model(use_autocast: bool):
    from XAIExplainerLib.models import ModelConfig, SegmentationModel

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 3, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv3d(3, 2, 1))
    seen: list = []
    net[0].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    model = SegmentationModel.from_network(net, ModelConfig(label_names=["bg", "fg"], roi_size=(32, 32, 32)),
                                           precision="bfloat16" if use_autocast else "float32")
    return model, seen


@pytest.mark.parametrize("use_autocast, expected", [(False, torch.float32), (True, torch.bfloat16)])
def test_provenance_precision_is_the_dtype_the_network_ran_in(use_autocast, expected):
    from XAIExplainerLib.attribution import ClassAggregate

    model, seen = _recording_model(use_autocast)
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        target = ClassAggregate.from_logits(model(x))
    seen.clear()
    for method in (vanilla_gradient, smoothgrad):
        result = method(model, x, target, **({"n_samples": 2} if method is smoothgrad else {}))
        assert set(seen) == {expected}  # checked inside the network
        assert result.params["precision"] == str(expected).replace("torch.", "")
        seen.clear()


# ----------------------------------------------------------------------------------------------- batching loop
def test_run_batches_halves_on_out_of_memory_and_commits_each_item_once():
    committed: list[int] = []

    def compute(start, stop):
        if stop - start > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        return list(range(start, stop))

    run = _batching.run_batches(7, compute, lambda a, b, r: committed.extend(r), device=torch.device("cpu"),
                                method="toy", batch_size=4, probe=False)
    assert committed == list(range(7)) and run.largest_batch == 2


def test_run_batches_errors_are_named():
    def fail(start, stop):
        raise RuntimeError("size mismatch")

    with pytest.raises(ModelCapabilityError, match="rejects"):
        _batching.run_batches(3, fail, lambda *a: None, device=torch.device("cpu"), method="toy", probe=False,
                              on_first_failure=lambda e: ModelCapabilityError(f"the model rejects it: {e}"))
    with pytest.raises(DeviceError, match="even with one item"):
        _batching.run_batches(3, lambda a, b: (_ for _ in ()).throw(RuntimeError("out of memory")),
                              lambda *a: None, device=torch.device("cpu"), method="toy", probe=False)
    calls = iter([False, False, True])
    with pytest.raises(CancelledError, match="2 of 5"):
        _batching.run_batches(5, lambda a, b: None, lambda *a: None, device=torch.device("cpu"), method="toy",
                              batch_size=1, probe=False, cancel=lambda: next(calls))


# ----------------------------------------------------------------------------------------------- input policy
def test_inputs_are_copied_cast_to_the_network_dtype_and_baselines_broadcast():
    net = torch.nn.Conv3d(1, 1, 1)  # float32
    array = np.ones((1, 1) + SHAPE)  # float64
    x = prepare_input(net, array, torch.device("cpu"))
    x += 1
    assert x.dtype == torch.float32 and float(array.max()) == 1.0  # the caller's array is untouched
    assert baseline_tensor(0.5, x).shape == x.shape
    assert float(baseline_tensor(torch.full(SHAPE, 2.0), x).mean()) == 2.0  # a (D, H, W) volume broadcasts
    with pytest.raises(GeometryMismatchError, match="baseline"):
        baseline_tensor(torch.zeros(3, 3, 3), x)


def test_a_device_that_contradicts_the_model_is_a_named_error():
    from XAIExplainerLib.attribution.inputs import choose_device

    net = torch.nn.Conv3d(1, 1, 1)  # on the CPU
    x = torch.rand(1, 1, *SHAPE)
    assert choose_device(net, x) == torch.device("cpu") and choose_device(lambda t: t, x) == x.device
    with pytest.raises(DeviceError, match="lives on cpu"):
        choose_device(net, x, torch.device("meta"))
