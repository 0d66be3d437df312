"""Command-line failures are early, named and one line; interruptions clean up; files get the user's umask."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from XAIExplainerLib.cli import main
from XAIExplainerLib.models import ModelConfig, SegmentationModel
from XAIExplainerLib.volume import Volume, read_volume, write_volume

from test_agg2exp_pipeline import phantom, save_tiny_torchscript

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def files(tmp_path):
    save_tiny_torchscript(tmp_path)
    write_volume(phantom(), tmp_path / "ct.nii.gz")
    return tmp_path


def _explain(files, output, *extra):
    return [str(a) for a in ["explain", "--input", files / "ct.nii.gz", "--model", files / "tiny.pt", "--method",
                             "vanilla_gradient", "--classes", "bone", "--device", "cpu", "--output", output, *extra]]


def test_an_unexpected_exception_is_one_line_with_a_hint_and_debug_shows_the_trace(files, capsys, monkeypatch):
    def broken(cls, *args, **kwargs):
        raise RuntimeError("CUDA error: device-side assert triggered\nmore detail")

    monkeypatch.setattr(SegmentationModel, "load", classmethod(broken))
    code = main(_explain(files, files / "out"))
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: unexpected RuntimeError: CUDA error: device-side assert triggered.")
    assert "--debug" in err
    code = main(_explain(files, files / "out", "--debug"))
    err = capsys.readouterr().err
    assert code == 1 and "Traceback (most recent call last)" in err and "in broken" in err


def test_nan_input_is_refused_before_the_model_loads(files, capsys, monkeypatch):
    array = phantom().array.copy()
    array[4, 5, 6] = np.inf
    write_volume(phantom().with_array(array), files / "inf.nrrd")  # NRRD keeps Inf (NIfTI readers zero it)
    monkeypatch.setattr(SegmentationModel, "load", classmethod(lambda cls, *a, **k: pytest.fail("model loaded")))
    code = main(["explain", "--input", str(files / "inf.nrrd"), "--model", str(files / "tiny.pt"),
                 "--output", str(files / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "1 NaN/Inf voxel(s) (first at z,y,x=(4, 5, 6))" in err


class ThreeChannels(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x, x, 2 * x - 1], dim=1)


@pytest.mark.parametrize("n_names", [2, 4])
def test_label_names_must_match_the_output_channels_before_anything_is_written(tmp_path, capsys, n_names):
    torch.jit.script(ThreeChannels()).save(str(tmp_path / "three.ts"))
    ModelConfig(label_names=[f"c{i}" for i in range(n_names)], modality="CT", spacing=(2.0, 2.0, 2.0),
                roi_size=(32, 32, 32)).save(tmp_path / "three.json")
    write_volume(phantom(), tmp_path / "ct.nii.gz")
    code = main(["segment", "--input", str(tmp_path / "ct.nii.gz"), "--model", str(tmp_path / "three.ts"),
                 "--output", str(tmp_path / "labels.nii.gz"), "--probabilities", str(tmp_path / "probs"),
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "returned shape (1, 3," in err and f"names {n_names} labels" in err
    assert not (tmp_path / "labels.nii.gz").exists() and not (tmp_path / "probs").exists()
    code = main(["explain", "--input", str(tmp_path / "ct.nii.gz"), "--model", str(tmp_path / "three.ts"),
                 "--method", "vanilla_gradient", "--device", "cpu", "--output", str(tmp_path / "expl")])
    assert code == 2 and "returned shape (1, 3," in capsys.readouterr().err
    assert not (tmp_path / "expl").exists()


_SIGTERM_WHILE_SAVING = """
import os, signal, sys, time
from XAIExplainerLib import figures
from XAIExplainerLib.cli import main

def terminated_while_saving(*args, **kwargs):  # runs inside the temporary output folder
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)

figures.matrix_heatmap = terminated_while_saving
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_removes_the_temporary_folder_like_ctrl_c(files):
    out = files / "expl"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _SIGTERM_WHILE_SAVING, *_explain(files, out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 143 and "cancelled" in proc.stderr
    assert not out.exists()
    assert [p.name for p in files.iterdir() if p.name.startswith(".")] == []


def _age(path: Path, days: float) -> None:
    old = time.time() - days * 86400
    os.utime(path, (old, old))


def test_stale_temporaries_are_swept_and_never_taken_for_results(files, capsys):
    stale = files / ".expl.tmp-0123abcd"
    (stale / "heatmaps").mkdir(parents=True)
    (stale / "matrix.json").write_text("{}")
    _age(stale, 2)
    stale_file = files / ".tmp_x7f.nii.gz"
    stale_file.write_bytes(b"half")
    _age(stale_file, 3)
    fresh = files / ".other.tmp-89abcdef"  # may belong to a run still going: kept
    fresh.mkdir()
    lookalike = files / "notes.tmp-0123abcd"  # not hidden, not ours: kept
    lookalike.mkdir()
    _age(lookalike, 5)
    assert main(_explain(files, files / "expl")) == 0
    assert not stale.exists() and not stale_file.exists() and fresh.exists() and lookalike.exists()
    code = main(["cohort", "--explanations", str(files / "expl"), str(fresh), "--min-scans", "1",
                 "--output", str(files / "agg")])
    err = capsys.readouterr().err
    assert code == 2 and "unfinished temporary folder" in err and not (files / "agg").exists()


def test_outputs_are_written_with_the_users_umask(files):
    previous = os.umask(0o027)
    try:
        assert main(["segment", "--input", str(files / "ct.nii.gz"), "--model", str(files / "tiny.pt"),
                     "--output", str(files / "labels.nii.gz"), "--device", "cpu"]) == 0
        assert main(_explain(files, files / "expl")) == 0
    finally:
        os.umask(previous)
    assert (files / "labels.nii.gz").stat().st_mode & 0o777 == 0o640
    modes = {p.relative_to(files).as_posix(): p.stat().st_mode & 0o777 for p in (files / "expl").rglob("*")}
    assert modes["expl/labels.nii.gz"] == 0o640 and modes["expl/provenance.json"] == 0o640
    assert {m for p, m in modes.items() if (files / p).is_file()} == {0o640}
    assert {m for p, m in modes.items() if (files / p).is_dir()} == {0o750}


def test_segment_and_explain_write_the_same_label_map(files):
    # an oblique, anisotropic input: its grid differs from the model's, so the label map is resampled
    vol = phantom()
    angle = np.deg2rad(25)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    oblique = Volume(vol.array, spacing=(0.9, 1.7, 2.3), origin=vol.origin, direction=tuple(rot.ravel()))
    write_volume(oblique, files / "oblique.nii.gz")
    assert main(["segment", "--input", str(files / "oblique.nii.gz"), "--model", str(files / "tiny.pt"),
                 "--output", str(files / "seg.nii.gz"), "--probabilities", str(files / "probs"),
                 "--device", "cpu"]) == 0
    assert main(["explain", "--input", str(files / "oblique.nii.gz"), "--model", str(files / "tiny.pt"),
                 "--method", "vanilla_gradient", "--device", "cpu", "--output", str(files / "expl")]) == 0
    segmented = read_volume(files / "seg.nii.gz").array
    explained = read_volume(files / "expl" / "labels.nii.gz").array
    assert len(np.unique(segmented)) >= 3  # background, soft and bone all present: borders exist
    assert np.array_equal(segmented, explained)
    # and the label map is exactly the argmax of the probability maps written next to it
    names = json.loads((files / "tiny.json").read_text())["label_names"]
    probs = np.stack([read_volume(files / "probs" / f"probability_{n}.nii.gz").array for n in names])
    assert np.array_equal(segmented, probs.argmax(0))


def test_the_batch_size_used_is_recorded_and_reproduces_the_run_bit_for_bit(files):
    args = ["explain", "--input", str(files / "ct.nii.gz"), "--model", str(files / "tiny.pt"), "--method",
            "smoothgrad", "--samples", "5", "--classes", "bone", "soft", "--device", "cpu", "--seed", "3"]
    assert main([*args, "--output", str(files / "auto")]) == 0
    recorded = json.loads((files / "auto" / "provenance.json").read_text())["batch_size"]
    assert recorded["requested"] is None and isinstance(recorded["used"], int) and recorded["used"] >= 1
    assert main([*args, "--batch-size", str(recorded["used"]), "--output", str(files / "fixed")]) == 0
    for name in ("attribution_0_bone.nii.gz", "attribution_1_soft.nii.gz"):
        a = read_volume(files / "auto" / "heatmaps" / name).array
        b = read_volume(files / "fixed" / "heatmaps" / name).array
        assert np.array_equal(a, b) and np.abs(a).max() > 0


@pytest.mark.parametrize("option,value", [("--graph-top-k", "0"), ("--graph-threshold", "1.5"),
                                          ("--batch-size", "0"), ("--batch-size", "-2")])
def test_bad_counts_and_shares_are_refused_by_the_parser_before_anything_loads(files, capsys, monkeypatch,
                                                                              option, value):
    monkeypatch.setattr(SegmentationModel, "load", classmethod(lambda cls, *a, **k: pytest.fail("model loaded")))
    with pytest.raises(SystemExit) as info:
        main(_explain(files, files / "out", option, value))
    assert info.value.code == 2 and f"argument {option}" in capsys.readouterr().err
    assert not (files / "out").exists()


def _running(pid: str) -> bool:
    """A process that still exists and is not a zombie (a zombie has exited; only its parent may reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_stops_a_multi_process_cohort_at_once_and_leaves_no_workers(files):
    """Cancel must cancel: queued scans are dropped, running workers stop and clean up, none is orphaned."""
    scans = []
    for i in range(6):
        scans.append(files / f"s{i}.nii.gz")
        scans[-1].write_bytes((files / "ct.nii.gz").read_bytes())
    out = files / "cohort"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "XAIExplainerLib.cli", "cohort-explain", "--inputs",
                             *map(str, scans), "--model", str(files / "tiny.pt"), "--method", "smoothgrad",
                             "--samples", "40", "--workers", "2", "--min-scans", "1", "--device", "cpu",
                             "--output", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 240
    while not (out / "scans").is_dir() or not any(p.name.startswith("s") for p in (out / "scans").iterdir()):
        assert proc.poll() is None and time.time() < deadline, "the cohort ended before a scan was written"
        time.sleep(0.1)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert workers, "expected worker processes"
    sent = time.time()
    proc.send_signal(15)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "cancelled" in err and time.time() - sent < 20
    time.sleep(1)
    assert [pid for pid in workers if _running(pid)] == []
    done = [p.name for p in (out / "scans").iterdir()]
    assert len(done) < 6 and all(not p.startswith(".") for p in done)
    assert not (out / "cohort").exists()


class FourChannels(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x, x, 2 * x - 1, 0 * x], dim=1)


def test_probability_files_stay_in_their_folder_and_never_overwrite_each_other(tmp_path, capsys):
    """Label names come from a model JSON: '../escape' must stay one file inside --probabilities (no folders made
    from names), and two labels that read the same ('a b' and 'a_b') must give two files."""
    torch.jit.script(FourChannels()).save(str(tmp_path / "four.ts"))
    ModelConfig(label_names=["background", "../escape", "a b", "a_b"], modality="CT", spacing=(2.0, 2.0, 2.0),
                roi_size=(32, 32, 32)).save(tmp_path / "four.json")
    write_volume(phantom(), tmp_path / "ct.nii.gz")
    probs = tmp_path / "deep" / "probs"
    assert main(["segment", "--input", str(tmp_path / "ct.nii.gz"), "--model", str(tmp_path / "four.ts"),
                 "--output", str(tmp_path / "labels.nii.gz"), "--probabilities", str(probs), "--device", "cpu"]) == 0
    assert sorted(p.name for p in probs.iterdir()) == ["probability_.._escape.nii.gz", "probability_a_b.nii.gz",
                                                        "probability_a_b_3.nii.gz", "probability_background.nii.gz"]
    a_b, a_b_3 = (read_volume(probs / f).array for f in ("probability_a_b.nii.gz", "probability_a_b_3.nii.gz"))
    assert not np.array_equal(a_b, a_b_3)  # channel 2 (2t-1) and channel 3 (0): different maps, both kept


def test_labels_beyond_256_classes_do_not_wrap_in_segment_or_explain():
    """A 300-class model whose winning class is 299 (and 44 elsewhere): uint8 would wrap 299 to 43."""
    from XAIExplainerLib.explain import explain_volume

    class Split(torch.nn.Module):  # class 299 where the input is bright, class 44 elsewhere
        def forward(self, x):
            out = torch.zeros(x.shape[0], 300, *x.shape[2:], dtype=x.dtype)
            out[:, 299] = 10.0 * (x[:, 0] - 0.5)
            out[:, 44] = -10.0 * (x[:, 0] - 0.5)
            return out

    array = np.zeros((8, 8, 8), np.float32)
    array[:, :, 4:] = 1.0
    volume = Volume(array, spacing=(2.0, 2.0, 2.0))
    config = ModelConfig(label_names=[f"c{i}" for i in range(300)], modality="CT", intensity_range=(0.0, 1.0),
                         spacing=(2.0, 2.0, 2.0), roi_size=None, orientation="LPS", axis_order="zyx")
    model = SegmentationModel.from_network(Split(), config)
    segmented = model.segment(volume, return_probabilities=False)
    explained = explain_volume(volume, model, method="vanilla_gradient", classes=["c299"])
    # the gradient of f_299 lies entirely inside the predicted segment 299 (model space, where the matrix is made)
    assert explained.context_ratio["c299"] == pytest.approx(1.0)
    for labels in (segmented.labels.array, segmented.model_space_labels.array, explained.labels.array):
        assert labels.dtype == np.uint16
        assert set(np.unique(labels)) == {44, 299}
        assert (labels[:, :, 5:] == 299).all() and (labels[:, :, :3] == 44).all()
