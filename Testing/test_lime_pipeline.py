"""Image-Reg-LIME through the regression pipeline and ``xai-explainer lime``: heatmaps on the input grid that carry
the surrogate's weights, known answers on a linear adapter, files written atomically, bad input refused early."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from XAIExplainerLib.cli.main import main
from XAIExplainerLib.errors import GeometryMismatchError, MethodParameterError, UnknownClassError
from XAIExplainerLib.models import ModelConfig, RegressionModel
from XAIExplainerLib.models.network import build_network
from XAIExplainerLib.pipelines.regression import explain_regression, save_regression_explanation
from XAIExplainerLib.volume import Volume, read_volume, write_volume

SHAPE = (8, 8, 8)
NAMES = ["defocus", "astig_v", "astig_o"]


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.A = torch.nn.Parameter(torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(0)))
        self.calls = 0

    def forward(self, x):
        self.calls += x.shape[0]
        return (x[:, 0:1].double() * self.A.double().unsqueeze(0)).sum((2, 3, 4)).float()


def _volume() -> Volume:
    data = np.random.default_rng(1).uniform(0.5, 1.5, SHAPE).astype(np.float32)
    return Volume(data, spacing=(1.0, 1.0, 1.0))


def _linear_model() -> RegressionModel:
    return RegressionModel.from_network(Linear(), ModelConfig(kind="regression", target_names=NAMES,
                                                                 preprocessing=[], axis_order="zyx"))


def test_pipeline_heatmaps_carry_the_linear_models_coefficients():
    volume, model = _volume(), _linear_model()
    expl = explain_regression(volume, model, method_params={"supervoxels": "cubes", "n_segments": 8,
                                                            "n_samples": 100, "alpha": 1e-9})
    seg = np.asarray(expl.segments.array)
    A = model.network.A.detach().double().numpy()
    exact = np.stack([np.bincount(seg.ravel(), (A[t] * volume.array).ravel()) for t in range(3)])
    np.testing.assert_allclose(expl.weights, exact, rtol=1e-4, atol=1e-4 * np.abs(exact).max())
    for t, heat in enumerate(expl.heatmaps):
        assert heat.same_grid(volume)
        np.testing.assert_allclose(heat.array, expl.weights[t][seg].astype(np.float32), rtol=1e-6)
    assert expl.provenance["method"] == "image_reg_lime" and expl.provenance["n_model_evaluations"] == 100
    np.testing.assert_allclose(np.array(expl.intercept) + expl.weights.sum(1),
                               [expl.predictions[n] for n in NAMES], rtol=1e-4)


def test_pipeline_rejects_bad_targets_and_label_maps_before_any_forward():
    volume, model = _volume(), _linear_model()
    for kwargs, error in [({"targets": ["coma"]}, UnknownClassError), ({"targets": [5]}, UnknownClassError),
                          ({"score": "closeness", "reference": 0.1}, MethodParameterError),
                          ({"reference": 0.1}, MethodParameterError),
                          ({"score": "closeness", "targets": ["astig_o"]}, MethodParameterError),
                          ({"label_map": Volume(np.zeros((4, 4, 4), np.int16))}, GeometryMismatchError),
                          ({"method_params": {"n_samples": 0}}, MethodParameterError),
                          ({"method_params": {"kernel_width": -0.1}}, MethodParameterError)]:
        with pytest.raises(error):
            explain_regression(volume, model, **kwargs)
    assert model.network.calls == 0


def test_label_map_supervoxels_and_saved_files(tmp_path):
    volume, model = _volume(), _linear_model()
    labels = np.zeros(SHAPE, np.int16)
    labels[4:] = 7
    labels[:, 4:] += 1
    expl = explain_regression(volume, model, targets=["astig_o"], score="closeness", reference=1.0,
                              label_map=volume.with_array(labels), method_params={"n_samples": 30})
    assert expl.weights.shape == (1, 4) and expl.reference == 1.0
    out = save_regression_explanation(expl, tmp_path / "out")
    record = json.loads((out / "surrogate.json").read_text())
    assert record["reads"] == "positive = supports not-a*"
    assert record["targets"]["astig_o"]["weights"] == pytest.approx(expl.weights[0].tolist())
    assert (out / "lime_heatmaps.png").stat().st_size > 0
    assert read_volume(out / "heatmap_astig_o.nii.gz").same_grid(volume)


@pytest.fixture
def saved_regressor(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(kind="regression", target_names=NAMES, architecture="Regressor", preprocessing=[],
                         network_kwargs={"in_shape": [1, *SHAPE], "out_shape": [3], "channels": [2, 4],
                                         "strides": [2, 2]})
    torch.save(build_network(config).state_dict(), tmp_path / "w.pt")
    config.save(tmp_path / "w.json")
    write_volume(_volume(), tmp_path / "in.nii.gz")
    return tmp_path


def test_cli_writes_every_output(saved_regressor):
    d = saved_regressor
    code = main(["lime", "--input", str(d / "in.nii.gz"), "--model", str(d / "w.pt"), "--supervoxels", "cubes",
                 "--n-segments", "8", "--samples", "20", "--output", str(d / "out")])
    assert code == 0
    files = {p.name for p in (d / "out").iterdir()}
    assert {"heatmap_defocus.nii.gz", "heatmap_astig_v.nii.gz", "heatmap_astig_o.nii.gz", "supervoxels.nii.gz",
            "surrogate.json", "surrogate_weights.csv", "lime_heatmaps.png", "provenance.json"} <= files
    provenance = json.loads((d / "out" / "provenance.json").read_text())
    assert provenance["params"]["n_samples"] == 20 and provenance["model"]["sha256"]
    heat = read_volume(d / "out" / "heatmap_astig_v.nii.gz").array
    seg = read_volume(d / "out" / "supervoxels.nii.gz").array.astype(int)
    weights = json.loads((d / "out" / "surrogate.json").read_text())["targets"]["astig_v"]["weights"]
    np.testing.assert_allclose(heat, np.asarray(weights, np.float32)[seg], rtol=1e-6)


@pytest.mark.parametrize("extra", [["--targets", "coma"], ["--reference", "0.1"], ["--samples", "0"],
                                   ["--kernel-width", "0"], ["--score", "closeness", "--reference", "0.1"],
                                   ["--supervoxels", "LABELS"]])
def test_cli_bad_input_is_one_line_and_writes_nothing(saved_regressor, capsys, extra):
    d = saved_regressor
    write_volume(Volume(np.zeros((4, 4, 4), np.int16)), d / "labels.nii.gz")
    extra = [str(d / "labels.nii.gz") if e == "LABELS" else e for e in extra]
    code = main(["lime", "--input", str(d / "in.nii.gz"), "--model", str(d / "w.pt"), *extra,
                 "--output", str(d / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err
    assert not (d / "out").exists()
