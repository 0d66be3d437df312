"""``xai-explainer evaluate-localisation``: hand-checkable D/H/A/O in the CSV; bad input writes nothing."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from XAIExplainerLib.cli.main import main
from XAIExplainerLib.volume import Volume, write_volume


def _write(path, array, spacing=(2.0, 2.0, 2.0)):
    return str(write_volume(Volume(np.asarray(array), spacing), path))


@pytest.fixture()
def case(tmp_path):
    truth = np.zeros((8, 8, 8), np.uint8)
    truth[2:4, 2:4, 2:4] = 1  # centre (2.5, 2.5, 2.5) voxels
    ours = np.zeros_like(truth)
    ours[2:4, 2:4, 5] = 1  # centre (2.5, 2.5, 5): 2.5 voxels = 5 mm along x
    sal = np.arange(512, dtype=np.float32).reshape(8, 8, 8)  # top half by value = z >= 4
    organ = np.zeros_like(truth)
    organ[:, :, :] = 1
    return {"truth": _write(tmp_path / "gt.nii.gz", truth), "ours": _write(tmp_path / "ours.nii.gz", ours),
            "sal": _write(tmp_path / "sal.nii.gz", sal), "organ": _write(tmp_path / "organ.nii.gz", organ),
            "tmp": tmp_path}


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_csv_rows_hold_hand_computed_values(case):
    out = case["tmp"] / "scores.csv"
    code = main(["evaluate-localisation", "--maps", f"ours={case['ours']}", f"sal={case['sal']}",
                 "--ground-truth", case["truth"], "--organ-mask", case["organ"], "--threshold-percentiles", "50",
                 "--output", str(out)])
    assert code == 0
    rows = {r["method"]: r for r in _rows(out)}
    assert rows["ours"]["percentile"] == "50"
    assert float(rows["ours"]["D_mm"]) == pytest.approx(5.0)
    # Hausdorff: ours (x = 5) is 2 voxels from the cube, but the cube's x = 2 face is 3 voxels = 6 mm from ours
    assert float(rows["ours"]["H_mm"]) == pytest.approx(6.0)
    assert float(rows["ours"]["A"]) == pytest.approx(4 / 512)
    assert float(rows["sal"]["A"]) == pytest.approx(0.5)  # the 50th percentile keeps half the organ
    assert float(rows["ours"]["O_sal"]) == pytest.approx(0.0)  # ours lies at z 2..3, sal keeps z 4..7
    assert float(rows["sal"]["O_ours"]) == pytest.approx(0.0)
    assert float(rows["ours"]["O_ours"]) == 1.0


def test_bad_input_writes_nothing(case, tmp_path):
    out = tmp_path / "scores.csv"
    other_grid = _write(tmp_path / "other.nii.gz", np.zeros((8, 8, 9), np.uint8))
    assert main(["evaluate-localisation", "--maps", f"ours={other_grid}", "--ground-truth", case["truth"],
                 "--output", str(out)]) == 2
    assert main(["evaluate-localisation", "--maps", f"ours={case['ours']}", f"ours={case['ours']}",
                 "--ground-truth", case["truth"], "--output", str(out)]) == 2
    assert main(["evaluate-localisation", "--maps", case["ours"], "--ground-truth", case["truth"],
                 "--output", str(out)]) == 2
    empty = _write(tmp_path / "empty.nii.gz", np.zeros((8, 8, 8), np.uint8))
    assert main(["evaluate-localisation", "--maps", f"ours={case['ours']}", "--ground-truth", empty,
                 "--output", str(out)]) == 2
    assert not out.exists() and not list(tmp_path.glob(".scores.csv*"))
    out.write_text("keep")
    assert main(["evaluate-localisation", "--maps", f"ours={case['ours']}", "--ground-truth", case["truth"],
                 "--output", str(out)]) == 2
    assert out.read_text() == "keep"
