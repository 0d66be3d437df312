"""The MNI152 tissue data of the regression and image-to-image demos: fractions, the CSF rule, hemisphere split."""
from __future__ import annotations

import numpy as np
import pytest

from XAIExplainerLib.datasets.tissue import hemisphere_patches, mni152_tissues


@pytest.fixture(scope="module")
def maps():
    return mni152_tissues(4.0)


def test_fractions_are_a_partition_inside_the_skull(maps):
    f = maps.fractions()
    assert f.min() >= 0 and f.max() <= 1
    inside = maps.intracranial.array > 0
    total = f.sum(axis=0)
    # GM + WM may exceed 1 by interpolation only; where they do not, CSF completes them to exactly 1
    partition = inside & (f[0] + f[1] <= 1)
    np.testing.assert_allclose(total[partition], 1.0, atol=1e-6)
    assert np.all(f[2][~inside] == 0)
    assert f[2][inside].mean() > 0.05  # ventricles and sulci are CSF


def test_hemisphere_patches_do_not_overlap_and_targets_are_patch_means(maps):
    left, left_y, left_corners = hemisphere_patches(maps, "left", size=8, stride=4)
    right, _, right_corners = hemisphere_patches(maps, "right", size=8, stride=4)
    left_x = {int(x) + k for x in left_corners[:, 2] for k in range(8)}
    right_x = {int(x) + k for x in right_corners[:, 2] for k in range(8)}
    assert not left_x & right_x
    z, y, x = left_corners[0]
    expected = maps.fractions()[:, z:z + 8, y:y + 8, x:x + 8].mean(axis=(1, 2, 3))
    np.testing.assert_allclose(left_y[0], expected, rtol=1e-6)
    np.testing.assert_array_equal(left[0, 0], maps.t1.array[z:z + 8, y:y + 8, x:x + 8])


def test_bad_hemisphere_is_refused(maps):
    with pytest.raises(ValueError, match="hemisphere"):
        hemisphere_patches(maps, "middle")
