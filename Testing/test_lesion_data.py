"""Synthetic lesions in real brains (datasets/lesions.py): the invariants the localisation experiment relies on."""
from __future__ import annotations

import numpy as np
import pytest

from XAIExplainerLib.datasets import lesions
from XAIExplainerLib.datasets.samples import available_datasets

pytestmark = pytest.mark.skipif(not all(available_datasets()[n] for n in ("colin27_t1", "mni152_t1", "kmeans_t1")),
                                reason="sample data packages not installed (see DATA.md)")


@pytest.fixture(scope="module")
def patches() -> lesions.PatchSet:
    return lesions.make_patches(lesions.SUBJECTS, 12, size=32, seed=3)


def test_subjects_share_grid_conventions_and_intensity_scale():
    for name in lesions.SUBJECTS:
        s = lesions.load_subject(name)
        assert s.t1.spacing == (2.0, 2.0, 2.0) and s.t1.direction == pytest.approx(lesions.RAS_DIRECTION)
        assert np.median(s.t1.array[s.tissue > 0]) == pytest.approx(1.0, rel=1e-3)
        assert not (s.tissue & (1 - s.brain)).any()  # tissue lies inside the brain
        assert 0.05 < s.brain.mean() < 0.5


def test_half_the_patches_have_one_lesion_inside_tissue(patches):
    assert len(patches) == 12 and patches.labels.sum() == 6
    assert set(patches.subjects) == set(lesions.SUBJECTS)
    spec = lesions.LesionSpec()
    for i in range(len(patches)):
        subject = lesions.load_subject(patches.subjects[i])
        z, y, x = patches.corners[i]
        box = (slice(z, z + 32), slice(y, y + 32), slice(x, x + 32))
        original = subject.t1.array[box]
        changed = patches.images[i, 0] != original
        mask = patches.lesion_masks[i] > 0
        if patches.labels[i] == 0:
            assert not mask.any() and not changed.any()  # healthy patches are the subject's voxels, untouched
        else:
            assert np.array_equal(changed, mask)  # the ground truth is exactly the changed voxels
            assert not (mask & (subject.tissue[box] == 0)).any()  # lesion only in tissue
            assert spec.min_voxels <= mask.sum() <= spec.max_voxels
            assert mask.sum() == patches.lesion_parameters[i]["voxels"]
        assert np.array_equal(patches.brain_masks[i], subject.brain[box])


def test_deterministic_for_a_seed(patches):
    again = lesions.make_patches(lesions.SUBJECTS, 12, size=32, seed=3)
    assert np.array_equal(again.images, patches.images) and np.array_equal(again.lesion_masks, patches.lesion_masks)
    other = lesions.make_patches(lesions.SUBJECTS, 12, size=32, seed=4)
    assert not np.array_equal(other.images, patches.images)


def test_lesion_sizes_and_contrasts_stay_in_their_ranges():
    rng = np.random.default_rng(0)
    tissue = np.ones((24, 24, 24), np.uint8)
    image = np.ones((24, 24, 24), np.float32)
    spec = lesions.LesionSpec(semi_axis_mm=(3.0, 5.0), contrast=(0.4, 0.5), texture=(0.0, 0.2), min_voxels=1,
                              max_voxels=10000)
    for _ in range(5):
        out, mask, info = lesions.add_lesion(image, tissue, 1.0, rng, spec)
        # an ellipsoid with semi-axes in [3, 5] mm holds between 4/3·π·3³ and 4/3·π·5³ voxels of 1 mm (± rim)
        assert 0.7 * 4 / 3 * np.pi * 27 <= mask.sum() <= 1.3 * 4 / 3 * np.pi * 125
        change = np.abs(out[mask > 0] - 1.0)
        assert change.min() >= 0.4 / 2 * (1 - 0.2) - 1e-6 and change.max() <= 0.5 * 1.2 + 1e-6
        assert all(3.0 <= a <= 5.0 for a in info["semi_axes_mm"])
    assert image.max() == 1.0  # the input is not modified


def test_patch_volume_geometry_points_at_the_subject(patches):
    subject = lesions.load_subject(patches.subjects[0])
    volume = patches.volume(0)
    z, y, x = patches.corners[0]
    assert np.allclose(volume.ijk_to_lps() @ [1, 2, 3, 1], subject.t1.ijk_to_lps() @ [x + 1, y + 2, z + 3, 1])
    assert np.array_equal(patches.volume(0, "brain").array, patches.brain_masks[0])


def test_random_holes_cover_at_most_the_set_fraction_and_are_reproducible():
    fractions = []
    for seed in range(20):
        holes = lesions.random_holes(32, np.random.default_rng(seed), max_fraction=0.25)
        assert holes.shape == (32, 32, 32) and holes.any()
        assert holes.mean() <= 0.25 + 1e-9  # at most max_fraction·32³/4³ cubes of at most 4³ voxels
        fractions.append(holes.mean())
    assert np.array_equal(lesions.random_holes(32, np.random.default_rng(3)),
                          lesions.random_holes(32, np.random.default_rng(3)))
    assert max(fractions) > 5 * min(fractions)  # from a few single holes to many (single and clustered)
