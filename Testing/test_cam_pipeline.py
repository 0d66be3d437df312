"""Grad-CAM++, LayerCAM and SmoothGrad through the regression pipeline and the ``cam`` / ``explain-regression``
commands: maps on the input grid, the folder format ``lime`` writes (what ``report`` reads), blank maps stated in
the files, the thesis' SmoothGrad settings for all targets from one set of noisy forwards, bad input refused with
nothing written."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from XAIExplainerLib.cli.main import main
from XAIExplainerLib.extras.tissue_regressor import TissueRegressor
from XAIExplainerLib.models import ModelConfig, RegressionModel
from XAIExplainerLib.pipelines.regression import explain_regression, save_regression_explanation
from XAIExplainerLib.volume import Volume, read_volume, write_volume

TISSUES = ["grey_matter", "white_matter", "csf"]
CONFIG = {"kind": "regression", "architecture": "XAIExplainerLib.extras.tissue_regressor:TissueRegressor",
          "network_kwargs": {"width": 4}, "preprocessing": [], "axis_order": "zyx", "modality": "MRI",
          "target_names": TISSUES}


def _network(seed: int = 0, negative_head: bool = False) -> TissueRegressor:
    torch.manual_seed(seed)
    net = TissueRegressor(width=4).eval()
    if negative_head:
        with torch.no_grad():
            net.head.weight.copy_(-net.head.weight.abs())
    return net


def _volume() -> Volume:
    data = np.random.default_rng(0).uniform(0, 1, (32, 32, 32)).astype(np.float32)
    return Volume(data, spacing=(2.0, 2.0, 2.0), origin=(-30.0, 10.0, 4.0))


def _adapter(net: torch.nn.Module) -> RegressionModel:
    config = ModelConfig(**{k: v for k, v in CONFIG.items() if k not in ("architecture", "network_kwargs")})
    return RegressionModel.from_network(net, config)


def _saved_model(tmp_path, net=None):
    path = tmp_path / "tissue.pt"
    torch.save((net or _network()).state_dict(), path)
    (tmp_path / "tissue.json").write_text(json.dumps(CONFIG))
    return path


class Linear(torch.nn.Module):
    """y_t = Σ A_t ⊙ x: every input gradient is A_t, whatever the noise."""

    def __init__(self):
        super().__init__()
        self.A = torch.nn.Parameter(torch.randn(3, 8, 8, 8, generator=torch.Generator().manual_seed(0)))
        self.calls = 0

    def forward(self, x):
        self.calls += x.shape[0]
        return (x[:, 0:1] * self.A.unsqueeze(0)).sum((2, 3, 4))


def test_smoothgrad_thesis_settings_explain_all_targets_from_one_set_of_noisy_forwards():
    from XAIExplainerLib.attribution.smoothgrad import smoothgrad_settings

    net = Linear()
    model = RegressionModel.from_network(net, ModelConfig(kind="regression", target_names=["u", "v", "w"],
                                                          preprocessing=[], axis_order="zyx"))
    data = np.random.default_rng(1).uniform(0.5, 1.5, (8, 8, 8)).astype(np.float32)
    volume = Volume(data, spacing=(1.0, 1.0, 1.0))
    for name, sigma in (("thesis-0.2", 0.2), ("thesis-0.3", 0.3), ("paper", 0.15)):
        net.calls = 0
        settings = smoothgrad_settings(name)
        expl = explain_regression(volume, model, method="smoothgrad", method_params=settings)
        # one forward per noisy copy serves all three targets (+1: the prediction)
        assert net.calls == settings["n_samples"] + 1
        for t, heat in enumerate(expl.heatmaps):
            np.testing.assert_allclose(heat.array, net.A[t].detach().numpy(), rtol=1e-4, atol=1e-5)
        params = expl.provenance["params"]
        assert params["noise_level"] == sigma
        assert params["sigma"] == pytest.approx(sigma * float(data.max() - data.min()), rel=1e-5)
        assert expl.provenance["n_model_evaluations"] == settings["n_samples"]
    assert smoothgrad_settings("thesis-0.3") == {"n_samples": 30, "noise_level": 0.3}


def test_cam_folder_has_the_regression_format_on_the_input_grid(tmp_path):
    volume, model = _volume(), _adapter(_network())
    expl = explain_regression(volume, model, method="layercam", method_params={"layers": "block1 block2 block3"})
    out = save_regression_explanation(expl, tmp_path / "layercam")
    files = sorted(p.name for p in out.iterdir())
    assert files == ["heatmap_csf.nii.gz", "heatmap_grey_matter.nii.gz", "heatmap_white_matter.nii.gz",
                     "layercam_heatmaps.png", "maps.json", "provenance.json"]
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["method"] == "layercam" and provenance["targets"] == TISSUES
    assert set(provenance["predictions"]) == set(TISSUES) and provenance["score"] == "higher"
    assert provenance["params"]["layers"] == ["block1", "block2", "block3"]
    for name in TISSUES:
        heat = read_volume(out / f"heatmap_{name}.nii.gz")
        assert heat.same_grid(volume) and float(heat.array.min()) >= 0 and float(heat.array.max()) <= 1 + 1e-6
    record = json.loads((out / "maps.json").read_text())
    assert record["targets"]["csf"]["blank"] is False and record["layers"] == ["block1", "block2", "block3"]


def test_blank_maps_are_stated_in_the_folder(tmp_path):
    volume, model = _volume(), _adapter(_network(negative_head=True))
    with pytest.warns(UserWarning, match="blank"):
        expl = explain_regression(volume, model, method="gradcampp", method_params={"layers": "block3"})
    assert set(expl.blank) == set(TISSUES)
    out = save_regression_explanation(expl, tmp_path / "blank")
    record = json.loads((out / "maps.json").read_text())
    for name in TISSUES:
        assert record["targets"][name]["blank"] is True
        assert "every channel weight is <= 0" in record["targets"][name]["blank_reason"]
    assert json.loads((out / "provenance.json").read_text())["params"]["blank_targets"].keys() == set(TISSUES)


def test_cam_command_end_to_end_and_result_json(tmp_path, capsys):
    model_path = _saved_model(tmp_path)
    write_volume(_volume(), tmp_path / "patch.nii.gz")
    out = tmp_path / "cam_out"
    code = main(["cam", "--input", str(tmp_path / "patch.nii.gz"), "--model", str(model_path), "--method",
                 "gradcampp", "--layers", "block3", "--targets", "grey_matter", "csf", "--output", str(out),
                 "--device", "cpu", "--result-json", str(tmp_path / "r.json")])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.glob("heatmap_*")) == ["heatmap_csf.nii.gz", "heatmap_grey_matter.nii.gz"]
    assert (out / "gradcampp_heatmaps.png").stat().st_size > 1000
    assert json.loads((tmp_path / "r.json").read_text())["targets"] == ["grey_matter", "csf"]
    code = main(["cam", "--input", str(tmp_path / "patch.nii.gz"), "--model", str(model_path), "--method",
                 "layercam", "--layers", "block2", "block3", "--score", "closeness", "--reference", "0.3",
                 "--targets", "grey_matter", "--tanh-gamma", "2", "--output", str(tmp_path / "lc")])
    assert code == 0
    provenance = json.loads((tmp_path / "lc" / "provenance.json").read_text())
    assert provenance["reference"] == 0.3 and provenance["params"]["tanh_gamma"] == 2.0


def test_explain_regression_command_runs_smoothgrad_with_the_thesis_settings(tmp_path):
    model_path = _saved_model(tmp_path)
    write_volume(_volume(), tmp_path / "patch.nii.gz")
    out = tmp_path / "sg"
    assert main(["explain-regression", "--input", str(tmp_path / "patch.nii.gz"), "--model", str(model_path),
                 "--settings", "thesis-0.3", "--samples", "4", "--output", str(out)]) == 0
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["method"] == "smoothgrad" and provenance["params"]["noise_level"] == 0.3
    assert provenance["n_model_evaluations"] == 4  # --samples overrides the setting's 30
    assert (out / "smoothgrad_heatmaps.png").is_file() and len(list(out.glob("heatmap_*.nii.gz"))) == 3


@pytest.mark.parametrize("args, message", [
    (["cam", "--layers", "block9"], "no layer 'block9'.*Its layers: block1"),
    (["cam", "--method", "gradcampp", "--tanh-gamma", "2"], "--tanh-gamma"),
    (["cam", "--targets", "bone"], "Unknown class 'bone'"),
    (["cam", "--score", "closeness"], "reference"),
    (["explain-regression", "--method", "gradcampp", "--settings", "paper"], "--settings"),
    (["explain-regression", "--samples", "0"], "n_samples"),
    (["explain-regression", "--method", "smoothgrad", "--tanh-gamma", "1"], "does not apply to smoothgrad"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    model_path = _saved_model(tmp_path)
    write_volume(_volume(), tmp_path / "patch.nii.gz")
    out = tmp_path / "never"
    code = main(args[:1] + ["--input", str(tmp_path / "patch.nii.gz"), "--model", str(model_path), "--output",
                            str(out)] + args[1:])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert len(err.strip().splitlines()) == 1
    import re

    assert re.search(message, err), err


def test_torchscript_model_is_refused_by_cam_before_anything_runs(tmp_path, capsys):
    path = tmp_path / "ts.pt"
    torch.jit.script(_network()).save(str(path))
    (tmp_path / "ts.json").write_text(json.dumps(CONFIG))
    write_volume(_volume(), tmp_path / "patch.nii.gz")
    code = main(["cam", "--input", str(tmp_path / "patch.nii.gz"), "--model", str(path), "--output",
                 str(tmp_path / "never")])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "never").exists()
    assert "TorchScript" in err and "SmoothGrad" in err and "Image-Reg-LIME" in err
