"""`xai-explainer explain` and `xai-explainer cohort` end to end on a TorchScript voxel-wise linear model."""
import json

import numpy as np
import pytest

from XAIExplainerLib.cli.explain import read_roi_names
from XAIExplainerLib.errors import VolumeReadError
from XAIExplainerLib.volume import Volume, read_volume, write_volume

from test_agg2exp_pipeline import phantom, save_tiny_torchscript


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    save_tiny_torchscript(root)
    vol = phantom()
    write_volume(vol, root / "ct.nii.gz")
    halves = np.zeros(vol.shape, np.uint8)
    halves[:, :, :10], halves[:, :, 10:] = 1, 2
    write_volume(vol.with_array(halves), root / "halves.nii.gz")
    (root / "halves.txt").write_text("1 left 2001\n2 right 2002\n")
    return root


def _main(argv):
    from XAIExplainerLib.cli import main

    return main([str(a) for a in argv])


def test_explain_cli_writes_folder(files, capsys):
    out = files / "run"
    rc = _main(["explain", "--input", files / "ct.nii.gz", "--model", files / "tiny.pt", "--method", "smoothgrad",
                "--samples", "2", "--classes", "bone", "soft", "--rois", files / "halves.nii.gz",
                "--roi-names", files / "halves.txt", "--device", "cpu", "--output", out, "--progress-lines"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "PROGRESS 1.0000 done" in printed and "matrix.csv" in printed
    matrix = json.loads((out / "matrix.json").read_text())
    assert matrix["roi_names"] == ["unlabelled", "left", "right"] and matrix["class_names"] == ["bone", "soft"]
    assert matrix["matrix"][0][1] > 0.9  # SmoothGrad of the bone block lies in the left half
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["params"]["n_samples"] == 2 and prov["method"] == "smoothgrad"
    assert len(prov["model"]["sha256"]) == 64
    assert read_volume(out / "heatmaps/attribution_0_bone.nii.gz").same_grid(read_volume(files / "ct.nii.gz"))


def test_explain_cli_errors_are_one_line(files, capsys):
    rc = _main(["explain", "--input", files / "ct.nii.gz", "--model", files / "tiny.pt", "--classes", "liver",
                "--output", files / "bad"])
    err = capsys.readouterr().err.strip().split("\r")[-1].splitlines()  # the tqdm bar shares stderr
    assert rc == 2 and err[-1].startswith("error: Unknown class 'liver'") and len(err) == 1
    assert not (files / "bad").exists()
    rc = _main(["explain", "--input", files / "ct.nii.gz", "--model", files / "tiny.pt", "--method",
                "vanilla_gradient", "--samples", "3", "--output", files / "bad"])
    assert rc == 2 and "--samples does not apply" in capsys.readouterr().err


def test_cohort_cli_flags_odd_scan(files, capsys):
    folders = []
    for i, shift in enumerate([2, 3, 4, 5, 3, 4, 2]):  # the bone block straddles the halves by varying amounts
        vol = phantom()
        arr = vol.array.copy()
        arr[3:7, 4:9, 2:7] = -1000.0
        arr[3:7, 4:9, 2 + shift:7 + shift] = 800.0
        write_volume(vol.with_array(arr), files / f"ct{i}.nii.gz")
        folders.append(files / f"e{i}")
        assert _main(["explain", "--input", files / f"ct{i}.nii.gz", "--model", files / "tiny.pt", "--method",
                      "vanilla_gradient", "--classes", "bone", "--rois", files / "halves.nii.gz",
                      "--output", folders[-1]]) == 0
    odd = phantom().array.copy()
    odd[3:7, 4:9, 2:7] = -1000.0
    odd[3:7, 4:9, 12:17] = 800.0  # the bone block moved to the right half
    write_volume(phantom().with_array(odd), files / "odd.nii.gz")
    folders.append(files / "odd")
    assert _main(["explain", "--input", files / "odd.nii.gz", "--model", files / "tiny.pt", "--method",
                  "vanilla_gradient", "--classes", "bone", "--rois", files / "halves.nii.gz", "--output",
                  folders[-1]]) == 0
    capsys.readouterr()
    out2 = files / "cohort2"
    assert _main(["cohort", "--explanations", *folders, "--reference", *folders[:-1], "--output", out2]) == 0
    assert "odd" in capsys.readouterr().out.split("outliers for bone:")[1]
    report = json.loads((out2 / "outliers.json").read_text())
    scores = [row[0] for row in report["scores"]]
    assert "odd" in report["outliers"]["bone"] and scores[-1] == min(scores) and scores[-1] < 0
    glob = json.loads((out2 / "global_matrix.json").read_text())
    assert glob["counts"] == [8] and abs(sum(glob["matrix"][0]) - 1) < 1e-9
    for name in ["global_matrix.csv", "global_matrix.png", "global_graph.graphml", "outliers.csv"]:
        assert (out2 / name).is_file()


def test_read_roi_names_formats(tmp_path):
    (tmp_path / "a.csv").write_text("label,name\n1,liver\n2,spleen\n")
    assert read_roi_names(tmp_path / "a.csv") == {1: "liver", 2: "spleen"}
    (tmp_path / "b.txt").write_text("# comment\n1\tleft hemisphere\n")
    assert read_roi_names(tmp_path / "b.txt") == {1: "left"}
    (tmp_path / "c.txt").write_text("1 a\nfoo bar\n")
    with pytest.raises(VolumeReadError, match="line 2"):
        read_roi_names(tmp_path / "c.txt")
