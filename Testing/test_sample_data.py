"""Real sample volumes from the installed data packages: geometry, labels, HU ranges, and the missing-package error.

The numbers asserted here are the published properties of the files (Colin27 / MNI152 / AAL headers, the
InVesalius project's plist), so a loader that swaps axes, drops the direction or misreads the byte order fails.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from XAIExplainerLib.datasets import samples as sample_data
from XAIExplainerLib.errors import MissingDataPackageError
from XAIExplainerLib.volume import require_same_grid

_AVAILABLE = sample_data.available_datasets()


def needs(name: str):
    """Data tests run wherever `make test` installed the packages; elsewhere they say which loader lacks data."""
    return pytest.mark.skipif(not _AVAILABLE.get(name, False), reason=f"sample data for {name}() is not installed")


def centroid_lps(volume, mask: np.ndarray) -> np.ndarray:
    """Physical LPS centre of the voxels in ``mask`` (z, y, x array order)."""
    ijk = np.argwhere(mask).mean(axis=0)[::-1]
    m = volume.ijk_to_lps()
    return m[:3, :3] @ ijk + m[:3, 3]


@needs("colin27_t1")
def test_colin27_geometry_is_the_mni_1mm_grid():
    t1 = sample_data.colin27_t1()
    assert t1.shape == (181, 217, 181)
    assert t1.spacing == pytest.approx((1.0, 1.0, 1.0))
    # ch2 is stored in MNI space with RAS axes: voxel (0,0,0) sits at RAS (-90, -125, -71), which SimpleITK
    # reports in LPS as origin (90, 125, -71) with the x and y axes flipped.
    assert t1.origin == pytest.approx((90.0, 125.0, -71.0))
    assert np.allclose(np.asarray(t1.direction).reshape(3, 3), np.diag([-1.0, -1.0, 1.0]))
    assert t1.array.dtype == np.uint8 and int(t1.array.max()) > 200
    assert t1.metadata["package"] == "mricron-data" and t1.metadata["modality"] == "MRI"
    brain = sample_data.colin27_t1_brain()
    require_same_grid(brain, t1, "ch2bet")
    # Skull stripping removes voxels: the brain image is zero where the head is not brain.
    assert np.count_nonzero(brain.array) < 0.8 * np.count_nonzero(t1.array)


@needs("aal_atlas")
def test_aal_atlas_labels_names_and_grid():
    atlas, names = sample_data.aal_atlas()
    assert len(names) == 116
    assert names[1] == "Precentral_L" and names[2] == "Precentral_R" and names[116] == "Vermis_10"
    assert sorted(names) == list(range(1, 117))
    assert np.array_equal(np.unique(atlas.array), np.arange(117))
    require_same_grid(atlas, sample_data.colin27_t1(), "AAL atlas")
    # Names must match the anatomy they label: '_L' regions lie in the left hemisphere (LPS x > 0).
    for label in (1, 2, 37, 38):  # precentral and hippocampus, left and right
        x = centroid_lps(atlas, atlas.array == label)[0]
        assert (x > 10) if names[label].endswith("_L") else (x < -10), (names[label], x)


@needs("head_ct")
def test_head_ct_geometry_and_hounsfield_range():
    ct = sample_data.head_ct()
    assert ct.shape == (108, 256, 256)
    assert ct.spacing == pytest.approx((0.957, 0.957, 1.5), abs=1e-3)
    assert ct.array.dtype == np.int16
    lo, hi = int(ct.array.min()), int(ct.array.max())
    assert -1030 <= lo <= -1000, "air outside the head should read about -1024 HU"
    assert hi > 1000, "cortical bone and teeth exceed 1000 HU"
    # Most of the field of view is air; the head's soft tissue sits near water.
    assert np.mean(ct.array < -900) > 0.4
    soft = ct.array[(ct.array > -200) & (ct.array < 200)]
    assert -50 < float(np.median(soft)) < 80
    # Centred on the physical origin (InVesalius stores no origin).
    centre = ct.ijk_to_lps() @ np.r_[(np.array(ct.size_xyz) - 1) / 2.0, 1.0]
    assert np.allclose(centre[:3], 0.0, atol=1e-3)


@needs("head_ct")
def test_head_ct_orientation_teeth_are_anterior_inferior():
    ct = sample_data.head_ct()
    head = centroid_lps(ct, ct.array > -300)
    enamel = centroid_lps(ct, ct.array > 2000)  # tooth enamel is the densest tissue in a head CT
    assert enamel[1] < head[1] - 30, "teeth must be anterior (smaller LPS y) to the head's centre"
    assert enamel[2] < head[2] - 30, "teeth must be inferior (smaller LPS z) to the head's centre"


@needs("mni152_t1")
def test_mni152_t1_and_tissue_maps_geometry():
    t1 = sample_data.mni152_t1()
    assert t1.shape == (189, 233, 197)
    assert t1.spacing == pytest.approx((1.0, 1.0, 1.0))
    assert t1.metadata["package"] == "nilearn"
    gm, wm = sample_data.mni152_tissue_maps()
    require_same_grid(gm, t1, "grey-matter map")
    require_same_grid(wm, t1, "white-matter map")
    # Probability maps: white matter is brighter in a T1 than grey matter.
    gm_mask, wm_mask = gm.array > 200, wm.array > 200
    assert gm_mask.any() and wm_mask.any() and not np.any(gm_mask & wm_mask)
    assert t1.array[wm_mask].mean() > t1.array[gm_mask].mean() + 10


@needs("kmeans_t1")
def test_kmeans_t1_geometry_and_classes():
    t1, classes = sample_data.kmeans_t1()
    assert t1.shape == (62, 128, 128)
    assert t1.spacing == pytest.approx((2.0, 2.0, 3.0))
    require_same_grid(classes, t1, "k-means classes")
    assert np.array_equal(np.unique(classes.array), np.arange(7))


def _relocated(package: str, folder: Path) -> sample_data.DataPackage:
    """The real package description (name, install command) but looking in ``folder``."""
    return dataclasses.replace(sample_data.DATA_PACKAGES[package], folders=lambda: (folder,))


@pytest.mark.parametrize(
    "package, loader, command",
    [
        ("mricron-data", sample_data.colin27_t1, "apt-get install mricron-data"),
        ("mricron-data", sample_data.aal_atlas, "apt-get install mricron-data"),
        ("invesalius-examples", sample_data.head_ct, "apt-get install invesalius-examples"),
        ("insighttoolkit5-examples", sample_data.kmeans_t1, "apt-get install insighttoolkit5-examples"),
        ("nilearn", sample_data.mni152_t1, "pip install nilearn"),
    ],
)
def test_missing_package_names_package_and_install_command(monkeypatch, tmp_path, package, loader, command):
    absent = tmp_path / "not-installed"
    monkeypatch.setitem(sample_data.DATA_PACKAGES, package, _relocated(package, absent))
    with pytest.raises(MissingDataPackageError) as info:
        loader()
    message = str(info.value)
    assert f"'{package}'" in message and command in message and str(absent) in message
    assert isinstance(info.value, FileNotFoundError)  # callers catching the builtin still see it


def test_incomplete_package_names_the_missing_file(monkeypatch, tmp_path):
    (tmp_path / "ch2.nii.gz").write_bytes(b"")  # the folder exists, but aal.nii.gz does not
    monkeypatch.setitem(sample_data.DATA_PACKAGES, "mricron-data", _relocated("mricron-data", tmp_path))
    with pytest.raises(MissingDataPackageError, match=r"aal\.nii\.gz.*incomplete.*apt-get install mricron-data"):
        sample_data.aal_atlas()


def test_available_datasets_reflects_installed_packages(monkeypatch, tmp_path):
    assert set(_AVAILABLE) == {
        "colin27_t1", "colin27_t1_brain", "colin27_t1_hires", "aal_atlas", "mni152_t1", "mni152_tissue_maps",
        "head_ct", "kmeans_t1",
    }
    for name, ok in _AVAILABLE.items():
        assert ok, f"{name}() has no data here: install the packages `make data` installs"
    monkeypatch.setitem(
        sample_data.DATA_PACKAGES, "invesalius-examples", _relocated("invesalius-examples", tmp_path / "gone")
    )
    now = sample_data.available_datasets()
    assert now["head_ct"] is False
    assert all(ok for name, ok in now.items() if name != "head_ct")
