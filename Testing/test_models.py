"""Segmentation models: preprocessing numbers, every weights format, inference on the input grid, bad weights."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from XAIExplainerLib.errors import ModelConfigError, WeightsError
from XAIExplainerLib.models import ModelConfig, SegmentationModel
from XAIExplainerLib.models.network import build_network
from XAIExplainerLib.models.preprocessing import normalise_ct, normalise_mri, preprocess
from XAIExplainerLib.volume import Volume


def tiny_config(**overrides) -> ModelConfig:
    values = dict(label_names=["background", "liver", "bone"], modality="CT", feature_size=12,
                  spacing=(2.0, 2.0, 2.0), roi_size=(64, 64, 64))
    values.update(overrides)
    return ModelConfig(**values)


@pytest.fixture(scope="module")
def tiny_swin():
    torch.manual_seed(0)
    config = tiny_config()
    return build_network(config).eval(), config


def test_ct_preprocessing_clips_and_scales_hounsfield_units():
    hu = np.array([-3000, -1024, -512, 0, 512, 1024, 3000], np.float32)
    np.testing.assert_allclose(normalise_ct(hu), [0, 0, 0.25, 0.5, 0.75, 1, 1])


def test_ct_preprocessing_orients_ras_and_resamples_to_1_5_mm():
    config = ModelConfig(label_names=["bg", "a"], modality="CT", spacing=(1.5, 1.5, 1.5))
    ct = Volume(np.full((20, 30, 30), 40.0, np.float32), spacing=(0.75, 0.75, 3.0), origin=(10, 20, 30))
    out = preprocess(ct, config)
    np.testing.assert_allclose(out.spacing, (1.5, 1.5, 1.5))
    np.testing.assert_allclose(np.asarray(out.direction).reshape(3, 3), np.diag([-1, -1, 1]))
    assert out.shape == (40, 15, 15)  # 60 mm / 1.5 along z, 22.5 mm / 1.5 along x and y
    np.testing.assert_allclose(out.array, (40 + 1024) / 2048, atol=1e-6)
    assert ct.array.dtype == np.float32 and float(ct.array.max()) == 40.0  # input untouched


def test_mri_normalisation_maps_foreground_percentiles_to_unit_range():
    rng = np.random.default_rng(0)
    data = np.zeros((10, 10, 10), np.float32)
    data[2:8, 2:8, 2:8] = rng.uniform(100, 200, (6, 6, 6))
    out = normalise_mri(data, (0.0, 100.0))
    foreground = data[data > 0]
    kept = foreground[foreground > np.percentile(foreground, 10)]
    assert out.min() == 0.0 and out.max() == pytest.approx(1.0)
    assert out[data == kept.min()].item() == pytest.approx(0.0)
    assert np.all(out[data == 0] == 0)


def _outputs(model: SegmentationModel, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.logits(x)


@pytest.mark.parametrize("layout", ["plain", "checkpoint_module", "model_key_prefix"])
def test_state_dict_formats_load_the_same_network(tmp_path, tiny_swin, layout):
    network, config = tiny_swin
    state = network.state_dict()
    payload = {
        "plain": state,
        "checkpoint_module": {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3},
        "model_key_prefix": {"model": {f"model.{k}": v for k, v in state.items()}, "optimizer": {}},
    }[layout]
    torch.save(payload, tmp_path / "weights.pt")
    config.save(tmp_path / "weights.json")
    loaded = SegmentationModel.load(tmp_path / "weights.pt", device="cpu")
    x = torch.rand(1, 1, 64, 64, 64)
    torch.testing.assert_close(_outputs(loaded, x), network(x).detach())
    assert loaded.label_names == config.label_names and loaded.load_form == "state_dict" and len(loaded.sha256) == 64


def test_torchscript_file_loads_with_its_json(tmp_path, tiny_swin):
    network, config = tiny_swin
    scripted = torch.jit.trace(network, torch.rand(1, 1, 64, 64, 64), check_trace=False)
    scripted.save(str(tmp_path / "seg.ts"))
    config.save(tmp_path / "seg.json")
    loaded = SegmentationModel.load(tmp_path / "seg.ts", device="cpu")
    x = torch.rand(1, 1, 64, 64, 64)
    assert loaded.load_form == "torchscript"
    torch.testing.assert_close(_outputs(loaded, x), network(x).detach(), rtol=1e-4, atol=1e-4)


def test_monai_bundle_folder_gives_config_and_weights(tmp_path, tiny_swin):
    network, config = tiny_swin
    (tmp_path / "configs").mkdir()
    (tmp_path / "models").mkdir()
    metadata = {"network_data_format": {
        "inputs": {"image": {"modality": "CT", "num_channels": 1}},
        "outputs": {"pred": {"channel_def": {"0": "background", "1": "liver", "2": "bone"}}}}}
    inference = {
        "network_def": {"_target_": "SwinUNETR", "in_channels": 1, "out_channels": 3, "feature_size": 12},
        "preprocessing": {"transforms": [{"_target_": "Spacingd", "keys": "image", "pixdim": [2.0, 2.0, 2.0]}]},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [64, 64, 64], "overlap": 0.5},
    }
    (tmp_path / "configs" / "metadata.json").write_text(json.dumps(metadata))
    (tmp_path / "configs" / "inference.json").write_text(json.dumps(inference))
    torch.save(network.state_dict(), tmp_path / "models" / "model.pt")
    loaded = SegmentationModel.load(tmp_path, device="cpu")
    assert loaded.load_form == "bundle"
    assert loaded.label_names == ["background", "liver", "bone"]
    assert loaded.config.spacing == (2.0, 2.0, 2.0) and loaded.config.roi_size == (64, 64, 64)
    assert loaded.config.overlap == 0.5 and loaded.config.feature_size == 12
    x = torch.rand(1, 1, 64, 64, 64)
    torch.testing.assert_close(_outputs(loaded, x), network(x).detach())


def test_weights_of_another_architecture_name_missing_and_unexpected_keys(tmp_path, tiny_swin):
    from monai.networks.nets import UNet

    _, config = tiny_swin
    unet = UNet(3, 1, 3, channels=(4, 8), strides=(2,))
    torch.save(unet.state_dict(), tmp_path / "unet.pt")
    config.save(tmp_path / "unet.json")
    with pytest.raises(WeightsError, match=r"Missing keys: decoder1\..*Unexpected keys: 0\.adn") as info:
        SegmentationModel.load(tmp_path / "unet.pt")
    assert "another architecture" in str(info.value)


def test_wrong_feature_size_reports_shape_mismatches(tmp_path, tiny_swin):
    network, _ = tiny_swin
    torch.save(network.state_dict(), tmp_path / "w.pt")
    tiny_config(feature_size=24).save(tmp_path / "w.json")
    with pytest.raises(WeightsError, match=r"Shape mismatches: .*file \(12,"):
        SegmentationModel.load(tmp_path / "w.pt")


def test_non_torch_file_missing_json_and_bad_json_are_named(tmp_path, tiny_swin):
    network, config = tiny_swin
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint" * 20)
    config.save(tmp_path / "junk.json")
    with pytest.raises(WeightsError, match="could not be read as PyTorch weights"):
        SegmentationModel.load(tmp_path / "junk.pt")
    torch.save(network.state_dict(), tmp_path / "alone" / "w.pt") if (tmp_path / "alone").mkdir() is None else None
    with pytest.raises(ModelConfigError, match="No model configuration found"):
        SegmentationModel.load(tmp_path / "alone" / "w.pt")
    (tmp_path / "alone" / "w.json").write_text("{label_names: oops")
    with pytest.raises(ModelConfigError, match="not valid JSON"):
        SegmentationModel.load(tmp_path / "alone" / "w.pt")
    with pytest.raises(ModelConfigError, match="Unknown model configuration key"):
        ModelConfig.from_dict({"label_names": ["a", "b"], "featuresize": 12})
    with pytest.raises(WeightsError, match="No weights"):
        SegmentationModel.load(tmp_path / "missing.pt")


class ThresholdNet(torch.nn.Module):
    """Logits with a known argmax: class 1 where the (normalised) input exceeds 0.6, class 2 below 0.3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), 20 * (x - 0.6), 20 * (0.3 - x)], dim=1)


def test_segment_returns_labels_and_probabilities_on_the_input_grid(oblique_volume):
    config = tiny_config(spacing=(1.0, 1.0, 1.0), intensity_range=(0.0, 1.0))
    model = SegmentationModel.from_network(ThresholdNet(), config)
    z, y, x = np.mgrid[0:24, 0:26, 0:28]
    image = Volume(np.where(x < 14, 0.9, 0.1).astype(np.float32), spacing=(0.9, 1.2, 1.6),
                   origin=oblique_volume.origin, direction=oblique_volume.direction)
    result = model.segment(image)
    assert result.labels.same_grid(image)
    assert result.probabilities.shape == (3, *image.shape)
    np.testing.assert_allclose(result.probabilities.sum(0)[2:-2, 2:-2, 2:-2], 1.0, atol=1e-4)
    interior = (slice(2, -2), slice(2, -2))
    assert np.all(result.labels.array[interior][..., 2:12] == 1)
    assert np.all(result.labels.array[interior][..., 16:-2] == 2)


def test_sliding_window_equals_direct_call_on_one_window(tiny_swin):
    network, config = tiny_swin
    model = SegmentationModel.from_network(network, config)
    x = torch.rand(1, 1, 64, 64, 64)
    bigger = torch.nn.functional.pad(x, (0, 16, 0, 0, 0, 0))
    with torch.no_grad():
        direct = network(x)
        windowed = model.logits(bigger)
    assert windowed.shape == (1, 3, 64, 64, 80)
    # The first window covers exactly x; with one window per position the gaussian blend returns it unchanged.
    assert torch.isfinite(windowed).all()
    corner = windowed[..., :8]
    torch.testing.assert_close(corner, direct[..., :8], rtol=1e-4, atol=1e-4)


BTCV_PREPROCESSING = {"_target_": "Compose", "transforms": [
    {"_target_": "LoadImaged", "keys": "image"},
    {"_target_": "EnsureChannelFirstd", "keys": "image"},
    {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
    {"_target_": "Spacingd", "keys": ["image", "label"], "pixdim": [1.5, 1.5, 2.0], "mode": ["bilinear", "nearest"],
     "allow_missing_keys": True},
    {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -175, "a_max": 250, "b_min": 0.0, "b_max": 1.0,
     "clip": True},
    {"_target_": "EnsureTyped", "keys": "image"}]}


def _bundle(folder, preprocessing) -> None:
    (folder / "configs").mkdir()
    (folder / "models").mkdir()
    metadata = {"network_data_format": {"inputs": {"image": {"modality": "CT"}},
                                        "outputs": {"pred": {"channel_def": {"0": "background", "1": "organ"}}}}}
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata))
    (folder / "configs" / "inference.json").write_text(json.dumps({"preprocessing": preprocessing}))
    torch.jit.script(torch.nn.Conv3d(1, 2, 1)).save(str(folder / "models" / "model.ts"))


def test_bundle_preprocessing_is_the_bundles_own_transforms(tmp_path, oblique_volume):
    """model.preprocess agrees with MONAI running the bundle's dictionary transforms on the same file."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd, ScaleIntensityRanged, Spacingd

    from XAIExplainerLib.volume import write_volume

    _bundle(tmp_path, BTCV_PREPROCESSING)
    model = SegmentationModel.load(tmp_path, device="cpu")
    assert [s["transform"] for s in model.describe()["preprocessing"]] == ["Orientation", "Spacing",
                                                                          "ScaleIntensityRange"]
    assert model.describe()["preprocessing"][1]["mode"] == "bilinear"  # the image's entry of the per-key list
    ct = oblique_volume.with_array((oblique_volume.array * 300).astype(np.float32))
    write_volume(ct, tmp_path / "ct.nii.gz")
    ours = model.to_tensor(model.preprocess(ct))[0, 0]
    reference = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), Orientationd("image", axcodes="RAS"),
                         Spacingd("image", pixdim=(1.5, 1.5, 2.0), mode="bilinear"),
                         ScaleIntensityRanged("image", -175, 250, 0.0, 1.0, clip=True)])(
        {"image": str(tmp_path / "ct.nii.gz")})["image"][0]
    assert tuple(ours.shape) == tuple(reference.shape)
    torch.testing.assert_close(ours, reference.as_tensor().float(), rtol=1e-4, atol=1e-4)


def test_bundle_with_config_expressions_falls_back_to_the_modality_preset(tmp_path):
    expressions = {"_target_": "Compose", "transforms": [
        {"_target_": "Spacingd", "keys": "image", "pixdim": "@pixdim"}]}
    _bundle(tmp_path, expressions)
    model = SegmentationModel.load(tmp_path, device="cpu")
    assert [s["transform"] for s in model.describe()["preprocessing"]] == ["Orient", "ResampleToSpacing",
                                                                          "ClipScaleIntensity"]
