"""Agg2Exp RoI importance: hand-computed matrices, invariants, absent classes, bad input."""
import numpy as np
import pytest

from XAIExplainerLib.pipelines.roi_importance import RoIImportance, context_ratios, roi_importance
from XAIExplainerLib.errors import GeometryMismatchError, InvalidVolumeError, UnknownClassError

LABELS = np.array([[[0, 1, 1], [2, 2, 0]]])  # (1, 2, 3)
A0 = np.array([[[1.0, -2.0, 3.0], [0.5, -0.5, 1.0]]])


def _attr():
    return np.stack([A0, np.zeros_like(A0)])  # class "b" has no attribution mass


def test_hand_computed_absolute_positive_negative_mean():
    imp = roi_importance(_attr(), LABELS, ["a", "b"], roi_names={0: "bg", 1: "one", 2: "two"})
    assert imp.roi_names == ["bg", "one", "two"]
    np.testing.assert_allclose(imp.matrix[0], [2 / 8, 5 / 8, 1 / 8])
    np.testing.assert_allclose(imp.mass, [8.0, 0.0])
    np.testing.assert_array_equal(imp.roi_voxels, [2, 2, 2])
    pos = roi_importance(_attr(), LABELS, ["a", "b"], variant="positive")
    np.testing.assert_allclose(pos.matrix[0], [2 / 5.5, 3 / 5.5, 0.5 / 5.5])
    neg = roi_importance(_attr(), LABELS, ["a", "b"], variant="negative")
    np.testing.assert_allclose(neg.matrix[0], [0.0, 0.8, 0.2])
    mean = roi_importance(_attr(), LABELS, ["a", "b"], variant="mean")
    np.testing.assert_allclose(mean.matrix[0], [1.0, 0.5, 0.0])


def test_zero_mass_and_absent_rows_are_zero_not_nan():
    imp = roi_importance(_attr(), LABELS, ["a", "b"])
    assert imp.zero_mass == ["b"] and imp.absent == []
    np.testing.assert_array_equal(imp.matrix[1], 0.0)
    assert imp.present.tolist() == [True, False]
    absent = roi_importance(_attr(), LABELS, ["a", "b"], absent=["a"])
    assert absent.absent == ["a"]
    np.testing.assert_array_equal(absent.matrix[0], 0.0)
    assert not np.isnan(absent.matrix).any()


@pytest.mark.parametrize("variant", ["absolute", "positive", "negative"])
def test_rows_sum_to_one_on_random_maps(variant):
    rng = np.random.default_rng(3)
    attr = rng.normal(size=(4, 6, 7, 8))
    labels = rng.integers(1, 5, size=(6, 7, 8))  # no 0 label: the unlabelled column still exists (empty)
    imp = roi_importance(attr, labels, list("abcd"), variant=variant, roi_ids=[7])
    assert imp.roi_ids == [0, 1, 2, 3, 4, 7]
    np.testing.assert_allclose(imp.matrix.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(imp.matrix[:, [0, 5]], 0.0)


def test_context_ratio_is_mass_in_own_segment():
    imp = roi_importance(_attr(), LABELS, ["one", "two"], roi_names={0: "bg", 1: "one", 2: "two"})
    ratios = context_ratios(imp)
    assert ratios == {"one": pytest.approx(5 / 8), "two": 0.0}


def test_roundtrip_dict():
    imp = roi_importance(_attr(), LABELS, ["a", "b"], absent=["b"])
    back = RoIImportance.from_dict(imp.to_dict())
    np.testing.assert_array_equal(back.matrix, imp.matrix)
    assert back.absent == ["b"] and back.roi_names == imp.roi_names


def test_bad_inputs():
    with pytest.raises(GeometryMismatchError, match="Resample the RoI map"):
        roi_importance(_attr(), np.zeros((1, 3, 2), int), ["a", "b"])
    with pytest.raises(InvalidVolumeError, match="non-integer"):
        roi_importance(_attr(), LABELS + 0.4, ["a", "b"])
    with pytest.raises(UnknownClassError):
        roi_importance(_attr(), LABELS, ["a", "b"], absent=["zzz"])
    with pytest.raises(ValueError, match="variant"):
        roi_importance(_attr(), LABELS, ["a", "b"], variant="median")
    with pytest.raises(UnknownClassError, match="no RoI named"):
        context_ratios(roi_importance(_attr(), LABELS, ["a", "b"]))
