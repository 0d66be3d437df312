"""A cohort rerun reuses a scan folder only when it was made from exactly the same request."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from XAIExplainerLib.cli import main
from XAIExplainerLib.cohort.run import explain_cohort
from XAIExplainerLib.errors import OutputExistsError  # ResumeMismatchError is one: old callers keep working
from XAIExplainerLib.volume import write_volume

from test_agg2exp_pipeline import phantom, save_tiny_torchscript


def _scan(shift: int):
    vol = phantom()
    hu = vol.array.copy()
    hu[3:7, 4:9, 2:7] = -1000.0
    hu[3:7, 4 + shift:9 + shift, 2 + shift:7 + shift] = 800.0
    return vol.with_array(hu)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Three phantom scans, a TorchScript model, and one finished cohort run (classes bone+soft, seed 0)."""
    root = tmp_path_factory.mktemp("resume")
    save_tiny_torchscript(root)
    scans = []
    for shift in range(3):
        write_volume(_scan(shift), root / f"scan{shift}.nii.gz")
        scans.append(root / f"scan{shift}.nii.gz")
    explain_cohort(scans, root / "tiny.pt", root / "first", method="smoothgrad", classes=["bone", "soft"],
                   method_params={"n_samples": 2}, device="cpu", min_scans=2, seed=0)
    return root, scans


def _copy_scans(base_root, tmp_path):
    """A run folder holding the first run's scan folders but no aggregate (an interrupted run)."""
    out = tmp_path / "run"
    shutil.copytree(base_root / "first" / "scans", out / "scans")
    return out


def _provenance(out, scan_id="scan0"):
    return json.loads((out / "scans" / scan_id / "provenance.json").read_text())


def _rerun(base_root, scans, out, **changes):
    kwargs = dict(method="smoothgrad", classes=["bone", "soft"], method_params={"n_samples": 2}, device="cpu",
                  min_scans=2, seed=0)
    kwargs.update(changes)
    return explain_cohort(scans, kwargs.pop("model", base_root / "tiny.pt"), out, **kwargs)


def test_the_same_request_reuses_every_scan(base, tmp_path):
    root, scans = base
    out = _copy_scans(root, tmp_path)
    result = _rerun(root, scans, out)
    assert [o.reused for o in result["scans"]] == [True, True, True]


@pytest.mark.parametrize("change,field", [
    ({"classes": ["bone"]}, "classes"),
    ({"seed": 7}, "seed"),
    ({"method_params": {"n_samples": 3}}, "method_params"),
    ({"variant": "positive"}, "variant"),
])
def test_other_settings_recompute_every_scan(base, tmp_path, change, field):
    root, scans = base
    out = _copy_scans(root, tmp_path)
    result = _rerun(root, scans, out, **change)
    assert [o.reused for o in result["scans"]] == [False, False, False]
    assert all(o.recomputed_because == [field] for o in result["scans"])
    prov = _provenance(out)
    summary = json.loads((out / "cohort_summary.json").read_text())
    assert prov["request"][field] == summary["request"][field]
    if field == "classes":  # the aggregate is over the new classes, not the old folders'
        glob = json.loads((out / "cohort" / "global_matrix.json").read_text())
        assert glob["class_names"] == ["bone"] and prov["classes"] == ["bone"]
    if field == "seed":
        assert prov["seed"] == 7 and summary["seed"] == 7


def test_another_model_or_changed_input_bytes_recompute(base, tmp_path):
    root, scans = base
    out = _copy_scans(root, tmp_path)
    other = tmp_path / "model"
    other.mkdir()
    save_tiny_torchscript(other)
    (other / "tiny.json").write_text((other / "tiny.json").read_text().replace('"modality": "CT"',
                                                                                '"modality": "CT" '))
    result = _rerun(root, scans, out, model=other / "tiny.pt")
    assert all(o.recomputed_because == ["model_config_sha256"] for o in result["scans"])
    # the same file name with other voxels is another scan
    moved = tmp_path / "in"
    moved.mkdir()
    for s in scans:
        shutil.copy(s, moved / s.name)
    write_volume(_scan(1), moved / "scan0.nii.gz")
    out2 = _copy_scans(root, tmp_path / "b")
    result = _rerun(root, sorted(moved.iterdir()), out2)
    assert [o.reused for o in result["scans"]] == [False, True, True]
    assert result["scans"][0].recomputed_because == ["input_sha256"]


def test_an_aggregate_of_other_settings_is_refused_naming_the_fields(base):
    root, scans = base
    before = (root / "first" / "cohort" / "global_matrix.json").read_bytes()
    with pytest.raises(OutputExistsError, match=r"other settings: classes \(saved \[\"bone\", \"soft\"\], "
                                                  r"now \[\"bone\"\]\), seed \(saved 0, now 3\)"):
        _rerun(root, scans, root / "first", classes=["bone"], seed=3)
    assert (root / "first" / "cohort" / "global_matrix.json").read_bytes() == before


def test_a_fixed_failed_scan_is_computed_and_the_aggregate_rebuilt(base, tmp_path, capsys):
    root, scans = base
    broken = tmp_path / "scan9.nii.gz"
    broken.write_bytes(b"not an image")
    args = ["cohort-explain", "--inputs", *map(str, scans), str(broken), "--model", str(root / "tiny.pt"),
            "--method", "smoothgrad", "--samples", "2", "--classes", "bone", "soft", "--min-scans", "2",
            "--device", "cpu", "--output", str(tmp_path / "run")]
    assert main(args) == 1 and "FAILED scan9" in capsys.readouterr().out
    glob = tmp_path / "run" / "cohort" / "global_matrix.json"
    assert json.loads(glob.read_text())["n_scans"] == 3
    write_volume(_scan(2), broken)  # the user fixes the file and reruns the same command
    assert main(args) == 0
    summary = json.loads((tmp_path / "run" / "cohort_summary.json").read_text())
    assert [s["reused"] for s in summary["scans"]] == [True, True, True, False]
    rebuilt = json.loads(glob.read_text())
    assert rebuilt["n_scans"] == 4
    matrices = [json.loads((tmp_path / "run" / "scans" / i / "matrix.json").read_text())["matrix"]
                for i in ("scan0", "scan1", "scan2", "scan9")]
    assert np.allclose(rebuilt["matrix"], np.mean(matrices, axis=0), atol=1e-9)
