"""RoI graph simplification/export and cohort aggregation (global matrix, Isolation Forest outliers)."""
import json

import networkx as nx
import numpy as np
import pytest

from XAIExplainerLib.pipelines.roi_importance import RoIImportance
from XAIExplainerLib.cohort.aggregate import RoIOutlierDetector, global_importance
from XAIExplainerLib.errors import CohortError
from XAIExplainerLib.pipelines.roi_graph import importance_graph, select_edges, write_graph

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


def test_label_centroids_in_ras_mm():
    from XAIExplainerLib.pipelines.roi_graph import label_centroids_mm
    from XAIExplainerLib.volume import Volume

    arr = np.zeros((4, 5, 6), np.uint8)
    arr[1:3, 2, 4] = 7  # voxels (i=4, j=2, k=1..2): centre k = 1.5
    vol = Volume(arr, spacing=(2.0, 3.0, 4.0), origin=(10.0, 20.0, 30.0))
    c = label_centroids_mm(vol, {7: "seven", 0: "background", 9: "missing"})
    assert c["seven"] == pytest.approx((-(10 + 4 * 2.0), -(20 + 2 * 3.0), 30 + 1.5 * 4.0))  # LPS -> RAS
    assert "background" in c and "missing" not in c


def test_figures_do_not_touch_pyplot_state(tmp_path):
    import matplotlib.pyplot as plt

    from XAIExplainerLib.figures import attribution_slices, draw_graph, matrix_heatmap

    before = plt.get_fignums()
    imp = _imp([[0.1, 0.6, 0.2, 0.1], [0.0, 0.0, 0.0, 0.0]], absent=["kidney"])
    matrix_heatmap(imp.matrix, imp.class_names, imp.roi_names, tmp_path / "m.png")
    draw_graph(importance_graph(imp, threshold=0.8), tmp_path / "g.png")
    rng = np.random.default_rng(0)
    labels = np.zeros((8, 9, 10), int)
    labels[2:5, 3:6, 4:8] = 1
    attribution_slices(rng.normal(size=(8, 9, 10)), rng.normal(size=(8, 9, 10)), labels, 1, tmp_path / "s.png")
    assert plt.get_fignums() == before
    from PIL import Image

    for name in ("m.png", "g.png", "s.png"):
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG" and min(im.size) > 100
            assert len(set(im.convert("L").getdata())) > 10  # something was drawn, not a blank canvas
