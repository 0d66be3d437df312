"""`xai-explainer cohort-explain`: many scans, one model; local, multi-process and Ray backends agree."""
import json

import numpy as np
import pytest

from XAIExplainerLib.cohort.run import explain_cohort, scan_ids
from XAIExplainerLib.errors import CohortError, OutputExistsError
from XAIExplainerLib.volume import write_volume

from test_agg2exp_pipeline import phantom, save_tiny_torchscript


@pytest.fixture(scope="module")
def cohort_files(tmp_path_factory):
    """A TorchScript model and four phantom CTs whose bone block moves: the bone row of the matrix changes."""
    root = tmp_path_factory.mktemp("cohort")
    save_tiny_torchscript(root)
    scans = []
    for shift in range(4):
        vol = phantom()
        hu = vol.array.copy()
        hu[3:7, 4:9, 2:7] = -1000.0
        hu[3:7, 4 + shift:9 + shift, 2 + shift:7 + shift] = 800.0
        write_volume(vol.with_array(hu), root / f"scan{shift}.nii.gz")
        scans.append(root / f"scan{shift}.nii.gz")
    return root, scans


def _matrices(out, ids):
    return [np.array(json.loads((out / "scans" / i / "matrix.json").read_text())["matrix"]) for i in ids]


def test_cohort_in_process_writes_every_scan_and_the_mean_matrix(cohort_files):
    root, scans = cohort_files
    out = root / "local"
    messages = []
    result = explain_cohort(scans, root / "tiny.pt", out, method="vanilla_gradient", classes=["soft", "bone"],
                            device="cpu", min_scans=3, progress=lambda f, m: messages.append((f, m)))
    ids = ["scan0", "scan1", "scan2", "scan3"]
    assert [o.scan_id for o in result["scans"]] == ids and not any(o.error for o in result["scans"])
    glob = json.loads((out / "cohort" / "global_matrix.json").read_text())
    assert np.allclose(glob["matrix"], np.mean(_matrices(out, ids), axis=0), atol=1e-9)
    assert np.allclose(np.sum(glob["matrix"], axis=1), 1.0)
    assert messages[-1] == (1.0, "done") and "scan scan0 done (1/4)" in messages[0][1]
    summary = json.loads((out / "cohort_summary.json").read_text())
    assert summary["backend"] == "local:1" and len(summary["scans"]) == 4
    # rerun into the same folder with other classes: the aggregate was made otherwise, so the run is refused
    with pytest.raises(OutputExistsError, match=r"other settings: classes \(saved \["):
        explain_cohort(scans, root / "tiny.pt", out, method="vanilla_gradient", device="cpu")


def test_two_worker_processes_give_the_same_matrices_and_resume(cohort_files):
    root, scans = cohort_files
    local = root / "local2"
    explain_cohort(scans, root / "tiny.pt", local, method="vanilla_gradient", classes=["soft", "bone"],
                   device="cpu", min_scans=3)
    out = root / "workers"
    # a finished scan folder from an interrupted run is reused, not recomputed
    (out / "scans").mkdir(parents=True)
    import shutil

    shutil.copytree(local / "scans" / "scan0", out / "scans" / "scan0")
    result = explain_cohort(scans, root / "tiny.pt", out, method="vanilla_gradient", classes=["soft", "bone"],
                            device="cpu", workers=2, min_scans=3)
    assert [o.reused for o in result["scans"]] == [True, False, False, False]
    ids = scan_ids(scans)
    for a, b in zip(_matrices(local, ids), _matrices(out, ids)):
        assert np.allclose(a, b, atol=1e-12)


def test_a_bad_scan_is_reported_and_left_out(cohort_files, tmp_path, capsys):
    root, scans = cohort_files
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti file")
    from XAIExplainerLib.cli import main

    rc = main(["cohort-explain", "--inputs", *map(str, scans[:3]), str(broken), "--model", str(root / "tiny.pt"),
               "--method", "vanilla_gradient", "--classes", "bone", "--min-scans", "3", "--device", "cpu",
               "--output", str(tmp_path / "run")])
    printed = capsys.readouterr().out
    assert rc == 1 and "FAILED broken" in printed
    summary = json.loads((tmp_path / "run" / "cohort_summary.json").read_text())
    assert [s["scan_id"] for s in summary["scans"] if s["error"]] == ["broken"]
    assert json.loads((tmp_path / "run" / "cohort" / "global_matrix.json").read_text())["n_scans"] == 3
    assert not (tmp_path / "run" / "scans" / "broken").exists()  # no half-written folder


def test_bad_cohort_arguments_fail_before_any_work(cohort_files, tmp_path):
    root, scans = cohort_files
    with pytest.raises(CohortError, match="do not exist"):
        explain_cohort([tmp_path / "nope.nii.gz"], root / "tiny.pt", tmp_path / "o")
    with pytest.raises(CohortError, match="No input scans"):
        explain_cohort([], root / "tiny.pt", tmp_path / "o")
    with pytest.raises(CohortError, match="workers"):
        explain_cohort(scans, root / "tiny.pt", tmp_path / "o", workers=0)
    assert not (tmp_path / "o").exists()
    assert scan_ids(["a/x.nii.gz", "b/x.nii.gz", "c/y z.nrrd"]) == ["x", "x_2", "y_z"]


def test_ray_backend_runs_the_same_jobs(cohort_files):
    pytest.importorskip("ray")
    root, scans = cohort_files
    out = root / "ray"
    result = explain_cohort(scans[:3], root / "tiny.pt", out, method="vanilla_gradient", classes=["soft", "bone"],
                            device="cpu", ray_address="local", min_scans=3)
    assert not any(o.error for o in result["scans"])
    summary = json.loads((out / "cohort_summary.json").read_text())
    assert summary["backend"] == "ray:local"
    reference = root / "local"  # written by the in-process test above, or computed now
    if not (reference / "cohort").exists():
        explain_cohort(scans, root / "tiny.pt", reference, method="vanilla_gradient", classes=["soft", "bone"],
                       device="cpu", min_scans=3)
    ids = scan_ids(scans[:3])
    for a, b in zip(_matrices(reference, ids), _matrices(out, ids)):
        assert np.allclose(a, b, atol=1e-12)
