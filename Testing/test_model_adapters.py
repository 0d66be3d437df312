"""Regression, classifier and image-to-image adapters: every load form, named config errors, grids with known answers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from XAIExplainerLib.errors import ModelCapabilityError, ModelConfigError, WeightsError
from XAIExplainerLib.models import (ClassifierModel, ImageToImageModel, ModelConfig, RegressionModel,
                                    SegmentationModel)
from XAIExplainerLib.models.network import build_network
from XAIExplainerLib.volume import Volume

SHAPE = (8, 8, 8)
CONFIGS = {
    "regression": dict(kind="regression", target_names=["volume", "age"], target_units=["ml", "years"],
                       architecture="Regressor",
                       network_kwargs={"in_shape": [1, *SHAPE], "out_shape": [2], "channels": [2, 4], "strides": [2, 2]}),
    "classifier": dict(kind="classifier", label_names=["healthy", "benign", "malignant"], architecture="Classifier",
                       network_kwargs={"in_shape": [1, *SHAPE], "classes": 3, "channels": [2, 4], "strides": [2, 2]}),
    "image_to_image": dict(kind="image_to_image", channel_names=["denoised", "noise"], architecture="UNet",
                           network_kwargs={"channels": [4, 8], "strides": [2]}),
}
ADAPTER = {"regression": RegressionModel, "classifier": ClassifierModel, "image_to_image": ImageToImageModel}


def _config(kind: str, **overrides) -> ModelConfig:
    return ModelConfig(**{**CONFIGS[kind], **overrides})


def _load(kind: str, form: str, tmp_path):
    torch.manual_seed(0)
    config = _config(kind)
    network = build_network(config).eval()
    if form == "module":
        return ADAPTER[kind].from_network(network, config), network
    if form == "state_dict":
        torch.save({"state_dict": network.state_dict(), "epoch": 1}, tmp_path / "w.pt")
    else:
        torch.jit.trace(network, torch.rand(1, 1, *SHAPE)).save(str(tmp_path / "w.pt"))
    config.save(tmp_path / "w.json")
    return ADAPTER[kind].load(tmp_path / "w.pt", device="cpu"), network


@pytest.mark.parametrize("form", ["module", "state_dict", "torchscript"])
@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_every_kind_loads_in_every_form_and_computes_the_same_function(tmp_path, kind, form):
    model, network = _load(kind, form, tmp_path)
    x = torch.rand(2, 1, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(model(x), network(x), rtol=1e-5, atol=1e-5)
    described = model.describe()
    assert model.kind == described["kind"] == kind
    assert model.load_form == described["format"] == form
    assert described["precision"] == "float32" and len(described["sha256"]) == 64
    if form == "torchscript":
        with pytest.raises(ModelCapabilityError, match="TorchScript.*vanilla gradient"):
            model.layer("model.0")
    else:
        name, module = next((n, m) for n, m in network.named_modules() if n)
        assert model.layer(name) is dict(model.network.named_modules())[name] and isinstance(module, torch.nn.Module)


def test_unknown_architecture_is_named_with_close_names():
    with pytest.raises(ModelConfigError, match=r"Unknown architecture 'Unett'.*Did you mean .*'UNet'"):
        build_network(_config("image_to_image", architecture="Unett"))


def test_wrong_network_kwargs_list_what_the_class_accepts():
    kwargs = {"channels": [4, 8], "strides": [2], "kernel_sizee": 3}
    with pytest.raises(ModelConfigError, match=r"'UNet' rejected its arguments.*It accepts: .*kernel_size"):
        build_network(_config("image_to_image", network_kwargs=kwargs))


def test_weights_of_another_size_do_not_fit(tmp_path):
    torch.save(build_network(_config("image_to_image")).state_dict(), tmp_path / "w.pt")
    _config("image_to_image", network_kwargs={"channels": [8, 16], "strides": [2]}).save(tmp_path / "w.json")
    with pytest.raises(WeightsError, match="do not fit the configured network.*Shape mismatches"):
        ImageToImageModel.load(tmp_path / "w.pt", device="cpu")


def test_output_names_must_match_output_channels():
    with pytest.raises(ModelConfigError, match=r"out_channels = 3 but the model JSON names 2 outputs"):
        build_network(_config("image_to_image", network_kwargs={"channels": [4, 8], "strides": [2], "out_channels": 3}))
    torch.manual_seed(0)
    two_targets = build_network(_config("regression"))
    model = RegressionModel.from_network(two_targets, _config("regression", target_names=["a", "b", "c"],
                                                              target_units=[]))
    with pytest.raises(ModelConfigError, match=r"returned shape \(1, 2\) but the model JSON names 3 targets"):
        model(torch.rand(1, 1, *SHAPE))
    seg = SegmentationModel.from_network(torch.nn.Conv3d(1, 2, 1), ModelConfig(label_names=["bg", "a", "b"],
                                                                              roi_size=SHAPE))
    with pytest.raises(ModelConfigError, match="returned shape .*names 3 labels"):
        seg.logits(torch.rand(1, 1, *SHAPE))


def test_config_requires_the_names_of_its_kind_only():
    with pytest.raises(ModelConfigError, match="regression model needs 'target_names'"):
        ModelConfig(kind="regression")
    with pytest.raises(ModelConfigError, match="classifier needs at least 2 class names"):
        ModelConfig(kind="classifier", label_names=["only"])
    with pytest.raises(ModelConfigError, match="target_units has 1 entries but there are 2 targets"):
        ModelConfig(kind="regression", target_names=["a", "b"], target_units=["ml"])
    with pytest.raises(ModelConfigError, match="sees the whole volume"):
        ModelConfig(kind="classifier", label_names=["a", "b"], roi_size=(32, 32, 32))
    with pytest.raises(ModelConfigError, match="Unknown model kind"):
        ModelConfig(kind="detector", label_names=["a", "b"])
    assert ModelConfig(kind="image_to_image").label_names == []  # no label names needed
    assert ModelConfig.from_dict({"kind": "regression", "target_names": ["x"]}).target_units == [""]


def test_roi_multiple_of_32_is_required_for_swin_unetr_only():
    unet = ModelConfig(label_names=["bg", "a"], architecture="UNet", roi_size=(40, 40, 24),
                       network_kwargs={"channels": [4, 8], "strides": [2]})
    assert build_network(unet)(torch.rand(1, 1, 40, 40, 24)).shape == (1, 2, 40, 40, 24)
    with pytest.raises(ModelConfigError, match="multiples of 32 for SwinUNETR"):
        build_network(ModelConfig(label_names=["bg", "a"], roi_size=(40, 40, 24), feature_size=12))


def test_adapter_refuses_a_config_of_another_kind():
    with pytest.raises(ModelConfigError, match="config.* is for a regression model but was given to ClassifierModel"):
        ClassifierModel.from_network(torch.nn.Identity(), _config("regression"))


def test_python_callable_architecture_and_its_errors():
    config = _config("image_to_image", architecture="torch.nn:Conv3d", network_kwargs={"kernel_size": 1})
    network = build_network(config)
    assert isinstance(network, torch.nn.Conv3d) and (network.in_channels, network.out_channels) == (1, 2)
    with pytest.raises(ModelConfigError, match="'no_such_package.nets:Net' cannot be imported"):
        build_network(_config("image_to_image", architecture="no_such_package.nets:Net"))
    with pytest.raises(ModelConfigError, match="has no callable 'Conv9d'"):
        build_network(_config("image_to_image", architecture="torch.nn:Conv9d"))


# ---- known answers ------------------------------------------------------------------------------------------
class MeanAndMax(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.mean(dim=(1, 2, 3, 4)), x.amax(dim=(1, 2, 3, 4))], dim=1)


class MeanLogits(torch.nn.Module):
    def __init__(self, probabilities: bool = False) -> None:
        super().__init__()
        self.probabilities = probabilities

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3, 4))
        logits = torch.stack([m, -m, torch.zeros_like(m)], dim=1)
        return torch.softmax(logits, 1) if self.probabilities else logits


SCALE = [{"transform": "ScaleIntensityRange", "a_min": 0.0, "a_max": 100.0, "b_min": 0.0, "b_max": 1.0, "clip": True}]


def test_regression_predicts_named_values_after_configured_preprocessing(oblique_volume):
    data = np.abs(oblique_volume.array) * 60  # some voxels above 100: clipped by the preprocessing
    volume = oblique_volume.with_array(data)
    config = ModelConfig(kind="regression", target_names=["mean", "max"], target_units=["a.u.", "a.u."],
                         preprocessing=SCALE)
    values = RegressionModel.from_network(MeanAndMax(), config).predict(volume)
    expected = np.clip(data / 100, 0, 1)
    assert values["mean"] == pytest.approx(float(expected.mean()), rel=1e-5)
    assert values["max"] == pytest.approx(1.0)
    assert volume.array is data  # input untouched


@pytest.mark.parametrize("declared", ["logits", "probabilities"])
def test_classifier_probabilities_follow_the_declared_output(oblique_volume, declared):
    volume = oblique_volume.with_array(np.full(oblique_volume.shape, 50.0, np.float32))
    config = ModelConfig(kind="classifier", label_names=["a", "b", "c"], preprocessing=SCALE, output=declared)
    model = ClassifierModel.from_network(MeanLogits(probabilities=declared == "probabilities"), config)
    p = model.predict(volume)
    expected = np.exp([0.5, -0.5, 0.0]) / np.exp([0.5, -0.5, 0.0]).sum()  # softmax applied exactly once
    np.testing.assert_allclose([p["a"], p["b"], p["c"]], expected, rtol=1e-5)


# ---- grids: non-identity direction, anisotropic spacing -------------------------------------------------------
def _tilted_linear_volume() -> tuple[Volume, np.ndarray]:
    """Values = a known linear function of the LPS position, on an oblique, anisotropic grid."""
    a, b = np.deg2rad(25), np.deg2rad(10)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    volume = Volume(np.zeros((10, 18, 22), np.float32), spacing=(0.8, 1.1, 2.5), origin=(-12.0, 30.0, 4.0),
                    direction=tuple((rz @ rx).ravel()))
    return volume.with_array(_linear(volume)), np.array([0.3, -0.2, 0.5])


def _positions(volume: Volume) -> np.ndarray:
    """(z, y, x, 3) LPS positions of the voxel centres."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij")
    ijk = np.stack([i, j, k, np.ones_like(i)], -1).astype(float)
    return (ijk @ volume.ijk_to_lps().T)[..., :3]


def _linear(volume: Volume) -> np.ndarray:
    return (_positions(volume) @ np.array([0.3, -0.2, 0.5]) + 7.0).astype(np.float32)


def _inside(volume: Volume, grid: Volume, margin: float) -> np.ndarray:
    """Voxels of ``volume`` at least ``margin`` voxels of ``grid`` inside its outermost voxel centres."""
    index = (np.c_[_positions(volume).reshape(-1, 3), np.ones(volume.array.size)] @ np.linalg.inv(grid.ijk_to_lps()).T)
    upper = np.array(grid.size_xyz) - 1 - margin
    return np.all((index[:, :3] >= margin) & (index[:, :3] <= upper), axis=1).reshape(volume.shape)


GEOMETRY_STEPS = {
    "builtin": [{"transform": "Orient", "axcodes": "RAS"}, {"transform": "ResampleToSpacing", "pixdim": [1.5, 1.5, 1.5]}],
    "monai_spacing": [{"transform": "Orientation", "axcodes": "RAS"}, {"transform": "Spacing", "pixdim": [1.5, 1.5, 1.5]}],
    "monai_spacing_only": [{"transform": "Spacing", "pixdim": [1.5, 1.5, 1.5]}],
    "monai_resize": [{"transform": "Orientation", "axcodes": "RAS"},
                     {"transform": "Resize", "spatial_size": [24, 20, 16], "mode": "trilinear"}],
}


@pytest.mark.parametrize("steps", sorted(GEOMETRY_STEPS))
def test_model_space_geometry_follows_the_transforms(steps):
    volume, _ = _tilted_linear_volume()
    config = ModelConfig(kind="image_to_image", preprocessing=GEOMETRY_STEPS[steps])
    model_space = ImageToImageModel.from_network(torch.nn.Identity(), config).preprocess(volume)
    if steps == "monai_resize":
        assert model_space.size_xyz == (24, 20, 16)  # a fixed-size resize changes the spacing
    else:
        np.testing.assert_allclose(model_space.spacing, 1.5)
    direction = np.asarray(model_space.direction).reshape(3, 3)
    if steps != "monai_spacing_only":  # RAS: the first axis runs to the patient's right (-x in LPS), the third up
        assert direction[0, 0] < 0 and direction[2, 2] > 0
    else:  # a single MONAI step: any LPS/RAS slip in the MetaTensor round trip would not cancel out
        np.testing.assert_allclose(direction, np.asarray(volume.direction).reshape(3, 3), atol=1e-9)
    interior = _inside(model_space, volume, 1.0) & _inside(model_space, model_space, 1.0)
    assert interior.mean() > 0.2
    # every model-space voxel holds the input's value at its own physical position: the geometry is right
    np.testing.assert_allclose(model_space.array[interior], _linear(model_space)[interior], atol=2e-3)


def test_identity_network_maps_back_onto_the_input_grid():
    volume, _ = _tilted_linear_volume()
    config = ModelConfig(kind="image_to_image", channel_names=["same"], preprocessing=GEOMETRY_STEPS["builtin"])
    out = ImageToImageModel.from_network(torch.nn.Identity(), config).predict(volume)["same"]
    assert out.same_grid(volume)
    interior = _inside(volume, volume, 3.0)
    np.testing.assert_allclose(out.array[interior], volume.array[interior], atol=2e-3)


def test_downsampling_network_output_grid_covers_the_same_field_of_view():
    """AvgPool(2) of a linear function is that function at the 2x2x2 block centre: known on the output grid."""
    volume, _ = _tilted_linear_volume()
    config = ModelConfig(kind="image_to_image", channel_names=["coarse"], preprocessing=GEOMETRY_STEPS["monai_resize"])
    model = ImageToImageModel.from_network(torch.nn.AvgPool3d(2), config)
    model_space = model.preprocess(volume)
    with torch.no_grad():
        output = model(model.to_tensor(model_space))
    coarse = model.output_volumes(output, model_space)[0]
    assert coarse.size_xyz == (12, 10, 8)
    np.testing.assert_allclose(np.array(coarse.spacing), np.array(model_space.spacing) * 2)
    inner = _inside(coarse, coarse, 1.0)
    np.testing.assert_allclose(coarse.array[inner], _linear(coarse)[inner], atol=2e-3)
    on_input = model.predict(volume)["coarse"]
    assert on_input.same_grid(volume)
    interior = _inside(volume, coarse, 1.0)
    assert interior.sum() > 50
    np.testing.assert_allclose(on_input.array[interior], volume.array[interior], atol=2e-3)


def test_named_layer_takes_hooks_and_unknown_names_are_refused():
    conv = torch.nn.Conv3d(1, 2, 1)
    network = torch.nn.Sequential(conv, torch.nn.ReLU())
    model = ImageToImageModel.from_network(network, ModelConfig(kind="image_to_image", channel_names=["a", "b"]))
    seen = []
    handle = model.layer("0").register_forward_hook(lambda module, args, out: seen.append(out.detach()))
    x = torch.randn(1, 1, 4, 4, 4)
    out = model(x)
    handle.remove()
    torch.testing.assert_close(seen[0].clamp(min=0), out)  # the hooked activation is the pre-ReLU output
    with pytest.raises(ModelCapabilityError, match="no layer 'conv1'"):
        model.layer("conv1")


@pytest.mark.parametrize("steps, message", [
    ([{"transform": "Resise", "spatial_size": [8, 8, 8]}], r"Unknown preprocessing transform 'Resise'.*Resize"),
    ([{"transform": "Spacingd", "keys": "image", "pixdim": 1.0}], "dictionary transforms ending in 'd'"),
    ([{"transform": "RandGaussianNoise"}], "is random"),
    ([{"transform": "Resize", "spatial_sise": [8, 8, 8]}], "MONAI transform 'Resize' rejected its arguments"),
    ([{"transform": "ResampleToSpacing", "spacing": [1, 1, 1]}], r"'ResampleToSpacing'.*it takes \['pixdim', 'mode'\]"),
    ([{"spatial_size": [8, 8, 8]}], "step 0 must be an object with a 'transform' name"),
    ("cta", "Unknown preprocessing preset 'cta'"),
])
def test_bad_preprocessing_is_named_when_the_model_loads(steps, message):
    config = ModelConfig(kind="image_to_image", preprocessing=steps)
    with pytest.raises(ModelConfigError, match=message):
        ImageToImageModel.from_network(torch.nn.Identity(), config)


def test_python_callable_preprocessing_step(oblique_volume):
    """The escape hatch: ``package.module:callable`` gets the volume and its arguments and returns a Volume."""
    steps = [{"transform": "XAIExplainerLib.volume:reorient", "orientation": "LPS"}]
    model = ImageToImageModel.from_network(torch.nn.Identity(), ModelConfig(kind="image_to_image",
                                                                            preprocessing=steps))
    model_space = model.preprocess(oblique_volume)
    direction = np.asarray(model_space.direction).reshape(3, 3)
    assert np.all(np.diag(direction) > 0.9)  # axes now run along L, P, S (the oblique volume is 20° off)
    assert model.describe()["preprocessing"] == steps
