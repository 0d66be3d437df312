"""PartialConv3d and the partial-convolution U-Net: reference agreement and the hole invariants they promise."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from XAIExplainerLib.errors import ModelConfigError, WeightsError
from XAIExplainerLib.models.partial_conv import (PartialConv3d, PartialConvUNet3d, composite, load_inpainter,
                                                 save_inpainter)


def _pair(padding: int, stride: int = 1) -> tuple[PartialConv3d, nn.Conv3d]:
    torch.manual_seed(0)
    pconv = PartialConv3d(2, 3, 3, stride=stride, padding=padding)
    conv = nn.Conv3d(2, 3, 3, stride=stride, padding=padding)
    conv.load_state_dict(pconv.state_dict())
    return pconv, conv


@pytest.mark.parametrize("stride", [1, 2])
def test_full_mask_equals_conv3d(stride):
    pconv, conv = _pair(padding=0, stride=stride)
    x = torch.randn(2, 2, 9, 8, 7)
    out, mask = pconv(x, torch.ones(2, 1, 9, 8, 7))
    torch.testing.assert_close(out, conv(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(mask, torch.ones_like(mask))


def test_full_mask_padding_equals_conv_inside_and_rescales_at_border():
    pconv, conv = _pair(padding=1)
    x = torch.randn(1, 2, 6, 6, 6)
    out, mask = pconv(x, torch.ones(1, 1, 6, 6, 6))
    ref = conv(x)
    torch.testing.assert_close(out[..., 1:-1, 1:-1, 1:-1], ref[..., 1:-1, 1:-1, 1:-1], rtol=1e-5, atol=1e-5)
    # corner: 8 of the 27 window positions are inside, so the bias-free response is scaled by 27/8
    bias = pconv.bias.view(-1)
    torch.testing.assert_close(out[0, :, 0, 0, 0] - bias, (ref[0, :, 0, 0, 0] - bias) * 27 / 8, rtol=1e-5, atol=1e-5)
    assert torch.equal(mask, torch.ones_like(mask))


def test_output_depends_only_on_valid_voxels_and_rescaling_formula():
    pconv, conv = _pair(padding=1)
    x = torch.randn(1, 2, 8, 8, 8)
    valid = (torch.rand(1, 1, 8, 8, 8) > 0.4).float()
    out, _ = pconv(x, valid)
    perturbed = x + 100.0 * torch.randn_like(x) * (1 - valid)
    out2, _ = pconv(perturbed, valid)
    torch.testing.assert_close(out, out2, rtol=0, atol=1e-4)
    # the formula: (W^T (X ⊙ M)) * 27 / sum(M) + b, at one voxel computed by hand
    z, y, w = 4, 3, 5
    patch = (x * valid)[0, :, z - 1:z + 2, y - 1:y + 2, w - 1:w + 2]
    count = valid[0, 0, z - 1:z + 2, y - 1:y + 2, w - 1:w + 2].sum()
    expected = (pconv.weight * patch).sum(dim=(1, 2, 3, 4)) * 27 / count + pconv.bias
    torch.testing.assert_close(out[0, :, z, y, w], expected, rtol=1e-5, atol=1e-5)


def test_mask_update_and_all_hole_window():
    pconv, _ = _pair(padding=1)
    valid = torch.zeros(1, 1, 7, 7, 7)
    valid[0, 0, 3, 3, 3] = 1
    out, mask = pconv(torch.randn(1, 2, 7, 7, 7), valid)
    expected = torch.zeros_like(valid)
    expected[0, 0, 2:5, 2:5, 2:5] = 1  # every window that sees the one valid voxel
    assert torch.equal(mask, expected)
    assert torch.all(out[:, :, 0, 0, 0] == 0)  # no valid voxel in the window: output 0 (not the bias)


def test_multichannel_mask_counts_every_channel():
    pconv, _ = _pair(padding=1)
    x = torch.randn(1, 2, 5, 5, 5)
    valid = torch.ones(1, 2, 5, 5, 5)
    valid[:, 1] = 0  # second channel entirely unknown: its values must not matter
    out1, _ = pconv(x, valid)
    x2 = x.clone()
    x2[:, 1] = 55.0
    out2, _ = pconv(x2, valid)
    torch.testing.assert_close(out1, out2)


def test_unet_hole_content_never_reaches_the_output_and_shapes():
    torch.manual_seed(1)
    net = PartialConvUNet3d(depth=3, base_channels=4).eval()
    image = torch.randn(2, 1, 20, 17, 16)
    valid = torch.ones_like(image)
    valid[:, :, 5:12, 4:10, 6:11] = 0
    with torch.no_grad():
        a = net(image, valid)
        b = net(image + 50 * (1 - valid) * torch.randn_like(image), valid)
    assert a.shape == image.shape
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_encoder_batch_norm_frozen_in_phase_two():
    net = PartialConvUNet3d(depth=2, base_channels=4, batch_norm_in_encoder=False)
    net.train()
    norm = net.encoder[1].norm
    before = norm.running_mean.clone()
    net(torch.randn(2, 1, 8, 8, 8), torch.ones(2, 1, 8, 8, 8))
    assert not norm.training and torch.equal(norm.running_mean, before)
    assert not any(p.requires_grad for p in norm.parameters())
    assert net.decoder[0].norm.training  # the decoder keeps learning
    net.batch_norm_in_encoder = True
    assert norm.training and all(p.requires_grad for p in norm.parameters())


def test_composite_keeps_known_voxels_exact_even_if_inpainter_returns_garbage():
    image = torch.randn(1, 1, 6, 6, 6)
    hole = torch.zeros_like(image)
    hole[..., 2:4, 2:4, 2:4] = 1
    garbage = torch.full_like(image, float("nan"))
    garbage[..., 2:4, 2:4, 2:4] = 7.0
    out = composite(image, garbage, hole)
    assert torch.equal(out[hole == 0], image[hole == 0])
    assert torch.all(out[hole == 1] == 7.0)
    soft = hole * 0.25
    torch.testing.assert_close(composite(image, torch.full_like(image, 7.0), soft)[hole == 1],
                               image[hole == 1] * 0.75 + 7.0 * 0.25)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_save_load_roundtrip(tmp_path, dtype):
    torch.manual_seed(2)
    net = PartialConvUNet3d(depth=2, base_channels=4, kernel_sizes=[3, 3]).eval()
    path = save_inpainter(net, tmp_path / "inp.pt", dtype=dtype)
    assert json.loads((tmp_path / "inp.json").read_text())["architecture"] == "PartialConvUNet3d"
    loaded = load_inpainter(path, "cpu")
    x, v = torch.randn(1, 1, 8, 8, 8), (torch.rand(1, 1, 8, 8, 8) > 0.3).float()
    with torch.no_grad():
        tol = 1e-6 if dtype == "float32" else 5e-2
        torch.testing.assert_close(loaded(x, v), net(x, v), rtol=tol, atol=tol)
    assert loaded.config == net.config


def test_load_errors(tmp_path):
    with pytest.raises(WeightsError):
        load_inpainter(tmp_path / "missing.pt")
    net = PartialConvUNet3d(depth=2, base_channels=4)
    path = save_inpainter(net, tmp_path / "a.pt")
    (tmp_path / "a.json").unlink()
    with pytest.raises(ModelConfigError, match="save_inpainter"):
        load_inpainter(path)
    (tmp_path / "a.json").write_text(json.dumps({"architecture": "SwinUNETR"}))
    with pytest.raises(ModelConfigError, match="PartialConvUNet3d"):
        load_inpainter(path)
    (tmp_path / "a.json").write_text(json.dumps({"architecture": "PartialConvUNet3d", "depth": 3,
                                                  "base_channels": 8}))
    with pytest.raises(WeightsError):
        load_inpainter(path)
