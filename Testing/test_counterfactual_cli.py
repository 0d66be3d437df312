"""``xai-explainer counterfactual`` and its pipeline: outputs in the input geometry (the region lands where the toy
classifier looks, through the adapter's axis order), known voxels exact on the input grid, a saved inpainter
loads, and bad input exits 2 with nothing written."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from XAIExplainerLib.cli.main import main
from XAIExplainerLib.errors import GeometryMismatchError, InvalidVolumeError, UnknownClassError
from XAIExplainerLib.models import ClassifierModel, ModelConfig
from XAIExplainerLib.models.network import build_network
from XAIExplainerLib.models.partial_conv import PartialConvUNet3d, save_inpainter
from XAIExplainerLib.pipelines.counterfactual import explain_counterfactual, save_counterfactual
from XAIExplainerLib.volume import Volume, read_volume, write_volume

N = 16
FILES = {"soft_map.nii.gz", "mask.nii.gz", "inpainted.nii.gz", "probabilities.json", "loss_curve.csv",
         "loss_curve.png", "provenance.json"}


def _volume(array: np.ndarray) -> Volume:
    return Volume(array.astype(np.float32), (1.2, 1.0, 2.0), (10.0, -5.0, 3.0),
                  (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), {})


@pytest.fixture()
def files(tmp_path):
    config = ModelConfig(kind="classifier", label_names=["healthy", "lesion"], architecture="Classifier",
                         preprocessing=[], network_kwargs={"in_shape": [1, N, N, N], "classes": 2,
                                                           "channels": [4, 8], "strides": [2, 2]})
    torch.manual_seed(0)
    torch.save(build_network(config).state_dict(), tmp_path / "clf.pt")
    config.save(tmp_path / "clf.json")
    write_volume(_volume(np.random.RandomState(0).rand(N, N, N) * 100 + 50), tmp_path / "in.nii.gz")
    return tmp_path


class Toy(nn.Module):
    """Lesion logit from the mean of a box in the network's (x, y, z) axes."""

    def __init__(self) -> None:
        super().__init__()
        w = torch.zeros(N, N, N)
        w[2:7, 4:10, 8:14] = 1
        self.register_buffer("w", w / w.sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x[:, 0] * self.w).flatten(1).sum(1)
        return torch.stack([torch.zeros_like(s), 8 * (s - 0.5)], 1)


def test_pipeline_region_in_input_geometry_and_known_voxels_exact(tmp_path):
    region_zyx = np.zeros((N, N, N), bool)
    region_zyx[8:14, 4:10, 2:7] = True  # the toy's (x, y, z) box in volume (z, y, x) order
    image = np.random.RandomState(1).rand(N, N, N) * 0.2 + region_zyx
    volume = _volume(image * 300 + 100)  # model space is the same grid; intensities rescaled below
    config = ModelConfig(kind="classifier", label_names=["healthy", "lesion"], architecture="Classifier",
                         preprocessing=[{"transform": "ScaleIntensityRange", "a_min": 100, "a_max": 400,
                                         "b_min": 0.0, "b_max": 1.0}])
    model = ClassifierModel.from_network(Toy(), config)
    expl = explain_counterfactual(volume, model, target="lesion", inpainter="zero")
    mask = expl.mask.array > 0
    assert 2 * (mask & region_zyx).sum() / (mask.sum() + region_zyx.sum()) >= 0.8
    assert expl.mask.spacing == volume.spacing and expl.soft_map.origin == volume.origin
    assert np.array_equal(expl.inpainted.array[~mask], volume.array[~mask])  # known voxels exact, input units
    np.testing.assert_allclose(expl.inpainted.array[mask], 100.0, atol=1e-3)  # zero fill = 100 in input units
    assert expl.prob_before > 0.9 and expl.prob_after < 0.1
    out = save_counterfactual(expl, tmp_path / "res")
    assert {p.name for p in out.iterdir()} == FILES
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["class"] == "lesion" and prov["params"]["lr"] == 2e-3 and prov["params"]["steps"] == 100
    rows = list(csv.reader((out / "loss_curve.csv").open()))
    assert rows[0] == ["step", "phi", "psi", "tv", "ar", "total"] and len(rows) == 101


def test_cli_end_to_end_with_a_saved_inpainter(files):
    inp = save_inpainter(PartialConvUNet3d(depth=2, base_channels=4), files / "inp.pt")
    code = main(["counterfactual", "--input", str(files / "in.nii.gz"), "--model", str(files / "clf.pt"),
                 "--inpainter", str(inp), "--class", "lesion", "--steps", "12", "--restarts", "2",
                 "--output", str(files / "out"), "--result-json", str(files / "r.json")])
    assert code == 0
    assert {p.name for p in (files / "out").iterdir()} == FILES
    record = json.loads((files / "r.json").read_text())
    assert record["class"] == "lesion" and set(record["files"]) == FILES
    source = read_volume(files / "in.nii.gz")
    for name in ("soft_map.nii.gz", "mask.nii.gz", "inpainted.nii.gz"):
        v = read_volume(files / "out" / name)
        assert v.shape == source.shape and np.allclose(v.spacing, source.spacing)
    mask = read_volume(files / "out" / "mask.nii.gz").array > 0
    assert np.array_equal(read_volume(files / "out" / "inpainted.nii.gz").array[~mask], source.array[~mask])
    prov = json.loads((files / "out" / "provenance.json").read_text())
    assert prov["inpainter"] == str(inp) and prov["params"]["fill"] == "inpainter"


@pytest.mark.parametrize("extra, message", [
    (["--class", "tumour"], "Unknown class 'tumour'"),
    (["--class", "7"], "Unknown class"),
    (["--organ-mask", "WRONG"], "organ mask"),
    (["--organ-mask", "EMPTY"], "empty"),
    (["--steps", "0"], "steps"),
    (["--scores", "probabilities"], "look like logits"),
])
def test_bad_input_exits_2_and_writes_nothing(files, capsys, extra, message):
    write_volume(_volume(np.ones((N, N, N - 2))), files / "WRONG.nii.gz")
    write_volume(_volume(np.zeros((N, N, N))), files / "EMPTY.nii.gz")
    extra = [str(files / f"{e}.nii.gz") if e in ("WRONG", "EMPTY") else e for e in extra]
    before = (files / "in.nii.gz").read_bytes()
    code = main(["counterfactual", "--input", str(files / "in.nii.gz"), "--model", str(files / "clf.pt"),
                 "--inpainter", "zero", *extra, "--output", str(files / "out")])
    err = capsys.readouterr().err
    errors = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("error")]
    assert code == 2 and len(errors) == 1 and message in errors[0]
    assert not (files / "out").exists() and not list(files.glob(".out*"))
    assert (files / "in.nii.gz").read_bytes() == before


def test_pipeline_errors_before_any_forward():
    volume = _volume(np.random.RandomState(0).rand(N, N, N))
    config = ModelConfig(kind="classifier", label_names=["healthy", "lesion"], architecture="Classifier",
                         preprocessing=[])
    model = ClassifierModel.from_network(Toy(), config)
    with pytest.raises(UnknownClassError):
        explain_counterfactual(volume, model, target=3)
    with pytest.raises(GeometryMismatchError):
        explain_counterfactual(volume, model, organ_mask=_volume(np.ones((N, N, 4))))
    with pytest.raises(InvalidVolumeError, match="empty"):
        explain_counterfactual(volume, model, organ_mask=_volume(np.zeros((N, N, N))))


def test_missing_shipped_inpainter_is_named(files, monkeypatch, capsys):
    import XAIExplainerLib.pipelines.counterfactual as pipeline

    monkeypatch.setattr(pipeline, "SHIPPED_INPAINTER", files / "nowhere" / "inpainter.pt")
    code = main(["counterfactual", "--input", str(files / "in.nii.gz"), "--model", str(files / "clf.pt"),
                 "--output", str(files / "out")])
    assert code == 2 and "No shipped inpainter" in capsys.readouterr().err
    assert not (files / "out").exists()
