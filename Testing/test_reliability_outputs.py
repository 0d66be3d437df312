"""Outputs are checked before anything is computed: never onto an input, never a file replaced by a folder,
never minutes of work lost to an unwritable path. Each case asserts the model was not even loaded."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from XAIExplainerLib.cli import main
from XAIExplainerLib.models import SegmentationModel
from XAIExplainerLib.volume import write_volume

from test_agg2exp_pipeline import phantom, save_tiny_torchscript


@pytest.fixture
def files(tmp_path):
    save_tiny_torchscript(tmp_path)
    write_volume(phantom(), tmp_path / "ct.nii.gz")
    return tmp_path


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail loudly if a command gets as far as loading the model: the refusal must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(SegmentationModel, "load", classmethod(lambda cls, *a, **k: refuse()))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(argv, capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def _segment(files, output, *extra):
    return ["segment", "--input", files / "ct.nii.gz", "--model", files / "tiny.pt", "--output", output,
            "--device", "cpu", *extra]


def _explain(files, output, *extra):
    return ["explain", "--input", files / "ct.nii.gz", "--model", files / "tiny.pt", "--method", "vanilla_gradient",
            "--classes", "bone", "--device", "cpu", "--output", output, *extra]


@pytest.mark.parametrize("overwrite", [False, True])
def test_segment_output_equal_to_input_is_refused_and_the_input_survives(files, capsys, no_model_load, overwrite):
    before = _digest(files / "ct.nii.gz")
    # the same file spelled differently (a '..' detour) is still the input
    same = files / "sub" / ".." / "ct.nii.gz"
    (files / "sub").mkdir()
    code, err = _run(_segment(files, same, *(["--overwrite"] if overwrite else [])), capsys)
    assert code == 2 and "is the input" in err and err.count("\n") == 1
    assert _digest(files / "ct.nii.gz") == before


def test_segment_refuses_an_existing_output_file_unless_overwrite(files, capsys, monkeypatch):
    target = files / "labels.nii.gz"
    target.write_bytes(b"precious")
    with monkeypatch.context() as m:
        m.setattr(SegmentationModel, "load", classmethod(lambda cls, *a, **k: pytest.fail("model loaded")))
        code, err = _run(_segment(files, target), capsys)
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert target.read_bytes() == b"precious"
    code, _ = _run(_segment(files, target, "--overwrite"), capsys)
    assert code == 0 and target.read_bytes() != b"precious"


def test_explain_onto_the_input_file_or_its_folder_is_refused(files, capsys, no_model_load):
    before = _digest(files / "ct.nii.gz")
    for output in (files / "ct.nii.gz", files):  # the input itself; a folder that holds the input
        code, err = _run(_explain(files, output, "--overwrite"), capsys)
        assert code == 2 and ("is the input" in err or "holds the input" in err)
    assert _digest(files / "ct.nii.gz") == before
    assert not list(files.glob(".*old-*")) and not list(files.glob(".*tmp-*"))


def test_an_existing_file_is_never_replaced_by_an_output_folder(files, capsys, no_model_load):
    notes = files / "notes.txt"
    notes.write_text("keep me")
    code, err = _run(_explain(files, notes, "--overwrite"), capsys)
    assert code == 2 and "is an existing file, not a folder" in err
    assert notes.read_text() == "keep me"


def test_output_inside_a_dicom_input_folder_is_refused(files, capsys, no_model_load):
    folder = files / "dicom"
    folder.mkdir()
    code, err = _run(["explain", "--input", folder, "--model", files / "tiny.pt", "--output", folder / "expl"],
                     capsys)
    assert code == 2 and "lies inside the input" in err
    assert list(folder.iterdir()) == []


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder nobody may write to: 0o555 for ordinary users; /proc (read-only even for root) otherwise."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # running as root: permission bits do not stop us
        return Path("/proc")
    return folder


@pytest.mark.parametrize("case", ["png", "readonly", "under_a_file"])
def test_unwritable_outputs_are_refused_before_the_model_loads(files, capsys, no_model_load, case):
    (files / "a_file").write_text("x")
    output = {"png": files / "seg.png", "readonly": _unwritable_folder(files) / "new" / "labels.nii.gz",
              "under_a_file": files / "a_file" / "labels.nii.gz"}[case]
    code, err = _run(_segment(files, output), capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert {"png": "unknown format '.png'", "readonly": "not writable",
            "under_a_file": "is a file, not a folder"}[case] in err
    assert not output.exists()
    (files / "readonly").chmod(0o755)


def test_unwritable_explain_and_cohort_outputs_are_refused_up_front(files, capsys, no_model_load):
    ro = _unwritable_folder(files)
    code, err = _run(_explain(files, ro / "expl"), capsys)
    assert code == 2 and "not writable" in err
    code, err = _run(["cohort-explain", "--inputs", files / "ct.nii.gz", "--model", files / "tiny.pt",
                      "--method", "vanilla_gradient", "--device", "cpu", "--output", ro / "cohort"], capsys)
    assert code == 2 and "not writable" in err
    (files / "readonly").chmod(0o755)


def test_explain_with_a_missing_parent_creates_it(files, capsys):
    """A parent that does not exist but can be created is created (as before), never half-way on failure."""
    out = files / "new" / "deeper" / "expl"
    code, _ = _run(_explain(files, out), capsys)
    assert code == 0 and (out / "matrix.json").is_file() and (out / "labels.nii.gz").is_file()


def test_a_cohort_folder_may_hold_its_inputs_but_never_write_over_them(files, capsys):
    """A cohort folder is only added to, so `--output data/` around `data/*.nii.gz` is fine; `data/scans/x` is not."""
    scans = files / "scans"
    scans.mkdir()
    write_volume(phantom(), scans / "a.nii.gz")
    args = ["cohort-explain", "--model", files / "tiny.pt", "--method", "vanilla_gradient", "--classes", "bone",
            "--min-scans", "1", "--device", "cpu", "--output", files]
    code, err = _run([*args[:1], "--inputs", scans / "a.nii.gz", *args[1:]], capsys)
    assert code == 2 and "lies inside the input" not in err and "is a folder that holds the input" in err
    code, err = _run([*args[:1], "--inputs", files / "ct.nii.gz", *args[1:]], capsys)
    assert code == 0, err
    assert (files / "cohort" / "global_matrix.json").is_file() and (files / "ct.nii.gz").is_file()
