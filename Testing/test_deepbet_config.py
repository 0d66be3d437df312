"""A pretrained network nobody here wrote, configured by a JSON file alone, segments as well as its own pipeline.

deepbet (PyPI; TorchScript brain extraction) needs its input resized to 256³, clipped to the 0.5/99.5 %
quantiles, z-scored and mapped by 0.226·x + 0.449 (read from deepbet/bet.py and utils.normalize).
``Testing/deepbet_model.json`` says so as a list of MONAI transforms; `xai-explainer segment` must then reach
deepbet's own accuracy on Colin27 (Dice ≥ 0.9 against mricron's ch2bet; deepbet's own pipeline: 0.93). With the
MRI preset instead of that list the same network scores 0.59: the preprocessing is what this test checks.
Runs where ``deepbet`` and ``mricron-data`` are installed (``make test`` installs both).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from XAIExplainerLib.volume import read_volume

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "deepbet_model.json"
TEMPLATES = Path("/usr/share/mricron/templates")


@pytest.fixture(scope="module")
def deepbet_model(tmp_path_factory) -> Path:
    """deepbet's TorchScript file with the Testing/ JSON beside it (as a user would place it)."""
    utils = pytest.importorskip("deepbet.utils", reason="deepbet is not installed (pip install deepbet)")
    if not (TEMPLATES / "ch2.nii.gz").is_file() or not (TEMPLATES / "ch2bet.nii.gz").is_file():
        pytest.skip("mricron-data (Colin27 ch2/ch2bet templates) is not installed")
    folder = tmp_path_factory.mktemp("deepbet")
    (folder / "deepbet.pt").symlink_to(Path(utils.DATA_PATH) / "models" / "model.pt")
    (folder / "deepbet.json").write_text(CONFIG.read_text())
    return folder / "deepbet.pt"


def test_deepbet_configured_by_json_reaches_dice_0_9_through_the_cli(deepbet_model, tmp_path):
    labels_path, probabilities = tmp_path / "brain.nii.gz", tmp_path / "probs"
    command = [sys.executable, "-m", "XAIExplainerLib.cli", "segment", "--input", str(TEMPLATES / "ch2.nii.gz"),
               "--model", str(deepbet_model), "--output", str(labels_path), "--probabilities", str(probabilities),
               "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    labels = read_volume(labels_path)
    reference = read_volume(TEMPLATES / "ch2bet.nii.gz")
    assert labels.same_grid(reference, tol=1e-4)  # back on the input grid after the 256³ resize
    brain, truth = labels.array > 0, reference.array > 0
    dice = 2 * (brain & truth).sum() / (brain.sum() + truth.sum())
    assert dice >= 0.9, f"Dice {dice:.3f}"
    p_brain = read_volume(probabilities / "probability_brain.nii.gz").array
    p_background = read_volume(probabilities / "probability_background.nii.gz").array
    np.testing.assert_allclose(p_brain + p_background, 1.0, atol=1e-4)
    # declared "probabilities": used as given, not squashed by a second softmax into [0.27, 0.73]
    assert p_brain.max() > 0.99 and p_brain.min() < 0.01


def test_provenance_records_the_configured_transform_list(deepbet_model):
    from XAIExplainerLib.models import SegmentationModel

    model = SegmentationModel.load(deepbet_model, device="cpu")
    described = model.describe()
    assert described["preprocessing"] == json.loads(CONFIG.read_text())["preprocessing"]
    assert described["output"] == "probabilities" and described["format"] == "torchscript"
