"""The synthetic thorax CT: reproducibility, realistic Hounsfield values per structure, anatomy and geometry."""
from __future__ import annotations

import numpy as np
import pytest

from XAIExplainerLib.errors import InvalidVolumeError
from XAIExplainerLib.datasets.phantom import LABEL_NAMES, TISSUE_HU, thorax_phantom

SHAPE = (32, 32, 32)


@pytest.fixture(scope="module")
def phantom():
    return thorax_phantom(SHAPE, spacing=4.0, seed=3)


def mean_hu(ct, labels, names, name):
    mask = labels.array == names.index(name)
    assert mask.any(), f"the phantom lacks '{name}'"
    return float(ct.array[mask].mean())


def centroid_lps(volume, mask):
    ijk = np.argwhere(mask).mean(axis=0)[::-1]
    m = volume.ijk_to_lps()
    return m[:3, :3] @ ijk + m[:3, 3]


def test_same_seed_is_bit_identical_and_other_seed_differs():
    ct_a, lab_a, _ = thorax_phantom(SHAPE, 4.0, seed=7)
    ct_b, lab_b, _ = thorax_phantom(SHAPE, 4.0, seed=7)
    assert np.array_equal(ct_a.array, ct_b.array) and np.array_equal(lab_a.array, lab_b.array)
    ct_c, lab_c, _ = thorax_phantom(SHAPE, 4.0, seed=8)
    # Different noise everywhere, and different anatomy (the seed also jitters organ sizes and positions).
    assert np.mean(ct_a.array != ct_c.array) > 0.5
    assert not np.array_equal(lab_a.array, lab_c.array)
    assert ct_a.metadata["seed"] == 7 and ct_c.metadata["seed"] == 8


@pytest.mark.parametrize(
    "names, low, high",
    [
        (("lung_left", "lung_right"), -900.0, -800.0),
        (("fat",), -130.0, -70.0),
        (("muscle", "soft_tissue", "heart", "aorta", "liver", "spinal_cord", "intervertebral_disc"), 0.0, 100.0),
        (("vertebrae", "ribs", "sternum"), 300.0, 1200.0),
        (("background", "trachea"), -1024.0, -950.0),
    ],
)
def test_mean_hounsfield_value_per_structure(phantom, names, low, high):
    ct, labels, label_names = phantom
    for name in names:
        value = mean_hu(ct, labels, label_names, name)
        assert low <= value <= high, f"{name}: mean {value:.1f} HU outside [{low}, {high}]"


def test_noise_free_phantom_has_the_tabulated_values():
    ct, labels, names = thorax_phantom(SHAPE, 4.0, seed=1, noise_hu=0.0)
    # Background and trachea have no texture: with no noise they are exactly air.
    assert np.all(ct.array[labels.array == 0] == -1000)
    assert np.all(ct.array[labels.array == names.index("trachea")] == -1000)
    for name in ("fat", "muscle", "liver", "lung_left"):
        expected, texture_sd = TISSUE_HU[name]
        assert abs(mean_hu(ct, labels, names, name) - expected) < max(texture_sd, 5.0), name
    # The acquisition noise is added on top: the same seed with noise has a larger spread in the liver.
    noisy, _, _ = thorax_phantom(SHAPE, 4.0, seed=1, noise_hu=30.0)
    liver = labels.array == names.index("liver")
    assert noisy.array[liver].std() > 2 * ct.array[liver].std()


def test_contrast_raises_blood_to_arterial_phase(phantom):
    ct, labels, names = thorax_phantom(SHAPE, 4.0, seed=3, contrast=True)
    assert mean_hu(ct, labels, names, "heart") > 250 and mean_hu(ct, labels, names, "aorta") > 250
    plain_ct, _, _ = phantom
    assert mean_hu(plain_ct, labels, names, "heart") < 100


def test_label_names_match_the_label_values_present(phantom):
    ct, labels, names = phantom
    assert names == LABEL_NAMES and names[0] == "background"
    assert set(names) == set(TISSUE_HU)
    present = set(np.unique(labels.array).tolist())
    assert present == set(range(len(names))), f"missing structures: {set(range(len(names))) - present}"
    assert labels.array.dtype == np.uint8 and ct.array.dtype == np.int16
    assert labels.metadata["modality"] == "labels" and ct.metadata["modality"] == "CT"


def test_anatomy_sits_where_a_thorax_has_it(phantom):
    ct, labels, names = phantom

    def where(name):
        return centroid_lps(labels, labels.array == names.index(name))

    # LPS: +x is the patient's left, +y posterior, +z superior.
    assert where("lung_left")[0] > 10 and where("lung_right")[0] < -10
    assert where("heart")[0] > 0 and where("heart")[1] < 0, "heart: left of the midline and anterior"
    assert where("vertebrae")[1] > where("heart")[1] + 30, "spine posterior to the heart"
    assert where("liver")[0] < 0 and where("liver")[2] < where("lung_right")[2], "liver: right, below the lung"
    assert where("sternum")[1] < 0 and abs(where("sternum")[0]) < 5, "sternum: anterior midline"


@pytest.mark.parametrize("shape, spacing", [((40, 48, 56), (2.0, 2.5, 3.0)), (20, 5.0)])
def test_requested_shape_and_spacing_are_honoured(shape, spacing):
    ct, labels, names = thorax_phantom(shape, spacing, seed=0)
    expected_shape = (shape,) * 3 if isinstance(shape, int) else shape
    expected_spacing = (spacing,) * 3 if isinstance(spacing, float) else spacing
    assert ct.shape == expected_shape and ct.spacing == pytest.approx(expected_spacing)
    assert labels.same_grid(ct)
    # Centred on the physical origin, identity direction.
    centre = ct.ijk_to_lps() @ np.r_[(np.array(ct.size_xyz) - 1) / 2.0, 1.0]
    assert np.allclose(centre[:3], 0.0) and np.allclose(ct.direction, np.eye(3).ravel())
    # The body fits inside the field of view whatever its size: the border is air.
    border = np.concatenate([labels.array[:, 0].ravel(), labels.array[:, -1].ravel(),
                             labels.array[:, :, 0].ravel(), labels.array[:, :, -1].ravel()])
    assert np.all(border == 0)
    assert {"lung_left", "lung_right", "heart"} <= {names[i] for i in np.unique(labels.array)}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"shape": (8, 32, 32)}, "at least 16 voxels"),
        ({"shape": (32, 32)}, "1 or 3 values"),
        ({"spacing": (1.0, -1.0, 1.0)}, "positive and finite"),
        ({"spacing": float("nan")}, "positive and finite"),
        ({"noise_hu": -1.0}, "noise_hu"),
    ],
)
def test_bad_arguments_raise_invalid_volume_error(kwargs, match):
    with pytest.raises(InvalidVolumeError, match=match):
        thorax_phantom(**{"shape": SHAPE, "spacing": 4.0, **kwargs})
