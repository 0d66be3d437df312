"""Fused Swin window attention: the same numbers as MONAI's own attention, and the user's model left untouched."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from monai.networks.nets import SwinUNETR  # noqa: E402

from XAIExplainerLib.attribution import gradients  # noqa: E402
from XAIExplainerLib.attribution.kernel_shap import kernel_shap_cubes  # noqa: E402
from XAIExplainerLib.attribution.targets import ClassAggregate  # noqa: E402
from XAIExplainerLib.models.fused_attention import count_fused, fused_window_attention  # noqa: E402


@pytest.fixture(scope="module")
def swin():
    """float64 SwinUNETR on 32³: 16³ tokens in 7³ windows (shifted, with masks) and smaller windows deeper down."""
    torch.manual_seed(3)
    net = SwinUNETR(in_channels=1, out_channels=3, feature_size=12, depths=(2, 2, 1, 1), norm_name="batch").double()
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.rand(1, 1, 32, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        net.out.conv.conv.bias.sub_(net(x).mean((0, 2, 3, 4)))  # every class predicted somewhere
    return net, x


def _instance_forwards(net) -> int:
    return sum("forward" in m.__dict__ for m in net.modules())


def test_fused_forward_equals_monai_attention_and_is_restored(swin):
    net, x = swin
    assert count_fused(net) == 6  # 2 + 2 + 1 + 1 blocks
    with torch.no_grad():
        stock = net(x)
        with fused_window_attention(net) as n_fused:
            assert n_fused == 6
            assert _instance_forwards(net) == 6
            fused = net(x)
        after = net(x)
    assert torch.allclose(fused, stock, rtol=0, atol=1e-12)
    assert torch.equal(after, stock)  # the module's own code again
    assert _instance_forwards(net) == 0


def test_input_gradients_equal_with_and_without_fusion(swin):
    """A bare network runs as given; fused (as an adapter runs it) the gradients are the same to 1e-10."""
    from XAIExplainerLib.models import ModelConfig, SegmentationModel

    net, x = swin
    with torch.no_grad():
        target = ClassAggregate.from_logits(net(x))
    stock = gradients.vanilla_gradient(net, x, target, device="cpu", window=None)
    with fused_window_attention(net) as n_fused:
        fused = gradients.vanilla_gradient(net, x, target, device="cpu", window=None)
    assert n_fused == 6 and _instance_forwards(net) == 0
    scale = float(stock.attributions.abs().max())
    assert scale > 0
    assert float((fused.attributions - stock.attributions).abs().max()) < 1e-10 * scale
    model = SegmentationModel.from_network(net, ModelConfig(label_names=["a", "b", "c"], roi_size=(32, 32, 32)))
    adapted = gradients.vanilla_gradient(model, x, target)  # the adapter fuses its network itself
    assert adapted.params["fused_attention"] is True and adapted.params["precision"] == "float32"
    assert float((adapted.attributions - stock.attributions).abs().max()) < 1e-5 * scale  # float32 output
    assert _instance_forwards(net) == 0


def test_kernel_shap_uses_fusion_without_changing_values(swin):
    net, x = swin
    with torch.no_grad():
        target = ClassAggregate.from_logits(net(x))
    stock = kernel_shap_cubes(net, x, target, n_cubes=8, n_samples=20, batch_size=4)
    with fused_window_attention(net) as n_fused:
        fused = kernel_shap_cubes(net, x, target, n_cubes=8, n_samples=20, batch_size=4)
    assert n_fused == 6
    assert torch.allclose(fused.attributions, stock.attributions, rtol=1e-6, atol=1e-9)


def test_nested_blocks_and_errors_restore_exactly_what_they_changed(swin):
    net, _ = swin
    with fused_window_attention(net) as outer:
        with fused_window_attention(net) as inner:
            assert (outer, inner) == (6, 0)  # already fused: the inner block leaves them to the outer one
        assert _instance_forwards(net) == 6
    assert _instance_forwards(net) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with fused_window_attention(net):
            raise RuntimeError("boom")
    assert _instance_forwards(net) == 0


def test_disabled_or_non_swin_models_are_left_alone(swin):
    net, x = swin
    with fused_window_attention(net, enabled=False) as n_fused:
        assert n_fused == 0 and _instance_forwards(net) == 0
    conv = torch.nn.Conv3d(1, 2, 3)
    with fused_window_attention(conv) as n_fused:
        assert n_fused == 0
    scripted = torch.jit.trace(torch.nn.Sequential(torch.nn.Conv3d(1, 1, 1)), torch.zeros(1, 1, 4, 4, 4))
    with fused_window_attention(scripted) as n_fused:
        assert n_fused == 0
