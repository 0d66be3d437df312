"""Grad-CAM++ and LayerCAM (issue 12): agreement with pytorch-grad-cam 1.5.7 where the formulas coincide, stability
where MONAI's GradCAMpp is not, a map that peaks where the output looks, LayerCAM's max fusion, blank maps reported,
2D single-slice inputs, and bad input refused before anything runs."""
from __future__ import annotations

import sys
import types
import warnings

import numpy as np
import pytest
import torch

from XAIExplainerLib.attribution import RegressionScore, gradcampp, layercam
from XAIExplainerLib.attribution.cam import BlankMapWarning, fuse, upsample
from XAIExplainerLib.errors import MethodParameterError, ModelCapabilityError, UnknownClassError
from XAIExplainerLib.models import ModelConfig, RegressionModel

NAMES = ["a", "b"]


class Small3D(torch.nn.Module):
    """Conv-ReLU stack with a stride-2 layer and a non-GAP head, so gradients vary over space."""

    def __init__(self, offset: float = 0.0, scale: float = 1.0, gap: bool = False):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.body = torch.nn.Sequential(
            torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv3d(4, 6, 3, stride=2, padding=1), torch.nn.ReLU())
        self.mix = torch.nn.Sequential(torch.nn.Conv3d(6, 4, 1), torch.nn.Tanh())
        self.head = torch.nn.Linear(6 if gap else 4 * 4 ** 3, 2)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.offset, self.scale, self.gap = offset, scale, gap

    def forward(self, x):
        features = self.body(x)
        flat = features.mean((2, 3, 4)) if self.gap else self.mix(features).flatten(1)
        return self.head(flat) * self.scale + self.offset


def _x(seed: int = 1, shape=(8, 8, 8)) -> torch.Tensor:
    return torch.rand((1, 1) + shape, generator=torch.Generator().manual_seed(seed))


def _target(mode: str = "higher", names=NAMES) -> RegressionScore:
    return RegressionScore.build(mode, names)


def _corr(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


# ------------------------------------------------------------------------------ pytorch-grad-cam 1.5.7
@pytest.fixture(scope="module")
def grad_cam():
    """pytorch-grad-cam; it imports torchvision only for image helpers these tests never call. No CPU torchvision
    build exists for torch 2.13.0+cpu (PyPI's 0.28.0 is a CUDA build: "operator torchvision::nms does not exist"),
    so where torchvision does not import, stand-ins of the three names grad-cam imports are put in place while
    grad-cam is imported, and removed again (no other test sees them)."""
    try:
        import torchvision  # noqa: F401

        return pytest.importorskip("pytorch_grad_cam")
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - a build that does not match torch
        pass
    saved = {m: sys.modules.pop(m) for m in list(sys.modules) if m == "torchvision" or m.startswith("torchvision.")}
    tv, tr, fn = (types.ModuleType(n) for n in ("torchvision", "torchvision.transforms",
                                                 "torchvision.transforms.functional"))
    tr.Compose = tr.Normalize = tr.ToTensor = fn.resize = None
    tr.functional, tv.transforms = fn, tr
    stand_ins = {"torchvision": tv, "torchvision.transforms": tr, "torchvision.transforms.functional": fn}
    sys.modules.update(stand_ins)
    try:
        return pytest.importorskip("pytorch_grad_cam")
    finally:
        for name in stand_ins:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def _grad_cam_raw(grad_cam, cls, net, layer, x, k):
    """grad-cam's un-normalised layer map of output k (its get_cam_image, then its ReLU), at layer resolution."""
    cam = cls(model=net, target_layers=[layer])
    try:
        out = cam.activations_and_grads(x)
        net.zero_grad()
        out[0, k].backward(retain_graph=True)
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        return np.maximum(cam.get_cam_image(x, layer, None, acts, grads, False)[0], 0)
    finally:
        cam.activations_and_grads.release()


@pytest.mark.parametrize("method, cls_name", [(gradcampp, "GradCAMPlusPlus"), (layercam, "LayerCAM")])
def test_agrees_with_pytorch_grad_cam_on_the_unnormalised_layer_maps(grad_cam, method, cls_name):
    net, x = Small3D(), _x()
    for layer_name in ("body.1", "body.3"):  # 8³ and (stride 2) 4³ feature maps
        ours = method(net, x, _target(), layers=layer_name)
        for k in range(2):
            ref = _grad_cam_raw(grad_cam, getattr(grad_cam, cls_name), net, net.get_submodule(layer_name), x, k)
            mine = ours.layer_maps[layer_name][k].clamp_min(0).numpy()
            assert ref.shape == mine.shape and ref.max() > 0
            assert _corr(mine, ref) >= 0.9999
    # Units: grad-cam adds eps = 1e-6 to alpha's denominator 2g² + ΣA·g³, which shifts its maps by ~2 % here
    # (gradients ~1e-3); with the output scaled by 1e3 (gradients ~1) eps is negligible and the maps are equal.
    net = Small3D(scale=1e3)
    ours = method(net, x, _target(), layers="body.3")
    ref = _grad_cam_raw(grad_cam, getattr(grad_cam, cls_name), net, net.get_submodule("body.3"), x, 0)
    np.testing.assert_allclose(ours.layer_maps["body.3"][0].clamp_min(0).numpy(), ref, rtol=1e-3,
                               atol=1e-5 * ref.max())


def test_final_maps_differ_from_grad_cam_only_by_its_spline_zoom_and_normalisation(grad_cam):
    """grad-cam min-max-normalises each layer map and zooms it with a cubic spline (scipy.ndimage.zoom), which
    overshoots; we interpolate trilinearly in torch (never below zero). The maps agree, not to 1e-4."""
    net, x = Small3D(), _x()
    ours = gradcampp(net, x, _target(), layers="body.3").attributions[0].numpy()

    class Output0:
        def __call__(self, output):
            return output[0]

    cam = grad_cam.GradCAMPlusPlus(model=net, target_layers=[net.get_submodule("body.3")])
    theirs = cam(input_tensor=x, targets=[Output0()])[0]
    cam.activations_and_grads.release()
    assert theirs.shape == ours.shape and ours.min() >= 0
    assert 0.95 < _corr(ours, theirs) < 0.99999


def test_layercam_fuses_layers_by_max_where_grad_cam_averages(grad_cam):
    net, x = Small3D(), _x()
    fused = layercam(net, x, _target(), layers=["body.1", "body.3"]).attributions
    singles = [layercam(net, x, _target(), layers=n).attributions for n in ("body.1", "body.3")]
    normalised = [s / s.flatten(1).amax(1).view(-1, 1, 1, 1) for s in singles]
    torch.testing.assert_close(fused, torch.maximum(*normalised))
    assert float(fused.flatten(1).amax(1).min()) == pytest.approx(1.0)
    mean = (normalised[0] + normalised[1]) / 2  # pytorch-grad-cam's aggregation (before its own rescaling)
    assert float((fused - mean).abs().max()) > 0.05
    gamma = layercam(net, x, _target(), layers=["body.1", "body.3"], tanh_gamma=2.0).attributions
    torch.testing.assert_close(gamma, torch.maximum(*[torch.tanh(2.0 * n) for n in normalised]))


# ------------------------------------------------------------------------------ numerics vs MONAI
def test_finite_for_outputs_of_plus_minus_1e4_where_monais_gradcampp_is_not():
    from monai.visualize import GradCAMpp

    x = _x()
    maps = {}
    for offset in (0.0, 1e4, -1e4):
        net = Small3D(offset=offset, gap=True)
        result = gradcampp(net, x, _target(), layers="body.3")
        assert torch.isfinite(result.attributions).all() and not any(result.blank)
        maps[offset] = result.attributions
        monai = GradCAMpp(nn_module=net, target_layers="body.3").compute_map(x, class_idx=0)
        if offset == 1e4:  # exp(1e4) = inf in float32
            assert not torch.isfinite(monai).all()
        elif offset == -1e4:  # exp(-1e4) = 0: an all-zero map
            assert float(monai.detach().abs().max()) == 0.0
        else:  # where MONAI works (GAP head: its and the paper's alpha coincide) it is exp(score) times ours
            assert _corr(monai[0, 0].detach(), result.layer_maps["body.3"][0].clamp_min(0)) >= 0.9999
    # the score's value never enters: an output offset leaves the maps unchanged
    torch.testing.assert_close(maps[1e4], maps[0.0])
    torch.testing.assert_close(maps[-1e4], maps[0.0])
    big = gradcampp(Small3D(scale=1e4), x, _target(), layers="body.3").attributions
    assert torch.isfinite(big).all() and float(big.max()) > 0
    # tiny outputs: alpha = 1 / (2 + ΣA·g) needs no eps, so a 1e-8-scaled network gives the map of a 1e-4 one
    tiny, small = (gradcampp(Small3D(scale=s), x, _target(), layers="body.3").attributions for s in (1e-8, 1e-4))
    assert torch.isfinite(tiny).all() and float(tiny.max()) > 0
    assert _corr(tiny, small) >= 0.9999


# ------------------------------------------------------------------------------ known region
class RegionModel(torch.nn.Module):
    """The output reads only the voxels of a known box of the input."""

    def __init__(self, box):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        mask = torch.zeros(1, 1, 16, 16, 16)
        mask[(0, 0) + box] = 1
        self.register_buffer("mask", mask)
        self.conv = torch.nn.Conv3d(1, 4, 3, padding=1, bias=False)
        self.relu = torch.nn.ReLU()
        self.pool = torch.nn.Conv3d(4, 4, 2, stride=2, bias=False)
        self.relu2 = torch.nn.ReLU()
        with torch.no_grad():
            self.conv.weight.copy_(torch.rand(self.conv.weight.shape, generator=g))
            self.pool.weight.copy_(torch.rand(self.pool.weight.shape, generator=g))
        self.head = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.relu2(self.pool(self.relu(self.conv(x * self.mask)))).mean((2, 3, 4)))


@pytest.mark.parametrize("method", [gradcampp, layercam])
def test_map_peaks_in_the_region_the_output_depends_on(method):
    box = (slice(2, 8), slice(8, 14), slice(4, 10))
    net = RegionModel(box)
    with torch.no_grad():
        net.head.weight.fill_(1.0)
    x = _x(5, (16, 16, 16)) + 0.1
    result = method(net, x, RegressionScore.build("higher", ["y"]), layers="relu2")
    heat = result.attributions[0].numpy()
    inside = np.zeros_like(heat, dtype=bool)
    inside[box] = True
    peak = np.unravel_index(heat.argmax(), heat.shape)
    assert inside[peak]
    # outside the box grown by 3 voxels (the 3³ kernel's rim, the 2³ stride-2 cell, the 2x upsampling) the map
    # is exactly zero; inside the box lies most of it
    grown = np.zeros_like(inside)
    grown[tuple(slice(max(b.start - 3, 0), b.stop + 3) for b in box)] = True
    assert float(np.abs(heat[~grown]).max()) == 0.0 and float(heat[inside].sum() / heat.sum()) > 0.5


# ------------------------------------------------------------------------------ blank maps
def test_blank_map_is_flagged_with_its_reason_not_shown_as_an_empty_image():
    net = Small3D(gap=True)
    with torch.no_grad():
        net.head.weight.copy_(-net.head.weight.abs())  # every feature lowers both outputs
    x = _x()
    with pytest.warns(BlankMapWarning, match="every channel weight is <= 0"):
        result = gradcampp(net, x, _target(), layers="body.3")
    assert result.blank == [True, True] and float(result.attributions.abs().max()) == 0.0
    assert "every channel weight is <= 0" in result.params["blank_targets"]["a"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", BlankMapWarning)
        lower = gradcampp(net, x, _target("lower"), layers="body.3")  # what lowers y is not blank
    assert lower.blank == [False, False] and float(lower.attributions.min()) >= 0


# ------------------------------------------------------------------------------ 2D single-slice
class Small2D(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                            torch.nn.Conv2d(4, 6, 3, stride=2, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Linear(6 * 8 * 8, 2)

    def forward(self, x):
        if x.ndim == 5:  # a single-slice volume (B, C, 1, H, W)
            x = x[:, :, 0]
        return self.head(self.features(x).flatten(1))


def test_single_slice_volumes_with_a_2d_network(grad_cam):
    net, x = Small2D(), _x(2, (1, 16, 16))
    for method, cls in [(gradcampp, grad_cam.GradCAMPlusPlus), (layercam, grad_cam.LayerCAM)]:
        result = method(net, x, _target(), layers="features.3")
        assert tuple(result.attributions.shape) == (2, 1, 16, 16)
        ref = _grad_cam_raw(grad_cam, cls, net, net.features[3], x[:, :, 0], 1)
        assert _corr(result.layer_maps["features.3"][1].clamp_min(0), ref) >= 0.9999
    assert tuple(upsample(torch.ones(2, 4, 4), (1, 8, 8)).shape) == (2, 1, 8, 8)


def test_trilinear_upsampling_stays_non_negative_and_fuse_keeps_one_layer_in_score_units():
    maps = torch.zeros(1, 4, 4, 4)
    maps[0, 1, 1, 1] = 5.0
    up = upsample(maps, (8, 8, 8))
    assert float(up.min()) >= 0 and float(up.max()) <= 5.0
    torch.testing.assert_close(fuse([up]), up)


# ------------------------------------------------------------------------------ bad input
def _adapter(net) -> RegressionModel:
    return RegressionModel.from_network(net, ModelConfig(kind="regression", target_names=NAMES, preprocessing=[],
                                                         axis_order="zyx"))


def test_unknown_layer_lists_the_layer_names_and_torchscript_is_refused(tmp_path):
    model = _adapter(Small3D())
    with pytest.raises(ModelCapabilityError, match=r"no layer 'body.9'.*Its layers: body, body\.0.*head"):
        gradcampp(model, _x(), _target(), layers="body.9")
    with pytest.raises(MethodParameterError, match="at least one layer"):
        layercam(model, _x(), _target(), layers=" ")
    scripted = torch.jit.script(Small3D())
    path = tmp_path / "net.pt"
    scripted.save(str(path))
    (tmp_path / "net.json").write_text('{"kind": "regression", "target_names": ["a", "b"], "preprocessing": [], '
                                       '"axis_order": "zyx", "architecture": "unused"}')
    ts_model = RegressionModel.load(path, device="cpu")
    for layers in ("body.3", "auto"):
        with pytest.raises(ModelCapabilityError, match="TorchScript.*SmoothGrad.*Image-Reg-LIME"):
            layercam(ts_model, _x(), _target(), layers=layers)


def test_unknown_target_is_refused():
    from XAIExplainerLib.pipelines.regression import explain_regression
    from XAIExplainerLib.volume import Volume

    model = _adapter(Small3D())
    volume = Volume(_x()[0, 0].numpy(), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(UnknownClassError, match="Unknown class 'c'"):
        explain_regression(volume, model, targets=["c"], method="gradcampp")
    with pytest.raises(MethodParameterError, match="label map"):
        explain_regression(volume, model, method="layercam", label_map=volume)


def test_auto_picks_the_last_spatial_feature_map():
    result = gradcampp(Small3D(), _x(), _target())
    assert result.params["layers"] == ["mix"]  # mix (Conv + Tanh) is the last 5-D output before flattening


def test_classifier_models_take_the_same_methods():
    from XAIExplainerLib.attribution import available_methods
    from XAIExplainerLib.models import ClassifierModel

    assert {"gradcampp", "layercam", "smoothgrad"} <= {s.name for s in available_methods("classifier")}
    net = Small3D()
    model = ClassifierModel.from_network(net, ModelConfig(kind="classifier", label_names=["healthy", "lesion"],
                                                          preprocessing=[], axis_order="zyx"))
    target = RegressionScore.build("higher", model.label_names, "lesion")  # the lesion logit
    ours = gradcampp(model, _x(), target, layers="body.3")
    bare = gradcampp(net, _x(), _target(), layers="body.3")
    torch.testing.assert_close(ours.attributions[0], bare.attributions[1])
