"""KernelSHAP of the class-aggregated model: exact Shapley values of additive models, captum/shap agreement.

Known answers first: for an additive segmentation model (class-c logit map = W_c ⊙ x + B_c), the Agg2Exp score
f̂_c is linear in the supervoxel features, so its Shapley value for supervoxel i is Σ_{v ∈ mask_c ∩ S_i} W_c(v)
(x(v) − baseline): KernelSHAP must return it exactly, for all classes from one set of coalitions.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from XAIExplainerLib.attribution.registry import get_method  # noqa: E402
from XAIExplainerLib.attribution.kernel_shap import (  # noqa: E402
    kernel_shap,
    kernel_shap_cubes,
    kernel_shap_semantic,
    sample_coalitions,
)
from XAIExplainerLib.attribution.supervoxels import cube_supervoxels, semantic_supervoxels  # noqa: E402
from XAIExplainerLib.attribution.targets import ClassAggregate  # noqa: E402
from XAIExplainerLib.errors import CancelledError, GeometryMismatchError, InvalidVolumeError  # noqa: E402


class Additive(torch.nn.Module):
    """logits_c(v) = W_c(v) x(v) + B_c(v); counts the volumes it is evaluated on."""

    def __init__(self, n_classes: int, shape, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = torch.nn.Parameter(torch.randn(n_classes, *shape, generator=g, dtype=torch.float64))
        self.B = torch.nn.Parameter(torch.randn(n_classes, *shape, generator=g, dtype=torch.float64))
        self.evaluations = 0

    def forward(self, x):
        self.evaluations += x.shape[0]
        return self.W * x + self.B


class Quadratic(Additive):
    """A non-additive model (interactions through the square) for agreement tests."""

    def forward(self, x):
        self.evaluations += x.shape[0]
        z = self.W * x + self.B
        return z + 0.3 * z**2


def exact_shapley(model: Additive, x, baseline: float, target: ClassAggregate, ids) -> torch.Tensor:
    """(K, F) Shapley values of the linear f̂: per-voxel contributions W_c (x − b) summed per supervoxel."""
    contrib = (model.W.detach()[target.classes] * (x[0, 0] - baseline)) * target.masks.double()  # (K, D, H, W)
    n_features = int(ids.max()) + 1
    out = torch.zeros(len(target.classes), n_features, dtype=torch.float64)
    return out.index_add_(1, ids.flatten(), contrib.flatten(1))


def per_feature(attributions, ids):
    """Collapse a (K, D, H, W) map to (K, F), checking that it is constant inside every supervoxel."""
    n_features = int(ids.max()) + 1
    first = torch.zeros(n_features, dtype=torch.long).scatter_(0, ids.flatten().flip(0),
                                                                torch.arange(ids.numel() - 1, -1, -1))
    values = attributions.flatten(1)[:, first]
    assert torch.equal(values[:, ids.flatten()], attributions.flatten(1))
    return values


# ------------------------------------------------------------------------------------------------ supervoxels
def test_cube_supervoxels_512_gives_8_cubes_per_axis_not_7():
    assert int(512 ** (1 / 3)) == 7  # the paper code's slip this module avoids
    ids = cube_supervoxels((32, 32, 32), 512)
    counts = torch.bincount(ids.flatten())
    assert counts.numel() == 512 and bool((counts == 64).all())  # 8³ cubes of 4³ voxels
    assert ids[0, 0, 0] == 0 and ids[31, 31, 31] == 511 and ids[0, 0, 4] == 1 and ids[4, 0, 0] == 64
    uneven = cube_supervoxels((10, 7, 9), 27)
    # per axis the boxes are as equal as possible (10 → 4,3,3; 7 → 3,2,2; 9 → 3,3,3): no thin remainder box
    assert torch.bincount(uneven[:, 0, 0] // 9).tolist() == [4, 3, 3]
    assert torch.bincount(uneven[0, :, 0] // 3 % 3).tolist() == [3, 2, 2]
    assert torch.bincount(uneven[0, 0, :] % 3).tolist() == [3, 3, 3]


def test_semantic_supervoxels_are_consecutive_and_input_untouched():
    labels = np.zeros((4, 5, 6), dtype=np.uint8)
    labels[1:3, 1:3, 1:3] = 5
    labels[3, :, :] = 2
    before = labels.copy()
    ids = semantic_supervoxels(labels)
    assert np.array_equal(labels, before)
    expected = np.searchsorted([0, 2, 5], labels)
    assert np.array_equal(ids.numpy(), expected)


# ------------------------------------------------------------------------------------------------ known answers
@pytest.mark.parametrize("baseline", [0.0, 0.25])
def test_additive_model_gives_exact_shapley_values_for_all_classes(baseline):
    shape = (6, 6, 6)
    model = Additive(3, shape)
    x = torch.rand(1, 1, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.5
    target = ClassAggregate.from_logits(model(x))
    assert not target.absent
    ids = cube_supervoxels(shape, 27)
    model.evaluations = 0
    result = kernel_shap(model, x, target, supervoxels=ids, n_samples=80, baseline=baseline, seed=3, batch_size=7)

    phi = per_feature(result.attributions.double(), ids)
    expected = exact_shapley(model, x, baseline, target, ids)
    assert result.n_model_evaluations == 80 == model.evaluations
    assert torch.allclose(phi, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    # efficiency: Σφ = f̂(x) − f̂(baseline), per class
    with torch.no_grad():
        gap = target(model(x)) - target(model(torch.full_like(x, baseline)))
    assert torch.allclose(phi.sum(1), gap[0], rtol=1e-5)
    assert result.attributions.dtype == torch.float32 and result.attributions.shape == (3, *shape)


def test_model_evaluations_do_not_depend_on_the_number_of_classes():
    shape = (4, 4, 4)
    model = Additive(4, shape, seed=2)
    x = torch.rand(1, 1, *shape, dtype=torch.float64)
    logits = model(x)
    counts = []
    for classes in ([1], [0, 1, 2, 3]):
        model.evaluations = 0
        target = ClassAggregate.from_logits(logits, classes=classes)
        result = kernel_shap(model, x, target, supervoxels=cube_supervoxels(shape, 8), n_samples=30)
        counts.append((result.n_model_evaluations, model.evaluations))
    assert counts == [(30, 30), (30, 30)]


def test_semantic_method_is_exact_on_additive_model_and_counts_the_label_forward():
    shape = (6, 6, 6)
    model = Additive(3, shape, seed=4)
    x = torch.rand(1, 1, *shape, dtype=torch.float64) + 0.2
    logits = model(x)
    target = ClassAggregate.from_logits(logits)
    model.evaluations = 0
    result = get_method("kernel_shap_semantic").function(model, x, target, n_samples=20)
    assert result.n_model_evaluations == 21 == model.evaluations  # 20 coalitions + the clean label map
    ids = semantic_supervoxels(logits[0].argmax(0))
    phi = per_feature(result.attributions.double(), ids)
    expected = exact_shapley(model, x, 0.0, target, ids)
    assert torch.allclose(phi, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))
    # semantic features = classes, so the class-c score only depends on feature c: a diagonal matrix
    assert torch.allclose(phi - torch.diag(torch.diagonal(phi)), torch.zeros_like(phi), atol=1e-6)
    given = kernel_shap_semantic(model, x, target, label_map=logits[0].argmax(0), n_samples=20)
    assert given.n_model_evaluations == 20


# ------------------------------------------------------------------------------------------------ agreement
def _captum_per_class(model, x, target, ids, n_samples, seed, record=None):
    """captum's KernelShap run once per class, seeded through the global RNG as captum expects."""
    from captum.attr import KernelShap

    maps = []
    for k in range(len(target.classes)):
        explainer = KernelShap(lambda inp, k=k: target(model(inp))[:, k])
        if record is not None and k == 0:
            similarity = explainer.similarity_func

            def recording(a, b, sample, **kw):
                record.append(sample.clone())
                return similarity(a, b, sample, **kw)

            explainer.similarity_func = recording
        torch.manual_seed(seed)
        maps.append(explainer.attribute(x, baselines=0.0, feature_mask=ids[None, None], n_samples=n_samples,
                                        perturbations_per_eval=4)[0, 0])
    return torch.stack(maps)


def test_sampler_and_attributions_match_captum_on_a_nonadditive_model():
    shape = (8, 8, 8)
    model = Quadratic(3, shape, seed=5)
    x = torch.rand(1, 1, *shape, dtype=torch.float64) + 0.5
    target = ClassAggregate.from_logits(model(x))
    ids = cube_supervoxels(shape, 8)
    recorded: list = []
    theirs = _captum_per_class(model, x, target, ids, 40, seed=11, record=recorded)
    assert torch.equal(torch.cat(recorded).long(), sample_coalitions(8, 40, seed=11))
    model.evaluations = 0
    ours = kernel_shap(model, x, target, supervoxels=ids, n_samples=40, seed=11)
    assert model.evaluations == 40  # captum needed 3 × 40
    scale = float(theirs.abs().max())
    assert float((ours.attributions.double() - theirs.double()).abs().max()) < 1e-5 * scale  # captum fits in fp32


def test_agreement_with_captum_on_a_small_swin_unetr_float64():
    from monai.networks.nets import SwinUNETR

    torch.manual_seed(0)
    # batch norm: instance norm cannot normalise the 1×1×1 bottleneck of a 32³ input
    net = SwinUNETR(in_channels=1, out_channels=3, feature_size=12, depths=(1, 1, 1, 1), norm_name="batch",
                    spatial_dims=3).double().eval()
    x = torch.rand(1, 1, 32, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        logits = net(x)
    present = [c for c in range(3) if bool((logits[0].argmax(0) == c).any())][:2]
    target = ClassAggregate.from_logits(logits, classes=present)
    ids = cube_supervoxels((32, 32, 32), 8)
    coalitions = sample_coalitions(8, 10, seed=7)
    ours = kernel_shap(net, x, target, supervoxels=ids, coalitions=coalitions, batch_size=4)
    theirs = _captum_per_class(net, x, target, ids, 10, seed=7)
    assert ours.n_model_evaluations == 10 and ours.params["coalitions"] == "given"
    for k in range(len(present)):
        scale = float(theirs[k].abs().max())
        assert float((ours.attributions[k].double() - theirs[k].double()).abs().max()) < 1e-4 * scale


def test_agreement_with_shap_kernel_explainer_on_additive_problem():
    shap = pytest.importorskip("shap")
    shape = (4, 4, 4)
    model = Additive(2, shape, seed=6)
    x = torch.rand(1, 1, *shape, dtype=torch.float64) + 1.0
    target = ClassAggregate.from_logits(model(x))
    ids = cube_supervoxels(shape, 8)

    def f(z):  # shap's view: binary coalitions (N, 8) -> scores (N, K)
        keep = torch.as_tensor(z, dtype=torch.bool)[:, ids].unsqueeze(1)
        with torch.no_grad():
            return target(model(torch.where(keep, x, torch.zeros(())))).numpy()

    explainer = shap.KernelExplainer(f, np.zeros((1, 8)))
    values = np.asarray(explainer.shap_values(np.ones((1, 8)), nsamples=256, silent=True))
    values = values.reshape(8, 2) if values.shape[-1] == 2 else values.reshape(2, 8).T  # (features, classes)
    ours = per_feature(kernel_shap(model, x, target, supervoxels=ids, n_samples=40).attributions.double(), ids)
    assert np.allclose(ours.numpy().T, values, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_inputs_raise_named_errors_and_cancel_stops():
    shape = (4, 4, 4)
    model = Additive(2, shape)
    x = torch.rand(1, 1, *shape, dtype=torch.float64)
    target = ClassAggregate.from_logits(model(x))
    ids = cube_supervoxels(shape, 8)
    with pytest.raises(GeometryMismatchError):
        kernel_shap(model, x, target, supervoxels=cube_supervoxels((4, 4, 5), 8))
    bad = x.clone()
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(InvalidVolumeError):
        kernel_shap(model, bad, target, supervoxels=ids)
    with pytest.raises(ValueError, match="coalitions"):
        kernel_shap(model, x, target, supervoxels=ids, coalitions=torch.ones(5, 7))
    with pytest.raises(ValueError, match="n_cubes"):
        kernel_shap_cubes(model, x, target, n_cubes=0)
    with pytest.raises(CancelledError):
        kernel_shap(model, x, target, supervoxels=ids, n_samples=10, cancel=lambda: True)
