"""The shipped PhaseNet weights (Resources/PhaseNet): small float16 file, loadable through the regression adapter
the lime command uses, preprocessing identical to training's, evaluation JSON re-measured from THIS file, and
``xai-explainer lime`` end to end on a simulated bead written as NIfTI with its µm spacing."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from XAIExplainerLib.cli.main import main
from XAIExplainerLib.datasets.phasenet import TARGET_NAMES, bead_volume, normalize_percentiles
from XAIExplainerLib.models import RegressionModel
from XAIExplainerLib.models.phasenet_net import PhaseNet3D
from XAIExplainerLib.provenance import sha256_file
from XAIExplainerLib.volume import read_volume, write_volume

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "XAIExplainerLib" / "Resources" / "PhaseNet"
WEIGHTS = FOLDER / "phasenet_beads.pt"
EVALUATION = json.loads((FOLDER / "evaluation.json").read_text())


def _train_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_phasenet", ROOT / "tools" / "train_phasenet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model() -> RegressionModel:
    return RegressionModel.load(WEIGHTS, device="cpu", precision="float32")


def test_shipped_weights_are_small_float16_and_build_phasenets_convnet(model):
    assert WEIGHTS.stat().st_size <= 3 * 2 ** 20
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert {v.dtype for v in state.values()} == {torch.float16}
    assert isinstance(model.network, PhaseNet3D) and model.target_names == TARGET_NAMES
    convs = [m for m in model.network.features if isinstance(m, torch.nn.Conv3d)]
    assert len(convs) == 10 and all(c.kernel_size == (3, 3, 3) for c in convs)
    assert [c.out_channels for c in convs[::2]] == model.config.network_kwargs["widths"]
    assert model.network(torch.zeros(2, 1, 32, 32, 32)).shape == (2, 11)


def test_adapter_preprocessing_is_the_training_normalisation(model):
    volume, _ = bead_volume(seed=5)
    x = torch.from_numpy(normalize_percentiles(volume.array[None])[:, None])
    with torch.no_grad():
        direct = model.network(x)[0].double().numpy()
    predicted = np.array(list(model.predict(volume).values()))
    np.testing.assert_allclose(predicted, direct, rtol=1e-4, atol=1e-6)


def test_evaluation_json_was_measured_on_this_file(model):
    """Same sha256, and the first 50 held-out beads (regenerated from the recorded seed) give the recorded
    numbers; float16 rounding changed the 500-sample mean R² by less than 0.005."""
    train = _train_module()
    assert EVALUATION["weights_sha256"] == sha256_file(WEIGHTS)
    held = EVALUATION["held_out"]
    x, y = train.simulated_set(held["seed"], 50)
    measured = train.metrics(y, train.predict(model.network, x))
    recorded = EVALUATION["float16_weights_first_50"]
    for name in TARGET_NAMES:
        assert measured["per_mode"][name]["r2"] == pytest.approx(recorded["per_mode"][name]["r2"], abs=2e-3)
        assert measured["per_mode"][name]["rmse_um"] == pytest.approx(recorded["per_mode"][name]["rmse_um"],
                                                                      abs=2e-4)
    full = EVALUATION["float16_weights"]
    assert held["n_samples"] == 500 and abs(measured["mean_r2"] - full["mean_r2"]) < 0.15
    assert abs(EVALUATION["float32_weights_before_rounding"]["mean_r2"] - full["mean_r2"]) < 0.005


def test_lime_command_on_a_simulated_bead_end_to_end(tmp_path, capsys):
    bead, _ = bead_volume([0.093] + [0.0] * 10, seed=0, snr=3.0, jitter=False)
    path = write_volume(bead, tmp_path / "bead.nii.gz")
    out = tmp_path / "why_not"
    assert main(["lime", "--input", str(path), "--model", str(WEIGHTS), "--targets", "oblique_astigmatism",
                 "--score", "closeness", "--reference", "0.093", "--samples", "24", "--output", str(out)]) == 0
    heat = read_volume(out / "heatmap_oblique_astigmatism.nii.gz")
    np.testing.assert_allclose(heat.spacing, (0.086, 0.086, 0.1), rtol=1e-6)
    assert heat.shape == (32, 32, 32) and np.abs(heat.array).max() > 0
    record = json.loads((out / "surrogate.json").read_text())
    assert record["reference"] == 0.093 and record["reads"] == "positive = supports not-a*"
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["n_model_evaluations"] == 24
    assert "oblique_astigmatism: prediction" in capsys.readouterr().out
    everything = tmp_path / "all"
    assert main(["lime", "--input", str(path), "--model", str(WEIGHTS), "--supervoxels", "cubes",
                 "--n-segments", "64", "--samples", "16", "--output", str(everything)]) == 0
    assert sorted(p.name for p in everything.glob("heatmap_*.nii.gz")) == sorted(
        f"heatmap_{n}.nii.gz" for n in TARGET_NAMES)


def test_paper_demo_writes_both_explanations_and_an_honest_summary(tmp_path):
    from XAIExplainerLib.extras.phasenet_demo import GROUND_TRUTH, main as demo_main

    out = tmp_path / "demo"
    assert demo_main(["--output", str(out), "--samples", "30"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bead"]["ground_truth_um"]["oblique_astigmatism"] == GROUND_TRUTH == 0.093
    segments = read_volume(out / "all_modes" / "supervoxels.nii.gz").array
    assert summary["supervoxels_obtained"] == int(segments.max()) + 1
    assert len(summary["all_modes"]["surrogate_r2"]) == 11
    why = summary["why_not_ground_truth"]
    assert why["reference_um"] == 0.093 and why["prediction_um"] == pytest.approx(
        summary["predictions_um"]["oblique_astigmatism"])
    assert json.loads((out / "why_not_ground_truth" / "surrogate.json").read_text())["reference"] == 0.093
    deleted = summary["prediction_with_supervoxels_off_um"]
    assert set(deleted) == {"3_brightest_off", "10_brightest_off", "30_brightest_off", "all_but_10_brightest_off"}
    assert all(abs(v - why["prediction_um"]) > 1e-4 for v in deleted.values())  # the masks really changed inputs
    assert (out / "phasenet_lime.png").stat().st_size > 10_000 and (out / "bead.nii.gz").is_file()


def test_demo_refuses_an_existing_output_and_leaves_it_untouched(tmp_path):
    from XAIExplainerLib.errors import OutputExistsError
    from XAIExplainerLib.extras.phasenet_demo import run_demo

    out = tmp_path / "demo"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        run_demo(out, weights=tmp_path / "never_loaded.pt", n_samples=4)  # refused before the weights are read
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
