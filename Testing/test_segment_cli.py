"""`xai-explainer segment` end to end: outputs on the input grid, named errors, nothing written on failure."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from XAIExplainerLib.cli import main
from XAIExplainerLib.models import ModelConfig
from XAIExplainerLib.volume import Volume, read_volume, write_volume


class ThresholdNet(torch.nn.Module):
    """Class 1 where the CT is brighter than 0 HU (normalised 0.5), else background."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), 40 * (x - 0.5)], dim=1)


@pytest.fixture
def torchscript_model(tmp_path):
    scripted = torch.jit.script(ThresholdNet())
    scripted.save(str(tmp_path / "threshold.ts"))
    ModelConfig(label_names=["background", "dense"], modality="CT", spacing=(2.0, 2.0, 2.0),
                roi_size=(64, 64, 64)).save(tmp_path / "threshold.json")
    return tmp_path / "threshold.ts"


def test_segment_writes_labels_and_probabilities_on_the_input_grid(tmp_path, torchscript_model, oblique_volume,
                                                                  capsys):
    z, y, x = np.mgrid[0:20, 0:24, 0:30]
    ct = Volume(np.where(x >= 15, 300.0, -300.0).astype(np.float32), spacing=(1.2, 1.0, 2.0),
                origin=oblique_volume.origin, direction=oblique_volume.direction)
    write_volume(ct, tmp_path / "ct.nrrd")
    code = main(["segment", "--input", str(tmp_path / "ct.nrrd"), "--model", str(torchscript_model),
                 "--output", str(tmp_path / "out" / "labels.nii.gz"), "--probabilities", str(tmp_path / "probs"),
                 "--device", "cpu", "--progress-lines"])
    assert code == 0
    progress = [line.split(" ", 2) for line in capsys.readouterr().out.splitlines() if line.startswith("PROGRESS ")]
    fractions = [float(p[1]) for p in progress]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)  # for Slicer's bar
    labels = read_volume(tmp_path / "out" / "labels.nii.gz")
    assert labels.same_grid(ct, tol=1e-4)
    interior = labels.array[2:-2, 2:-2, 2:-2]
    expected = (x >= 15)[2:-2, 2:-2, 2:-2]
    assert (interior == expected).mean() > 0.97  # only voxels next to the edge can differ after resampling
    dense = read_volume(tmp_path / "probs" / "probability_dense.nii.gz")
    assert dense.same_grid(ct, tol=1e-4)
    # softmax of (0, 40 (x - 0.5)) at x = (±300 + 1024) / 2048, the normalised HU.
    expected_bright = 1 / (1 + np.exp(-40 * ((300 + 1024) / 2048 - 0.5)))
    assert dense.array[5, 10, 25] == pytest.approx(expected_bright, abs=1e-4)
    assert dense.array[5, 10, 3] == pytest.approx(1 - expected_bright, abs=1e-4)


@pytest.mark.parametrize("bad", ["4d", "nan", "empty", "unknown"])
def test_bad_inputs_give_one_line_errors_and_no_output(tmp_path, torchscript_model, capsys, bad):
    import SimpleITK as sitk

    # NaN case in NRRD: ITK's NIfTI reader itself replaces NaN by 0 on reading.
    path = tmp_path / {"unknown": "in.xyz", "nan": "in.nrrd"}.get(bad, "in.nii.gz")
    if bad == "4d":
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 4, 4, 4), np.float32), isVector=False), str(path))
    elif bad == "nan":
        array = np.zeros((8, 8, 8), np.float32)
        array[3, 3, 3] = np.nan
        write_volume(Volume(array), path)
    else:
        path.write_bytes(b"" if bad == "empty" else b"abc")
    out = tmp_path / "labels.nii.gz"
    code = main(["segment", "--input", str(path), "--model", str(torchscript_model), "--output", str(out)])
    message = capsys.readouterr().err
    assert code == 2
    assert message.startswith("error: ") and "Traceback" not in message
    assert {"4d": "4D", "nan": "NaN/Inf", "empty": "empty file", "unknown": "unknown format"}[bad] in message
    assert not out.exists()
