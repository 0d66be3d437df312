"""A short file is refused with one named line, in every format we read (ITK's NIfTI reader accepts them)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from XAIExplainerLib.cli import main
from XAIExplainerLib.errors import VolumeReadError
from XAIExplainerLib.volume import read_volume

ARRAY = np.random.default_rng(0).normal(size=(20, 30, 40)).astype(np.float32)
VOXEL_BYTES = ARRAY.nbytes

# (file written, compressed, the file that holds the voxels)
CASES = [
    ("s.nii", False, "s.nii"), ("s.nii.gz", True, "s.nii.gz"), ("s.nrrd", False, "s.nrrd"),
    ("s.nrrd", True, "s.nrrd"), ("s.nhdr", False, "s.raw"), ("s.nhdr", True, "s.raw.gz"),
    ("s.mha", False, "s.mha"), ("s.mha", True, "s.mha"), ("s.mhd", False, "s.raw"), ("s.mhd", True, "s.zraw"),
]


def _write(folder: Path, name: str, compressed: bool) -> Path:
    path = folder / name
    sitk.WriteImage(sitk.GetImageFromArray(ARRAY), str(path), useCompression=compressed)
    return path


@pytest.mark.parametrize("name,compressed,data", CASES, ids=[f"{c[0]}-{'gz' if c[1] else 'raw'}" for c in CASES])
def test_complete_files_read_back_exactly(tmp_path, name, compressed, data):
    """The checks never refuse a whole file (the data-size arithmetic matches ITK's writer for every format)."""
    assert np.array_equal(read_volume(_write(tmp_path, name, compressed)).array, ARRAY)


@pytest.mark.parametrize("name,compressed,data", CASES, ids=[f"{c[0]}-{'gz' if c[1] else 'raw'}" for c in CASES])
@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_files_are_refused_naming_the_file(tmp_path, name, compressed, data, keep):
    path = _write(tmp_path, name, compressed)
    holder = tmp_path / data
    content = holder.read_bytes()
    holder.write_bytes(content[: int(len(content) * keep)])
    with pytest.raises(VolumeReadError, match="is truncated") as info:
        read_volume(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    if not compressed:  # raw data: both byte counts are known and named
        header = len(content) - VOXEL_BYTES if data == name else 0
        assert f"promises {VOXEL_BYTES} bytes" in message
        assert f"holds {int(len(content) * keep) - header}." in message


@pytest.mark.parametrize("name,data", [("d.nhdr", "d.raw"), ("d.mhd", "d.raw")])
def test_a_missing_detached_data_file_is_named(tmp_path, name, data):
    path = _write(tmp_path, name, False)
    (tmp_path / data).unlink()
    with pytest.raises(VolumeReadError, match=f"names the data file '{data}', which does not exist"):
        read_volume(path)


def test_the_issue_case_head_c_of_a_nii_gz_fails_segment_with_one_line(tmp_path, capsys):
    """`head -c 30000 ch2.nii.gz > t.nii.gz` segmented with exit 0 before; now exit 2 and nothing written."""
    whole = _write(tmp_path, "whole.nii.gz", True)
    cut = tmp_path / "t.nii.gz"
    cut.write_bytes(whole.read_bytes()[:30000])
    (tmp_path / "m.pt").write_bytes(b"never loaded")
    code = main(["segment", "--input", str(cut), "--model", str(tmp_path / "m.pt"),
                 "--output", str(tmp_path / "labels.nii.gz")])
    err = capsys.readouterr().err
    assert code == 2 and "is truncated" in err and "compressed data ends before its end-of-stream marker" in err
    assert err.count("\n") == 1 and not (tmp_path / "labels.nii.gz").exists()


def test_bytes_after_a_complete_gzip_stream_and_multi_member_files_are_accepted(tmp_path):
    """No false refusals: trailing zeros/garbage after the stream are ignored (as zlib readers do), and a
    two-member gzip file counts both members."""
    whole = _write(tmp_path, "w.nii.gz", True).read_bytes()
    for suffix in (b"\0" * 64, b"garbage after the stream"):
        (tmp_path / "t.nii.gz").write_bytes(whole + suffix)
        assert np.array_equal(read_volume(tmp_path / "t.nii.gz").array, ARRAY)
    import gzip

    raw = gzip.decompress(whole)
    (tmp_path / "two.nii.gz").write_bytes(gzip.compress(raw[:5000]) + gzip.compress(raw[5000:]))
    assert np.array_equal(read_volume(tmp_path / "two.nii.gz").array, ARRAY)


@pytest.mark.parametrize("name", ["nan.nii", "nan.nii.gz"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_stored_in_a_nifti_is_refused_although_the_reader_turns_it_into_zero(tmp_path, capsys, name, dtype):
    array = ARRAY.astype(dtype)
    array[3, 4, 5], array[7, 8, 9], array[0, 0, 0] = np.nan, np.inf, -np.inf
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / name))
    assert np.isfinite(read_volume(tmp_path / name).array).all()  # what SimpleITK hands back: no NaN left
    (tmp_path / "m.pt").write_bytes(b"never loaded")
    code = main(["segment", "--input", str(tmp_path / name), "--model", str(tmp_path / "m.pt"),
                 "--output", str(tmp_path / "labels.nii.gz")])
    err = capsys.readouterr().err
    assert code == 2 and "stores 3 NaN/Inf voxel(s)" in err and err.count("\n") == 1
