"""D, H, A, O of the counterfactual-saliency paper: hand-computed values on tiny masks, SimpleITK agreement."""
from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from XAIExplainerLib.errors import GeometryMismatchError, InvalidVolumeError
from XAIExplainerLib.metrics_localisation import (area_ratio, centre_distance, component_centres,
                                                  hausdorff_distance, is_binary, localisation_scores,
                                                  overlap_coefficient, threshold_map)


def _mask(shape=(6, 6, 6), *voxels):
    m = np.zeros(shape, np.uint8)
    for v in voxels:
        m[v] = 1
    return m


def test_single_voxels_distance_uses_spacing_in_xyz_order():
    a, b = _mask((6, 6, 6), (0, 0, 0)), _mask((6, 6, 6), (3, 0, 0))  # 3 voxels apart along z
    assert centre_distance(a, b, (1.0, 1.0, 2.0)) == pytest.approx(6.0)  # z spacing is the third entry
    assert hausdorff_distance(a, b, (1.0, 1.0, 2.0)) == pytest.approx(6.0)
    assert hausdorff_distance(a, b, (2.0, 2.0, 1.0)) == pytest.approx(3.0)


def test_cube_against_voxel_by_hand():
    cube = np.zeros((6, 6, 6), np.uint8)
    cube[:2, :2, :2] = 1  # centroid (0.5, 0.5, 0.5)
    voxel = _mask((6, 6, 6), (4, 0, 0))
    assert centre_distance(cube, voxel, (1, 1, 1)) == pytest.approx(math.sqrt(0.25 + 0.25 + 12.25))
    # farthest cube voxel from (4,0,0) is (0,1,1): sqrt(16+1+1); the voxel's nearest cube voxel is 3 away
    assert hausdorff_distance(cube, voxel, (1, 1, 1)) == pytest.approx(math.sqrt(18))


def test_centre_distance_is_the_median_over_result_components_to_nearest_truth():
    truth = _mask((12, 12, 12), (0, 0, 0), (0, 0, 10))  # two truth components
    result = _mask((12, 12, 12), (0, 0, 1), (0, 0, 7), (5, 0, 0))  # distances 1, 3, 5 to nearest truth centre
    assert len(component_centres(result, (1, 1, 1))) == 3
    assert centre_distance(result, truth, (1, 1, 1)) == pytest.approx(3.0)


def test_diagonal_neighbours_are_one_component():
    assert len(component_centres(_mask((4, 4, 4), (0, 0, 0), (1, 1, 1)), (1, 1, 1))) == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hausdorff_matches_simpleitk(seed):
    rng = np.random.default_rng(seed)
    a = (rng.uniform(size=(9, 11, 13)) > 0.93).astype(np.uint8)
    b = (rng.uniform(size=(9, 11, 13)) > 0.9).astype(np.uint8)
    spacing = (0.7, 1.3, 2.1)
    images = []
    for m in (a, b):
        image = sitk.GetImageFromArray(m)
        image.SetSpacing(spacing)
        images.append(image)
    f = sitk.HausdorffDistanceImageFilter()
    f.Execute(*images)
    assert hausdorff_distance(a, b, spacing) == pytest.approx(f.GetHausdorffDistance(), rel=1e-6)


def test_area_and_overlap_by_hand():
    organ = np.zeros((4, 4, 4), np.uint8)
    organ[:2] = 1  # 32 voxels
    result = np.zeros_like(organ)
    result[1:3, 0, 0] = 1  # one voxel inside the organ, one outside
    assert area_ratio(result, organ) == pytest.approx(1 / 32)
    x = _mask((4, 4, 4), (0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 0, 3))
    y = _mask((4, 4, 4), (0, 0, 3), (3, 3, 3))
    assert overlap_coefficient(x, y) == pytest.approx(0.5)  # 1 shared / min(4, 2)
    assert math.isnan(overlap_coefficient(x, np.zeros_like(x)))  # undefined for an empty mask
    assert localisation_scores(result, result, (1, 1, 1), organ) == {"D": 0.0, "H": 0.0, "A": 1 / 32}


def test_threshold_map_keeps_the_top_fraction_of_the_organ():
    values = np.arange(1000, dtype=float).reshape(10, 10, 10)
    assert threshold_map(values, 90).sum() == 100
    organ = np.zeros((10, 10, 10), np.uint8)
    organ[5:] = 1
    mask = threshold_map(values, 50, organ)
    assert mask.sum() == 250 and not mask[:5].any()
    assert is_binary(mask.astype(np.uint8)) and not is_binary(values)


def test_bad_input_is_refused():
    with pytest.raises(GeometryMismatchError):
        hausdorff_distance(np.ones((2, 2, 2)), np.ones((2, 2, 3)), (1, 1, 1))
    with pytest.raises(InvalidVolumeError):
        area_ratio(np.ones((2, 2, 2)), np.zeros((2, 2, 2)))
    with pytest.raises(InvalidVolumeError):
        threshold_map(np.full((2, 2, 2), np.nan), 50)
    with pytest.raises(InvalidVolumeError):
        centre_distance(np.ones((2, 2, 2)), np.ones((2, 2, 2)), (1, 0, 1))
    assert math.isnan(hausdorff_distance(np.zeros((2, 2, 2)), np.ones((2, 2, 2)), (1, 1, 1)))
