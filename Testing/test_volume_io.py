"""Volumes: geometry survives every format, resampling keeps physical space, bad files get named errors."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from XAIExplainerLib.errors import InvalidVolumeError, UnsupportedFormatError, VolumeReadError
from XAIExplainerLib.volume import (
    Volume,
    as_volume,
    ensure_finite,
    read_volume,
    reorient,
    resample_to_reference,
    resample_to_spacing,
    write_volume,
)


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_round_trip_keeps_voxels_and_geometry(tmp_path, oblique_volume, ext):
    path = write_volume(oblique_volume, tmp_path / f"v{ext}")
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, oblique_volume.array)
    assert back.same_grid(oblique_volume, tol=1e-5)
    np.testing.assert_allclose(back.ijk_to_lps(), oblique_volume.ijk_to_lps(), atol=1e-5)


def test_ijk_to_ras_maps_a_voxel_to_simpleitk_physical_point(oblique_volume):
    image = oblique_volume.to_sitk()
    lps = np.array(image.TransformIndexToPhysicalPoint((3, 5, 2)))
    ras = oblique_volume.ijk_to_ras() @ np.array([3, 5, 2, 1.0])
    np.testing.assert_allclose(ras[:3], lps * np.array([-1, -1, 1]), atol=1e-9)


def _write_dicom_series(volume: Volume, folder) -> None:
    """Write one CT series slice by slice, setting the tags that carry geometry (SimpleITK's documented recipe)."""
    image = sitk.Cast(volume.to_sitk(), sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.99"
    for k in range(image.GetDepth()):
        slice_ = image[:, :, k]
        tags = {
            "0008|0060": "CT",
            "0020|000e": series_uid,
            "0020|000d": series_uid + ".1",
            "0008|0018": f"{series_uid}.{k + 2}",
            "0020|0037": "\\".join(f"{v:.6f}" for v in (direction[0], direction[3], direction[6],
                                                          direction[1], direction[4], direction[7])),
            "0020|0032": "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0013": str(k + 1),
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
        }
        for tag, value in tags.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(slice_)


def test_dicom_series_folder_reads_with_geometry(tmp_path):
    angle = np.deg2rad(10)
    rot = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    rng = np.random.default_rng(1)
    volume = Volume(rng.integers(-1000, 1500, size=(6, 16, 12)).astype(np.int16), spacing=(0.7, 0.7, 2.0),
                    origin=(-40.0, 12.0, 100.0), direction=tuple(rot.ravel()))
    _write_dicom_series(volume, tmp_path)
    back = read_volume(tmp_path)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.spacing, volume.spacing, atol=1e-4)
    np.testing.assert_allclose(back.origin, volume.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, volume.direction, atol=1e-5)


def test_resample_to_spacing_keeps_physical_extent_and_linear_ramp(oblique_volume):
    ramp = oblique_volume.with_array(np.broadcast_to(np.arange(11, dtype=np.float32), (7, 9, 11)).copy())
    out = resample_to_spacing(ramp, (0.4, 1.1, 2.5))
    assert out.shape == (7, 9, 22)
    np.testing.assert_allclose(out.origin, ramp.origin)
    np.testing.assert_allclose(out.direction, ramp.direction)
    # A linear ramp sampled at half the spacing stays linear (interior voxels): value = x * 0.4 / 0.8.
    np.testing.assert_allclose(out.array[3, 4, 2:20], np.arange(2, 20) * 0.5, atol=1e-5)


def test_resample_to_reference_is_identity_on_same_grid_and_follows_physical_space(oblique_volume):
    assert resample_to_reference(oblique_volume, oblique_volume) is oblique_volume
    shifted = Volume(oblique_volume.array, oblique_volume.spacing,
                     tuple(np.array(oblique_volume.origin) + np.asarray(oblique_volume.direction).reshape(3, 3)[:, 0]
                           * oblique_volume.spacing[0]), oblique_volume.direction)
    moved = resample_to_reference(shifted, oblique_volume, "nearest")
    # Shifting the origin by one voxel along i moves the content by one voxel along x.
    np.testing.assert_array_equal(moved.array[:, :, 1:], oblique_volume.array[:, :, :-1])


def test_reorient_to_ras_flips_lps_axes_and_keeps_world_positions():
    volume = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), spacing=(1, 2, 3), origin=(5, 6, 7))
    ras = reorient(volume, "RAS")
    np.testing.assert_allclose(np.asarray(ras.direction).reshape(3, 3), np.diag([-1, -1, 1]))
    np.testing.assert_array_equal(ras.array, volume.array[:, ::-1, ::-1])
    # The same voxel value sits at the same physical point.
    p = volume.to_sitk().TransformIndexToPhysicalPoint((0, 0, 0))
    idx = ras.to_sitk().TransformPhysicalPointToIndex(p)
    assert ras.array[idx[2], idx[1], idx[0]] == volume.array[0, 0, 0]


# ---- bad input --------------------------------------------------------------------------------------------------
def test_2d_and_4d_arrays_are_rejected_with_a_clear_message():
    with pytest.raises(InvalidVolumeError, match="3D"):
        as_volume(np.zeros((5, 5)))
    with pytest.raises(InvalidVolumeError, match="3D"):
        Volume(np.zeros((2, 3, 4, 5)))


def test_4d_file_is_rejected(tmp_path):
    image = sitk.GetImageFromArray(np.zeros((2, 3, 4, 5), np.float32), isVector=False)
    sitk.WriteImage(image, str(tmp_path / "series.nii.gz"))
    with pytest.raises(InvalidVolumeError, match="4D"):
        read_volume(tmp_path / "series.nii.gz")


def test_nan_and_inf_voxels_are_reported_with_position():
    array = np.zeros((3, 4, 5), np.float32)
    array[1, 2, 3] = np.nan
    array[2, 0, 0] = np.inf
    with pytest.raises(InvalidVolumeError, match=r"2 NaN/Inf voxel\(s\).*z,y,x=\(1, 2, 3\)"):
        ensure_finite(Volume(array))


def test_empty_unreadable_unknown_and_missing_files(tmp_path):
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(VolumeReadError, match="empty file"):
        read_volume(tmp_path / "empty.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(b"this is not an image" * 10)
    with pytest.raises(VolumeReadError, match="could not be read"):
        read_volume(tmp_path / "junk.nii.gz")
    (tmp_path / "scan.xyz").write_bytes(b"123")
    with pytest.raises(UnsupportedFormatError, match="unknown format '.xyz'"):
        read_volume(tmp_path / "scan.xyz")
    with pytest.raises(VolumeReadError, match="No file or folder"):
        read_volume(tmp_path / "nowhere.nii.gz")
    with pytest.raises(VolumeReadError, match="no DICOM series"):
        read_volume(tmp_path)


def test_failed_write_leaves_no_file_and_keeps_existing_output(tmp_path, oblique_volume, monkeypatch):
    with pytest.raises(UnsupportedFormatError):
        write_volume(oblique_volume, tmp_path / "out.png")
    assert not (tmp_path / "out.png").exists()
    target = write_volume(oblique_volume, tmp_path / "out.nii.gz")
    before = target.read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", broken)
    with pytest.raises(RuntimeError):
        write_volume(oblique_volume.with_array(oblique_volume.array * 2), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]


def test_input_array_is_not_modified_by_resampling_and_writing(tmp_path, oblique_volume):
    original = oblique_volume.array.copy()
    resample_to_spacing(oblique_volume, (2.0, 2.0, 2.0))
    reorient(oblique_volume, "RAS")
    write_volume(oblique_volume, tmp_path / "x.nrrd")
    np.testing.assert_array_equal(oblique_volume.array, original)
