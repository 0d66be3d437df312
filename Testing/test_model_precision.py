"""Precision has one owner, the adapter: what provenance and describe() record is what ran inside the network."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from XAIExplainerLib.errors import ModelConfigError
from XAIExplainerLib.explain import explain_volume
from XAIExplainerLib.models import ModelConfig, SegmentationModel
from XAIExplainerLib.volume import Volume


class DtypeRecorder(torch.nn.Module):
    """Conv 1x1x1 logits; records the dtype its convolution actually produced on every call."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, kernel_size=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([-4.0, 4.0]).view(2, 1, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([2.0, -2.0]))
        self.seen: set[torch.dtype] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        self.seen.add(out.dtype)
        return out


def _model(precision: str) -> tuple[SegmentationModel, DtypeRecorder]:
    net = DtypeRecorder()
    config = ModelConfig(label_names=["background", "dense"], modality="CT", spacing=(2.0, 2.0, 2.0),
                         roi_size=(8, 8, 8), intensity_range=(0.0, 1.0))
    return SegmentationModel.from_network(net, config, device="cpu", precision=precision), net


def _volume() -> Volume:
    array = np.zeros((16, 16, 16), np.float32)
    array[4:12, 4:12, 4:12] = 1.0  # a dense cube: both classes present
    return Volume(array, spacing=(1.0, 1.0, 1.0))


EXPECTED = {"auto": torch.float32, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@pytest.mark.parametrize("precision", sorted(EXPECTED))
def test_explanation_provenance_records_the_dtype_the_network_ran_in(precision):
    model, net = _model(precision)
    explanation = explain_volume(_volume(), model, method="vanilla_gradient", classes=["dense"])
    assert net.seen == {EXPECTED[precision]}  # checked inside the network, on every forward of the run
    recorded = explanation.provenance["precision"]
    assert recorded == model.describe()["precision"] == str(EXPECTED[precision]).removeprefix("torch.")


@pytest.mark.parametrize("precision", sorted(EXPECTED))
def test_segment_runs_in_the_precision_describe_reports(precision):
    model, net = _model(precision)
    result = model.segment(_volume())
    assert net.seen == {EXPECTED[precision]}
    assert model.describe()["precision"] == str(EXPECTED[precision]).removeprefix("torch.")
    assert result.labels.array[8, 8, 8] == 1 and result.labels.array[0, 0, 0] == 0
    assert model.logits(torch.zeros(1, 1, 8, 8, 8)).dtype == torch.float32  # callers always get float32


def test_bfloat16_logits_stay_close_to_float32():
    x = torch.rand(1, 1, 8, 8, 8)
    full, _ = _model("float32")
    half, _ = _model("bfloat16")
    torch.testing.assert_close(half.logits(x), full.logits(x), rtol=2e-2, atol=2e-2)


def test_unknown_precision_is_named():
    with pytest.raises(ModelConfigError, match="Unknown precision 'half'"):
        _model("half")
