"""Gradient attributions of the Agg2Exp class-aggregated target: known answers, captum agreement, bad input."""
from __future__ import annotations

import copy
import math

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from XAIExplainerLib.attribution import (  # noqa: E402
    ATTRIBUTION_METHODS,
    ClassAggregate,
    SlidingWindow,
    integrated_gradients,
    smoothgrad,
    vanilla_gradient,
)
from XAIExplainerLib.attribution import _batching  # noqa: E402
from XAIExplainerLib.attribution.gradients import integration_rule, smoothgrad_noise_std  # noqa: E402
from XAIExplainerLib.errors import (  # noqa: E402
    CancelledError,
    DeviceError,
    GeometryMismatchError,
    InvalidVolumeError,
    ModelCapabilityError,
    ModelConfigError,
    UnknownClassError,
)

NAMES = ["background", "liver", "spleen"]


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these tests run many tiny ops, and on a shared 2-core machine two OpenMP threads spin
    on each other (measured: 1.8 s instead of 0.02 s for a windowed gradient)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def linear():
    """A linear 3D model (Conv3d 3×3×3, 3 classes): ∇f̂_c = conv_transpose(weights of mask_c, kernel_c)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 3, 3, padding=1).double()
    for p in conv.parameters():
        p.requires_grad_(False)
    x = torch.randn(1, 1, 8, 9, 10, dtype=torch.float64)
    return conv, x


def analytic_gradient(conv, target: ClassAggregate) -> torch.Tensor:
    w = target.weights("cpu", torch.float64)  # 1 (sum) or 1/|mask| (mean) inside the mask
    return torch.stack(
        [F.conv_transpose3d(w[k][None, None], conv.weight[c : c + 1], padding=1)[0, 0]
         for k, c in enumerate(target.classes)]
    )


@pytest.fixture(scope="module")
def nonlinear():
    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv3d(4, 3, 3, padding=1)
    ).double().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.randn(1, 1, 8, 8, 8, dtype=torch.float64)
    return net, x


@pytest.fixture(scope="module")
def swin():
    """A small MONAI SwinUNETR (32³, feature size 12) in float64 whose prediction contains all 4 classes.

    Batch norm instead of the default instance norm: at 32³ the bottleneck is 1³, where instance norm has no
    statistics. The output bias is shifted so that every class wins somewhere.
    """
    from monai.networks.nets import SwinUNETR

    torch.manual_seed(0)
    net = SwinUNETR(in_channels=1, out_channels=4, feature_size=12, depths=(1, 1, 1, 1), norm_name="batch")
    net = net.double().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.rand(1, 1, 32, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        net.out.conv.conv.bias.sub_(net(x).mean((0, 2, 3, 4)))
        target = ClassAggregate.from_logits(net(x))
    assert not target.absent and min(target.mask_sizes) > 1000
    return net, x, target


@pytest.fixture(scope="module")
def swin_two(swin):
    """The same model with only its largest and smallest segment as targets (SmoothGrad/IG tests: time budget;
    the all-class sharing itself is covered by the 4-class Vanilla Gradient test)."""
    net, x, target = swin
    sizes = target.mask_sizes
    with torch.no_grad():
        two = ClassAggregate.from_logits(net(x), classes=[sizes.index(max(sizes)), sizes.index(min(sizes))])
    return net, x, two


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


# ----------------------------------------------------------------------------------------------- target
def test_class_aggregate_is_the_paper_definition(nonlinear):
    net, x = nonlinear
    with torch.no_grad():
        clean = net(x)
        labels = clean[0].argmax(0)
        target = ClassAggregate.from_logits(clean, ["spleen", 0], label_names=NAMES)
        target_mean = ClassAggregate.from_logits(clean, ["spleen", 0], label_names=NAMES, reduction="mean")
        noisy = net(x + 0.3 * torch.randn_like(x))  # mask stays the clean one
    assert target.classes == [2, 0] and target.names == ["spleen", "background"]
    expected = torch.stack([noisy[0, c][labels == c].sum() for c in (2, 0)])
    assert torch.allclose(target(noisy)[0], expected, rtol=1e-12)
    expected_mean = torch.stack([noisy[0, c][labels == c].mean() for c in (2, 0)])
    assert torch.allclose(target_mean(noisy)[0], expected_mean, rtol=1e-12)


def test_absent_class_is_reported_and_scores_zero(nonlinear):
    net, x = nonlinear
    with torch.no_grad():
        clean = net(x)
    clean[:, 1] = -1e3  # class 1 never wins
    target = ClassAggregate.from_logits(clean, label_names=NAMES, reduction="mean")
    assert target.absent == ["liver"] and target.mask_sizes[1] == 0
    assert float(target(net(x))[0, 1]) == 0.0  # not NaN for the mean of an empty mask
    result = vanilla_gradient(net, x, target)
    assert result.params["absent_classes"] == ["liver"]
    assert torch.all(result["liver"] == 0) and torch.isfinite(result.attributions).all()
    assert result["spleen"].abs().sum() > 0


def test_unknown_classes_raise_with_the_valid_list():
    logits = torch.randn(1, 3, 4, 4, 4)
    with pytest.raises(UnknownClassError, match=r"0=background, 1=liver, 2=spleen"):
        ClassAggregate.from_logits(logits, ["kidney"], label_names=NAMES)
    with pytest.raises(UnknownClassError, match="Unknown class 7"):
        ClassAggregate.from_logits(logits, [7], label_names=NAMES)
    with pytest.raises(ModelConfigError, match="2 label names"):
        ClassAggregate.from_logits(logits, label_names=NAMES[:2])
    assert ClassAggregate.from_logits(logits, ["LIVER", "2"], label_names=NAMES).classes == [1, 2]
    with pytest.raises(InvalidVolumeError, match=r"\(1, C, D, H, W\)"):
        ClassAggregate.from_logits(logits[0])


# ----------------------------------------------------------------------------------------------- known answers
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_vanilla_gradient_of_linear_model_is_analytic(linear, reduction):
    conv, x = linear
    target = ClassAggregate.from_logits(conv(x), label_names=NAMES, reduction=reduction)
    result = vanilla_gradient(conv, x, target)
    assert result.attributions.shape == (3,) + tuple(x.shape[2:]) and result.attributions.dtype == torch.float64
    assert rel_err(result.attributions, analytic_gradient(conv, target)) < 1e-13
    assert result.n_model_evaluations == 1 and result.target_names == NAMES


def test_smoothgrad_equals_vanilla_gradient_for_linear_model(linear):
    conv, x = linear
    target = ClassAggregate.from_logits(conv(x))
    result = smoothgrad(conv, x, target, n_samples=5, noise_level=0.2, seed=3)
    assert rel_err(result.attributions, analytic_gradient(conv, target)) < 1e-13
    assert result.n_model_evaluations == 5 and result.seed == 3
    assert math.isclose(result.params["sigma"], 0.2 * float(x.max() - x.min()))


@pytest.mark.parametrize("rule", ["trapezoid", "gausslegendre", "riemann_middle"])
def test_integrated_gradients_linear_completeness_is_exact(linear, rule):
    conv, x = linear
    target = ClassAggregate.from_logits(conv(x))
    result = integrated_gradients(conv, x, target, n_steps=7, rule=rule)
    expected = analytic_gradient(conv, target) * x[0]  # IG of a linear model: gradient × (x − 0)
    assert rel_err(result.attributions, expected) < 1e-12
    f_x, f_0 = target(conv(x))[0], target(conv(torch.zeros_like(x)))[0]
    assert torch.allclose(result.attributions.flatten(1).sum(1), f_x - f_0, rtol=1e-12)
    assert max(abs(g) for g in result.params["completeness_gap"].values()) < 1e-9


def test_captum_riemann_trapezoid_weights_sum_to_one_minus_one_over_n(linear):
    """captum's riemann_trapezoid halves the end weights of a step-1/n rule; we reproduce it, so its sum is short."""
    conv, x = linear
    target = ClassAggregate.from_logits(conv(x))
    n = 10
    result = integrated_gradients(conv, x, target, n_steps=n, rule="riemann_trapezoid")
    f_x, f_0 = target(conv(x))[0], target(conv(torch.zeros_like(x)))[0]
    assert torch.allclose(result.attributions.flatten(1).sum(1), (1 - 1 / n) * (f_x - f_0), rtol=1e-12)
    steps, alphas = integration_rule("trapezoid", n)
    assert math.isclose(sum(steps), 1.0) and alphas[0] == 0.0 and alphas[-1] == 1.0


@pytest.mark.parametrize("baseline", ["zero", "volume"])
def test_integrated_gradients_completeness_nonlinear(nonlinear, baseline):
    net, x = nonlinear
    target = ClassAggregate.from_logits(net(x), label_names=NAMES)
    base = torch.zeros_like(x) if baseline == "zero" else 0.5 * x.flip(-1)[0, 0]  # (D, H, W) also accepted
    result = integrated_gradients(net, x, target, n_steps=48, rule="gausslegendre",
                                  baseline=0.0 if baseline == "zero" else base)
    f_x, f_0 = target(net(x))[0], target(net(base.reshape(x.shape)))[0]
    totals = result.attributions.flatten(1).sum(1)
    assert torch.allclose(totals, f_x - f_0, rtol=1e-6, atol=1e-8)
    assert result.n_model_evaluations == 48 + 2  # Gauss-Legendre misses the end points: two extra forwards
    gaps = torch.tensor(list(result.params["completeness_gap"].values()), dtype=torch.float64)
    assert torch.allclose(gaps, totals - (f_x - f_0), atol=1e-9)


def test_results_do_not_depend_on_batch_size_and_seed_reproduces(nonlinear):
    net, x = nonlinear
    target = ClassAggregate.from_logits(net(x))
    one = smoothgrad(net, x, target, n_samples=6, seed=11, batch_size=1)
    four = smoothgrad(net, x, target, n_samples=6, seed=11, batch_size=4)
    auto = smoothgrad(net, x, target, n_samples=6, seed=11)
    assert rel_err(four.attributions, one.attributions) < 1e-12
    assert rel_err(auto.attributions, one.attributions) < 1e-12
    assert torch.equal(smoothgrad(net, x, target, n_samples=6, seed=11, batch_size=4).attributions, four.attributions)
    assert rel_err(smoothgrad(net, x, target, n_samples=6, seed=12).attributions, one.attributions) > 1e-3
    ig1 = integrated_gradients(net, x, target, n_steps=5, batch_size=1)
    ig3 = integrated_gradients(net, x, target, n_steps=5, batch_size=3)
    assert rel_err(ig3.attributions, ig1.attributions) < 1e-12


def test_vmap_backward_equals_retain_graph_loop(nonlinear):
    net, x = nonlinear
    target = ClassAggregate.from_logits(net(x))
    loop = smoothgrad(net, x, target, n_samples=3, batch_size=2)
    vmap = smoothgrad(net, x, target, n_samples=3, batch_size=2, grad_strategy="vmap")
    assert rel_err(vmap.attributions, loop.attributions) < 1e-12


class _Adapter:
    """The adapter API the methods use (run_network, precision_context, precision), with CPU bf16 autocast."""

    sliding_window = None
    fused_attention = False

    def __init__(self, network, precision):
        self.network, self.precision = network, precision

    def precision_context(self):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bfloat16")

    def run_network(self, inp):
        with self.precision_context():
            return self.network(inp).float()

    __call__ = run_network


def test_cpu_bf16_adapter_stays_close_to_float32_and_is_recorded(nonlinear):
    net, x = nonlinear
    net32, x32 = copy.deepcopy(net).float(), x.float()  # a copy: the fixture stays float64
    target = ClassAggregate.from_logits(net32(x32))
    full = vanilla_gradient(_Adapter(net32, "float32"), x32, target)
    half = vanilla_gradient(_Adapter(net32, "bfloat16"), x32, target)
    assert half.params["precision"] == "bfloat16" and full.params["precision"] == "float32"
    assert full.attributions.dtype == torch.float32
    assert 1e-4 < rel_err(half.attributions, full.attributions) < 5e-2  # bf16 did run, and stays close


# ----------------------------------------------------------------------------------------------- sliding window
@pytest.mark.parametrize("mode", ["constant", "gaussian"])
def test_sliding_window_attribution_equals_autograd_through_monai(nonlinear, mode):
    """Per-window accumulation (with skipped windows) equals differentiating MONAI's sliding_window_inference."""
    from monai.inferers import sliding_window_inference

    net, _ = nonlinear
    torch.manual_seed(2)
    big = torch.randn(1, 1, 20, 18, 6, dtype=torch.float64)  # last axis smaller than the ROI: padded like MONAI

    def sw(inp):
        return sliding_window_inference(inp, (8, 8, 8), 3, net, overlap=0.5, mode=mode)

    with torch.no_grad():
        clean = sw(big)
    clean[:, 1] = -1e3
    clean[:, 1, :6, :6] = 1e3  # class 1 only in one corner: windows far from it must be skipped
    target = ClassAggregate.from_logits(clean, classes=[1, 2], reduction="mean")
    window = SlidingWindow((8, 8, 8), overlap=0.5, mode=mode)
    reference = vanilla_gradient(sw, big, target)
    windowed = vanilla_gradient(net, big, target, window=window)
    assert rel_err(windowed.attributions, reference.attributions) < 1e-12
    assert windowed.params["windows_total"] == 16 and windowed.params["windows_evaluated"] == 16
    only_corner = ClassAggregate.from_logits(clean, classes=[1])
    corner = vanilla_gradient(net, big, only_corner, window=window)
    assert corner.params["windows_evaluated"] < corner.params["windows_total"]
    assert rel_err(corner.attributions, vanilla_gradient(sw, big, only_corner).attributions) < 1e-12
    ig_ref = integrated_gradients(sw, big, target, n_steps=3, rule="gausslegendre")
    ig_win = integrated_gradients(net, big, target, n_steps=3, rule="gausslegendre", window=window)
    assert rel_err(ig_win.attributions, ig_ref.attributions) < 1e-12
    assert ig_win.params["completeness_gap"] == pytest.approx(ig_ref.params["completeness_gap"], abs=1e-9)


def test_segmentation_model_larger_than_roi_is_explained_window_by_window():
    """window="auto": a SegmentationModel whose ROI is smaller than the volume is differentiated per window."""
    from XAIExplainerLib.models.config import ModelConfig
    from XAIExplainerLib.models.segmentation import SegmentationModel

    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv3d(2, 3, 1))
    config = ModelConfig(label_names=NAMES, roi_size=(32, 32, 32), overlap=0.25)
    model = SegmentationModel.from_network(net, config, device="cpu")
    x = torch.rand(1, 1, 48, 32, 32)
    with torch.no_grad():
        target = ClassAggregate.from_logits(model.logits(x), label_names=NAMES)
    auto = vanilla_gradient(model, x, target)  # default window="auto"
    plain = vanilla_gradient(model, x, target, window=None)  # autograd through MONAI's sliding window
    assert auto.params["window"] == {"roi_size": [32, 32, 32], "overlap": 0.25, "mode": "gaussian",
                                     "sigma_scale": 0.125}
    assert auto.params["windows_total"] == 2 and plain.params["window"] is None
    assert rel_err(auto.attributions, plain.attributions) < 1e-5  # logits() returns float32


# ----------------------------------------------------------------------------------------------- captum
def test_vanilla_gradient_matches_captum_saliency_per_class(swin):
    from captum.attr import Saliency

    net, x, target = swin
    ours = vanilla_gradient(net, x, target)
    for k in range(target.num_targets):
        theirs = Saliency(lambda inp, k=k: target(net(inp))[:, k]).attribute(x, abs=False)[0, 0]
        assert rel_err(ours.attributions[k], theirs) < 1e-8


def test_smoothgrad_matches_captum_noise_tunnel_with_the_same_noise(swin_two):
    from captum.attr import NoiseTunnel, Saliency

    net, x, target = swin_two
    n, sigma = 2, smoothgrad_noise_std(x, 0.1)
    # captum draws its noise with one torch.normal call on the global generator: replay it
    torch.manual_seed(123)
    noise = torch.normal(0, torch.tensor(sigma).repeat((n,) + tuple(x.shape[1:])))
    ours = smoothgrad(net, x, target, noise=noise)
    assert ours.n_model_evaluations == n
    for k in range(target.num_targets):
        torch.manual_seed(123)
        theirs = NoiseTunnel(Saliency(lambda inp, k=k: target(net(inp))[:, k])).attribute(
            x, nt_type="smoothgrad", nt_samples=n, stdevs=sigma, abs=False
        )[0, 0]
        assert rel_err(ours.attributions[k], theirs) < 1e-8


def test_integrated_gradients_matches_captum_per_class(swin_two):
    """4 steps: captum multiplies by float32 step sizes, which are exact for 1/8 and 1/4 (not for 1/3)."""
    from captum.attr import IntegratedGradients

    net, x, target = swin_two
    ours = integrated_gradients(net, x, target, n_steps=4, rule="riemann_trapezoid", baseline=0.0)
    assert ours.n_model_evaluations == 4
    for k in range(target.num_targets):
        theirs = IntegratedGradients(lambda inp, k=k: target(net(inp))[:, k]).attribute(
            x, baselines=0.0, n_steps=4, method="riemann_trapezoid"
        )[0, 0]
        assert rel_err(ours.attributions[k], theirs) < 1e-8


# ----------------------------------------------------------------------------------------------- bad input, control
def test_bad_inputs_raise_named_errors(nonlinear):
    net, x = nonlinear
    x_before = x.clone()
    target = ClassAggregate.from_logits(net(x))
    with pytest.raises(InvalidVolumeError, match="shape"):
        vanilla_gradient(net, x[0], target)
    bad = x.clone()
    bad[0, 0, 1, 1, 1] = float("nan")
    with pytest.raises(InvalidVolumeError, match="NaN"):
        smoothgrad(net, bad, target)
    with pytest.raises(GeometryMismatchError, match="class masks"):
        vanilla_gradient(net, x[..., :4], target)
    with pytest.raises(ValueError, match="gausslegendre"):
        integrated_gradients(net, x, target, rule="simpson")

    def frozen(inp):
        with torch.no_grad():
            return net(inp)

    with pytest.raises(ModelCapabilityError, match="differentiabl"):
        vanilla_gradient(frozen, x, target)

    def wrong_channels(inp):
        return torch.nn.functional.conv3d(inp, torch.ones(3, 2, 1, 1, 1, dtype=inp.dtype))

    with pytest.raises(ModelCapabilityError, match="model failed"):
        vanilla_gradient(wrong_channels, x, target)
    with pytest.raises(GeometryMismatchError, match="baseline"):
        integrated_gradients(net, x, target, baseline=torch.zeros(3, 3, 3))
    smoothgrad(net, x, target, n_samples=2)
    integrated_gradients(net, x, target, n_steps=2)
    assert torch.equal(x, x_before) and not x.requires_grad  # the caller's tensor is untouched


def test_progress_and_cancel(nonlinear):
    net, x = nonlinear
    target = ClassAggregate.from_logits(net(x))
    seen = []
    smoothgrad(net, x, target, n_samples=5, batch_size=2, progress=lambda f, msg: seen.append((f, msg)))
    assert [f for f, _ in seen] == [0.4, 0.8, 1.0] and "smoothgrad" in seen[-1][1]
    calls = iter([False, True])
    with pytest.raises(CancelledError, match="2 of 5"):
        smoothgrad(net, x, target, n_samples=5, batch_size=2, cancel=lambda: next(calls))


def test_out_of_memory_halves_the_batch_then_raises_device_error(nonlinear):
    net, x = nonlinear
    target = ClassAggregate.from_logits(net(x))
    sizes = []

    def small_memory(inp):
        sizes.append(inp.shape[0])
        if inp.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return net(inp)

    result = smoothgrad(small_memory, x, target, n_samples=7, batch_size=8, seed=4)
    assert sizes[:3] == [7, 3, 1]  # 8 is capped at the 7 samples, then halved: 7 -> 3 -> 1
    assert result.n_model_evaluations == 7
    assert rel_err(result.attributions, smoothgrad(net, x, target, n_samples=7, seed=4).attributions) < 1e-12

    def no_memory(inp):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    with pytest.raises(DeviceError, match="even with one sample"):
        smoothgrad(no_memory, x, target, n_samples=3, batch_size=4)


def test_batch_size_is_derived_from_free_memory(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(_batching, "available_memory_bytes", lambda device: 12 * 1024**3)
    # half of 12 GiB / (3 × 100 MiB) = 20 samples; capped by the 7 that remain
    assert _batching.batch_size_from_memory(cpu, 100 * 1024**2, remaining=50) == 20
    assert _batching.batch_size_from_memory(cpu, 100 * 1024**2, remaining=7) == 7
    assert _batching.batch_size_from_memory(cpu, 100 * 1024**2, remaining=50, backward_copies=4) == 5
    assert _batching.batch_size_from_memory(cpu, 50 * 1024**3, remaining=50) == 1


def test_registry_names():
    assert {"vanilla_gradient", "smoothgrad", "integrated_gradients"} <= set(ATTRIBUTION_METHODS)
    assert ATTRIBUTION_METHODS["smoothgrad"] is smoothgrad
