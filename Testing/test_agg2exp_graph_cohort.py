"""RoI graph simplification/export and cohort aggregation (global matrix, Isolation Forest outliers)."""
import json

import networkx as nx
import numpy as np
import pytest

from XAIExplainerLib.agg2exp import RoIImportance
from XAIExplainerLib.cohort import RoIOutlierDetector, global_importance
from XAIExplainerLib.errors import CohortError
from XAIExplainerLib.graph import importance_graph, select_edges, write_graph

ROW = np.array([0.05, 0.5, 0.3, 0.15, 0.0])


@pytest.mark.parametrize("theta,expected", [(0.5, [1]), (0.8, [1, 2]), (0.81, [1, 2, 3]), (1.0, [1, 2, 3, 0])])
def test_cumulative_threshold_keeps_smallest_prefix(theta, expected):
    assert select_edges(ROW, threshold=theta) == expected


def test_top_k_and_zero_weights():
    assert select_edges(ROW, top_k=2) == [1, 2]
    assert select_edges(ROW, top_k=10) == [1, 2, 3, 0]  # the zero edge is never kept
    assert select_edges(ROW, top_k=1, threshold=0.9) == [1]
    with pytest.raises(ValueError):
        select_edges(ROW, threshold=0.0)


def _imp(matrix, classes=("liver", "kidney"), rois=("background", "liver", "kidney", "spleen"), absent=()):
    m = np.asarray(matrix, float)
    return RoIImportance(m, list(classes), list(range(m.shape[1])), list(rois), "absolute",
                         np.ones(m.shape[0]), np.ones(m.shape[1], dtype=np.int64), absent=list(absent))


def test_graph_edges_counts_and_graphml_roundtrip(tmp_path):
    imp = _imp([[0.1, 0.6, 0.2, 0.1], [0.0, 0.0, 0.0, 0.0]], absent=["kidney"])
    g = importance_graph(imp, top_k=2, centroids_mm={"liver": (1.0, 2.0, 3.0)})
    assert sorted(g.edges) == [("kidney", "liver"), ("liver", "liver")]  # top-2 into liver; none into absent kidney
    assert g.nodes["liver"]["context_ratio"] == pytest.approx(0.6)
    assert g.nodes["kidney"]["absent"] is True
    full = importance_graph(imp)
    assert full.number_of_edges() == 4
    paths = write_graph(g, tmp_path)
    back = nx.read_graphml(paths["graphml"])
    assert back.is_directed()
    assert back.edges["kidney", "liver"]["weight"] == pytest.approx(0.2)
    assert back.edges["liver", "liver"]["weight"] == pytest.approx(0.6)
    assert back.nodes["liver"]["x"] == pytest.approx(1.0)
    data = json.loads(paths["json"].read_text())
    assert {(e["source"], e["target"]) for e in data["edges"]} == set(g.edges)


def test_global_matrix_averages_only_present_scans():
    a = _imp([[0.0, 1.0, 0.0, 0.0], [0.5, 0.0, 0.5, 0.0]])
    b = _imp([[0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]], absent=["kidney"])
    glob = global_importance([a, b])
    np.testing.assert_allclose(glob.matrix[0], [0.0, 0.75, 0.25, 0.0])
    np.testing.assert_allclose(glob.matrix[1], [0.5, 0.0, 0.5, 0.0])  # not halved by the absent scan
    assert glob.counts.tolist() == [2, 1]
    with pytest.raises(CohortError, match="same classes"):
        global_importance([a, _imp([[1, 0, 0, 0]], classes=("liver",))])


def test_isolation_forest_flags_deviating_scan():
    rng = np.random.default_rng(0)

    def scan(liver_row):
        row = np.clip(np.asarray(liver_row) + rng.normal(0, 0.02, 4), 0, None)
        return _imp([row / row.sum(), [0.1, 0.1, 0.7, 0.1]])

    reference = [scan([0.1, 0.7, 0.15, 0.05]) for _ in range(40)]
    det = RoIOutlierDetector(seed=1).fit(reference)
    tested = [scan([0.1, 0.7, 0.15, 0.05]), scan([0.05, 0.05, 0.1, 0.8])]
    report = det.score(tested, ["typical", "odd"])
    assert report.outliers["liver"] == ["odd"]
    assert report.scores[1, 0] < 0 < report.scores[0, 0]
    again = RoIOutlierDetector(seed=1).fit(reference).score(tested, ["typical", "odd"])
    np.testing.assert_array_equal(again.scores, report.scores)  # seeded


def test_outlier_detector_needs_enough_scans():
    det = RoIOutlierDetector(min_scans=5).fit([_imp([[0, 1, 0, 0], [0, 0, 1, 0]])] * 3)
    assert det.unfitted == ["liver", "kidney"]
    report = det.score([_imp([[0, 1, 0, 0], [0, 0, 1, 0]])])
    assert np.isnan(report.scores).all() and not report.is_outlier.any()
    with pytest.raises(CohortError, match="not fitted"):
        RoIOutlierDetector().score([_imp([[0, 1, 0, 0], [0, 0, 1, 0]])])


def test_identical_reference_rows_flag_only_deviations():
    same = [_imp([[0.0, 1.0, 0.0, 0.0], [0.1, 0.1, 0.7, 0.1]]) for _ in range(6)]
    det = RoIOutlierDetector().fit(same)
    report = det.score(same[:2] + [_imp([[0.0, 0.5, 0.5, 0.0], [0.1, 0.1, 0.7, 0.1]])], ["a", "b", "c"])
    assert report.outliers == {"liver": ["c"], "kidney": []}
