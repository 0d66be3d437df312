"""Counterfactual saliency (Major et al.): the mask finds the region a toy classifier looks at, the regularisers
shrink it, known voxels stay exact whatever the inpainter does, batching equals one-by-one (on the toy, whose
arithmetic is exact per item), and bad input fails
with one-line errors before any optimisation."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from XAIExplainerLib.attribution.counterfactual import counterfactual, log_probabilities
from XAIExplainerLib.attribution.registry import get_method
from XAIExplainerLib.errors import (GeometryMismatchError, InvalidVolumeError, MethodParameterError,
                                    ModelCapabilityError, NonFiniteLossError, UnknownClassError)
from XAIExplainerLib.models.partial_conv import PartialConvUNet3d

D = 20


def region_box() -> torch.Tensor:
    region = torch.zeros(D, D, D, dtype=torch.bool)
    region[5:13, 6:14, 7:15] = True
    return region


class Toy(nn.Module):
    """Logits (healthy 0, lesion 8·(Σ w·x − 0.5)): only voxels of the region count, centre ones most (Gaussian w)."""

    def __init__(self, region: torch.Tensor) -> None:
        super().__init__()
        grid = torch.stack(torch.meshgrid(*[torch.arange(D, dtype=torch.float32)] * 3, indexing="ij"))
        centre = torch.stack([torch.nonzero(region)[:, a].float().mean() for a in range(3)]).view(3, 1, 1, 1)
        w = torch.exp(-((grid - centre) ** 2).sum(0) / (2 * 3.0 ** 2)) * region
        self.register_buffer("w", w / w.sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x[:, 0] * self.w).flatten(1).sum(1)
        return torch.stack([torch.zeros_like(s), 8 * (s - 0.5)], 1)


def lesion_image(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 1, D, D, D, generator=g) * 0.2
    x[0, 0][region_box()] += 1.0
    return x


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.mark.parametrize("fill", ["zero", "mean"])
def test_mask_lands_on_the_region_the_classifier_uses(fill):
    region, x = region_box(), lesion_image()
    res = counterfactual(Toy(region).eval(), x, 1, fill=fill)
    assert dice(res.mask[0], region) >= 0.8
    assert res.prob_before[0] > 0.9 and res.prob_after[0] < 0.1
    assert set(res.losses) == {"phi", "psi", "tv", "ar", "total"} and len(res.losses["total"]) == 100
    assert res.losses["total"][-1][0] < res.losses["total"][0][0]


def test_larger_size_weight_shrinks_the_mask_inside_the_region():
    region, x = region_box(), lesion_image()
    sizes = []
    for lambda3 in (0.1, 30.0, 100.0, 300.0):
        res = counterfactual(Toy(region).eval(), x, 1, fill="zero", lambda3=lambda3)
        assert not bool((res.mask[0] & ~region).any())  # never outside what the classifier uses
        sizes.append(int(res.mask[0].sum()))
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0] // 2, sizes


def test_known_voxels_stay_exact_even_if_the_inpainter_changes_everything():
    region, x = region_box(), lesion_image()

    def vandal(holed: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return torch.full_like(holed, -7.0)  # rewrites every voxel, known or not

    res = counterfactual(Toy(region).eval(), x, 1, fill="inpainter", inpainter=vandal, steps=20)
    known = ~res.mask[0]
    assert torch.equal(res.counterfactual[0, 0][known], x[0, 0][known])
    assert torch.all(res.counterfactual[0, 0][res.mask[0]] == -7.0)


def test_partial_conv_inpainter_runs_and_batching_equals_one_by_one():
    torch.manual_seed(0)
    region = region_box()
    inp = PartialConvUNet3d(depth=2, base_channels=4).eval()
    x = torch.cat([lesion_image(0), lesion_image(1)])
    batched = counterfactual(Toy(region).eval(), x, 1, fill="inpainter", inpainter=inp, steps=15, restarts=2)
    for i in range(2):
        single = counterfactual(Toy(region).eval(), x[i:i + 1], 1, fill="inpainter", inpainter=inp, steps=15,
                                restarts=2)
        torch.testing.assert_close(batched.attributions[i], single.attributions[0], rtol=0, atol=1e-5)
        assert torch.equal(batched.mask[i], single.mask[0])


def test_deterministic_for_a_seed_and_restarts_differ():
    region, x = region_box(), lesion_image()
    a = counterfactual(Toy(region).eval(), x, 1, fill="blur", steps=10, restarts=3, seed=5)
    b = counterfactual(Toy(region).eval(), x, 1, fill="blur", steps=10, restarts=3, seed=5)
    assert torch.equal(a.attributions, b.attributions) and a.restart_losses == b.restart_losses
    assert len(set(a.restart_losses[0])) > 1


def test_signs_reward_a_drop_of_the_class_probability():
    out = torch.tensor([[0.0, 2.0], [0.0, -2.0]])
    logp, log1mp = log_probabilities(out, torch.tensor([1, 1]), "softmax")
    p = torch.softmax(out, 1)[:, 1]
    torch.testing.assert_close(logp.exp(), p)
    torch.testing.assert_close(log1mp.exp(), 1 - p)
    # phi = -log(1 - p) is lower for the image with the lower class probability
    assert float(-log1mp[1]) < float(-log1mp[0])
    lp, l1 = log_probabilities(out[:, 1:], torch.tensor([0, 0]), "sigmoid")
    torch.testing.assert_close(lp - l1, out[:, 1])  # log odds of a sigmoid are the logit


def test_nan_loss_stops_naming_step_and_term():
    region, x = region_box(), lesion_image()

    class Flaky(Toy):
        calls = 0

        def forward(self, x):
            Flaky.calls += 1
            out = super().forward(x)
            return out * float("nan") if Flaky.calls > 4 else out

    with pytest.raises(NonFiniteLossError, match=r"step 3 in term 'phi'"):
        counterfactual(Flaky(region).eval(), x, 1, fill="zero")


def test_bad_input_fails_before_any_work():
    region, x = region_box(), lesion_image()
    toy = Toy(region).eval()
    calls = []

    class Seg(nn.Module):
        def forward(self, x):
            calls.append(1)
            return x.repeat(1, 2, 1, 1, 1)

    with pytest.raises(ModelCapabilityError, match=r"returned \(1, 2, 20, 20, 20\)"):
        counterfactual(Seg().eval(), x, 1, fill="zero")
    with pytest.raises(UnknownClassError, match="2 classes"):
        counterfactual(toy, x, 5, fill="zero")
    with pytest.raises(GeometryMismatchError, match="organ mask"):
        counterfactual(Seg().eval(), x, 1, fill="zero", organ_mask=torch.ones(D, D, D - 1))
    with pytest.raises(InvalidVolumeError, match="empty"):
        counterfactual(Seg().eval(), x, 1, fill="zero", organ_mask=torch.zeros(D, D, D))
    with pytest.raises(MethodParameterError, match="inpainter"):
        counterfactual(Seg().eval(), x, 1, fill="inpainter")
    with pytest.raises(MethodParameterError, match="look like logits"):
        counterfactual(toy, x, 1, fill="zero", scores="probabilities")
    with pytest.raises(ModelCapabilityError, match="eval"):
        counterfactual(Toy(region), x, 1, fill="zero")
    assert len(calls) == 1  # only the first, refused, forward ran
    before = x.clone()
    counterfactual(toy, x, 1, fill="zero", steps=2)
    assert torch.equal(x, before)


def test_organ_mask_confines_and_dice_term():
    region, x = region_box(), lesion_image()
    organ = torch.zeros(D, D, D)
    organ[:, :, :11] = 1  # half of the region lies outside the organ
    res = counterfactual(Toy(region).eval(), x, 1, fill="zero", organ_mask=organ, size_term="dice")
    assert not bool((res.mask[0] & (organ == 0)).any())
    assert dice(res.mask[0], region & (organ > 0)) >= 0.8


def test_registered_for_classifiers():
    spec = get_method("counterfactual")
    assert spec.model_kinds == ("classifier",)
    assert spec.defaults()["steps"] == 100 and spec.defaults()["lr"] == 2e-3 and spec.defaults()["lambda2"] == 0.1


def test_benchmark_command_reports_both_timings():
    from XAIExplainerLib.extras.counterfactual_benchmark import run_benchmark

    report = run_benchmark(volumes=2, size=32, steps=2, fill="zero")
    assert report["batched_s_per_volume"] > 0 and report["one_by_one_s_per_volume"] > 0
    assert 0.0 <= report["mask_voxels_agreeing"] <= 1.0 and len(report["prob_after_batched"]) == 2


def test_scores_must_match_what_the_model_declares_and_dice_needs_an_organ():
    from XAIExplainerLib.models import ClassifierModel, ModelConfig

    region, x = region_box(), lesion_image()

    class Probabilities(Toy):
        def forward(self, x):
            return torch.softmax(super().forward(x), dim=1)

    config = ModelConfig(kind="classifier", label_names=["healthy", "lesion"], output="probabilities",
                         preprocessing=[])
    model = ClassifierModel.from_network(Probabilities(region), config)
    with pytest.raises(MethodParameterError, match="scores='probabilities'"):
        counterfactual(model, x, "lesion", fill="zero")
    res = counterfactual(model, x, "lesion", fill="zero", scores="probabilities")
    assert dice(res.mask[0], region) >= 0.8 and res.classes == [1]
    with pytest.raises(MethodParameterError, match="organ mask"):
        counterfactual(model, x, "lesion", fill="zero", scores="probabilities", size_term="dice")
