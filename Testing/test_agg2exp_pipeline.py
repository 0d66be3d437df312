"""explain_volume / save_explanation end to end on a tiny voxel-wise linear network wrapped as SegmentationModel."""
import json
import time

import networkx as nx
import numpy as np
import pytest
import torch

from XAIExplainerLib.pipelines import agg2exp as explain_mod
from XAIExplainerLib.attribution import AttributionResult
from XAIExplainerLib.errors import GeometryMismatchError, OutputExistsError, UnknownClassError
from XAIExplainerLib.pipelines.agg2exp import explain_volume, save_explanation
from XAIExplainerLib.models import ModelConfig, SegmentationModel
from XAIExplainerLib.volume import Volume, read_volume

LABELS = ["background", "soft", "bone", "never"]


def tiny_model():
    """Conv 1x1x1: logits_c = w_c·t + b_c of the [0,1]-scaled CT value t. Bands: t<.37 bg, <.6 soft, else bone."""
    net = torch.nn.Conv3d(1, 4, kernel_size=1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([-1.0, 1.0, 2.0, 0.0]).view(4, 1, 1, 1, 1))
        net.bias.copy_(torch.tensor([0.5, 0.0, -0.6, -10.0]))
    config = ModelConfig(label_names=LABELS, modality="CT", spacing=(1.5, 1.5, 1.5), roi_size=(32, 32, 32))
    return SegmentationModel.from_network(net, config, device="cpu")


def save_tiny_torchscript(folder):
    """:func:`tiny_model` saved the way users ship models: a TorchScript file with its JSON beside it."""
    path = folder / "tiny.pt"
    torch.jit.script(tiny_model().network.cpu()).save(str(path))
    (folder / "tiny.json").write_text(json.dumps({
        "label_names": LABELS, "modality": "CT", "spacing": [1.5, 1.5, 1.5], "roi_size": [32, 32, 32]}))
    return path


def phantom():
    """CT in HU, 2 mm voxels, LPS identity direction (so preprocessing reorients and resamples)."""
    z, y, x = np.mgrid[:16, :18, :20]
    hu = np.full((16, 18, 20), -1000.0, np.float32)
    hu[(z - 8) ** 2 + (y - 9) ** 2 + (x - 13) ** 2 < 16] = 100.0  # soft-tissue ball
    hu[3:7, 4:9, 2:7] = 800.0  # bone block, entirely at x < 10
    return Volume(hu, spacing=(2.0, 2.0, 2.0), origin=(-20.0, 10.0, 5.0))


def input_x_gradient(model, x, target, *, device=None, batch_size=None, progress=None, cancel=None, seed=0, **params):
    """Exact contributions of a model that is linear on the fixed masks: x ⊙ ∇f̂ (one backward per class)."""
    start = time.perf_counter()
    xx = x.detach().clone().requires_grad_(True)
    scores = target(model(xx))[0]
    grads = [torch.autograd.grad(s, xx, retain_graph=True)[0][0, 0] for s in scores]
    maps = torch.stack(grads) * x[0, 0]
    if progress:
        progress(1.0, "done")
    return AttributionResult(maps.detach().float().cpu(), list(target.names), "input_x_gradient", dict(params),
                             n_model_evaluations=1, seconds=time.perf_counter() - start, seed=seed)


@pytest.fixture(scope="module")
def explained():
    vol = phantom()
    before = vol.array.copy()
    expl = explain_volume(vol, tiny_model(), method=input_x_gradient, classes=None)
    np.testing.assert_array_equal(vol.array, before)  # the input is never modified
    return vol, expl


def test_matrix_known_answer_and_geometry(explained):
    vol, expl = explained
    assert expl.class_names == LABELS and expl.roi_names == LABELS
    assert expl.absent_classes == ["never"]
    m = expl.matrix
    # each class's exact contributions live inside its own predicted segment: one-hot rows, context ratio 1
    np.testing.assert_allclose(m[:3], np.eye(4)[:3], atol=1e-12)
    np.testing.assert_array_equal(m[3], 0.0)
    assert expl.context_ratio == {"background": 1.0, "soft": 1.0, "bone": 1.0, "never": 0.0}
    for name, heat in expl.attributions.items():
        assert heat.same_grid(vol) and heat.array.dtype == np.float32
    assert expl.labels.same_grid(vol)
    assert set(np.unique(expl.labels.array)) == {0, 1, 2}
    assert (expl.labels.array[3:7, 4:9, 2:7] == 2).mean() > 0.9
    assert expl.provenance["model"]["sha256"] and expl.provenance["versions"]["torch"] == torch.__version__
    assert expl.provenance["n_model_evaluations"] == 1


def test_user_rois_hand_checked(explained):
    vol, _ = explained
    halves = np.zeros(vol.shape, np.uint8)
    halves[:, :, :10] = 1  # x < 10: holds the whole bone block
    halves[:, :, 10:] = 2
    halves[0] = 0  # first slice unlabelled
    rois = vol.with_array(halves)
    expl = explain_volume(vol, tiny_model(), method=input_x_gradient, classes=["bone", 1],
                          rois=rois, roi_names={1: "left", 2: "right"})
    assert expl.class_names == ["bone", "soft"]
    assert expl.roi_names == ["unlabelled", "left", "right"]
    np.testing.assert_allclose(expl.matrix.sum(axis=1), 1.0)
    assert expl.matrix[0, 1] == pytest.approx(1.0)  # bone attribution entirely in the left half
    assert expl.matrix[1, 2] > 0.9  # the soft ball (x≈13) is mostly right
    assert expl.context_ratio == {"bone": 1.0, "soft": 1.0}  # from the predicted segments


def test_bad_inputs():
    vol = phantom()
    other = Volume(np.zeros((16, 18, 20), np.uint8), spacing=(2.0, 2.0, 2.5))
    with pytest.raises(GeometryMismatchError, match="RoI map"):
        explain_volume(vol, tiny_model(), method=input_x_gradient, rois=other)
    with pytest.raises(UnknownClassError, match="liver"):
        explain_volume(vol, tiny_model(), method=input_x_gradient, classes=["liver"])


def test_save_explanation_files_and_graphml(explained, tmp_path):
    _, expl = explained
    out = save_explanation(expl, tmp_path / "run")
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    for required in ["labels.nii.gz", "rois.nii.gz", "matrix.csv", "matrix.json", "graph.json", "graph.graphml",
                     "graph.png", "matrix.png", "provenance.json", "README.txt",
                     "heatmaps/attribution_2_bone.nii.gz", "slices/slices_2_bone.png"]:
        assert required in names
    heat = read_volume(out / "heatmaps/attribution_2_bone.nii.gz")
    assert heat.same_grid(expl.image)
    np.testing.assert_allclose(heat.array, expl.attributions["bone"].array, rtol=1e-6)
    g = nx.read_graphml(out / "graph.graphml")
    assert g.edges["bone", "bone"]["weight"] == pytest.approx(1.0)
    data = json.loads((out / "matrix.json").read_text())
    assert data["absent"] == ["never"] and data["context_ratio"]["bone"] == 1.0
    rows = (out / "matrix.csv").read_text().splitlines()
    assert rows[0] == "class," + ",".join(LABELS) and rows[3].startswith("bone,0,0,1,0")
    with pytest.raises(OutputExistsError):
        save_explanation(expl, out)


def test_save_explanation_is_atomic(explained, tmp_path, monkeypatch):
    _, expl = explained

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    import XAIExplainerLib.figures as figures

    monkeypatch.setattr(figures, "draw_graph", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        save_explanation(expl, tmp_path / "run")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary sibling is left
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "old.txt").write_text("previous result")
    with pytest.raises(RuntimeError):
        save_explanation(expl, tmp_path / "keep", overwrite=True)
    assert [p.name for p in (tmp_path / "keep").iterdir()] == ["old.txt"]  # the old result is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]


def test_registry_vanilla_gradient_known_answer_and_metrics():
    """∂f̂_c/∂x of the voxel-wise linear model is w_c on the class mask: rows are one-hot again; with metrics."""
    vol = phantom()
    seen = []
    expl = explain_volume(vol, tiny_model(), method="vanilla_gradient", classes=["soft", "bone", "never"],
                          metrics={"faithfulness": {"n_subsets": 16, "subset_fraction": 0.05},
                                   "sensitivity": {"n_samples": 1}},
                          progress=lambda f, m: seen.append(f))
    np.testing.assert_allclose(expl.matrix[0], [0, 1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(expl.matrix[1], [0, 0, 1, 0], atol=1e-12)
    np.testing.assert_array_equal(expl.matrix[2], 0.0)
    assert expl.absent_classes == ["never"]
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    m = expl.metrics["classes"]
    assert m["soft"]["average_sensitivity"] == pytest.approx(0.0, abs=1e-6)  # the gradient ignores the input
    # a constant gradient is not an exact contribution map: drops scale with x, sums do not, but both grow with |S∩M|
    assert m["bone"]["faithfulness_correlation"] > 0.5
    assert m["never"]["faithfulness_correlation"] is None
    assert expl.provenance["method"] == "vanilla_gradient"


def test_unknown_method_option_is_a_clear_error():
    from XAIExplainerLib.errors import MethodParameterError, UnknownMethodError

    with pytest.raises(MethodParameterError, match="n_samples"):
        explain_volume(phantom(), tiny_model(), method="vanilla_gradient", method_params={"n_samples": 3})
    with pytest.raises(UnknownMethodError, match="smoothgrad"):
        explain_volume(phantom(), tiny_model(), method="gradcam")


def test_kernel_shap_semantic_reuses_prediction_and_gives_one_hot_rows():
    """f̂_c of the voxel-wise linear model depends only on segment c: its Shapley values vanish elsewhere."""
    from XAIExplainerLib.attribution.kernel_shap import kernel_shap_semantic

    expl = explain_volume(phantom(), tiny_model(), method=kernel_shap_semantic, classes=["soft", "bone"],
                          method_params={"n_samples": 64})
    np.testing.assert_allclose(expl.matrix, [[0, 1, 0, 0], [0, 0, 1, 0]], atol=1e-6)
    assert expl.provenance["params"]["label_map"] == "given"  # the pipeline passed the clean prediction


def test_cancel_stops_the_pipeline_and_nothing_is_written(tmp_path):
    from XAIExplainerLib.errors import CancelledError

    with pytest.raises(CancelledError):
        explain_volume(phantom(), tiny_model(), method="smoothgrad", method_params={"n_samples": 4},
                       cancel=lambda: True)


def test_mean_variant_and_top_k_graph():
    expl = explain_volume(phantom(), tiny_model(), method=input_x_gradient, classes=["bone"], variant="mean",
                          graph_top_k=1, graph_threshold=None)
    assert expl.variant == "mean" and expl.context_ratio == {}
    # mean attribution per RoI: the bone row is the mean of w·x over the bone segment, 0 elsewhere
    heat_mass = expl.importance.matrix[0]
    assert np.count_nonzero(heat_mass) == 1
    # bone voxels have 0.6 < t <= (800 + 1024) / 2048 (linear resampling blurs the block edge), and w_bone = 2
    assert 2 * 0.6 < heat_mass[2] <= 2 * 1824 / 2048 + 1e-6
    assert list(expl.graph.in_edges("bone")) == [("bone", "bone")]


def test_roi_names_without_rois_is_an_error():
    from XAIExplainerLib.errors import XAIExplainerError

    with pytest.raises(XAIExplainerError, match="pass rois as well"):
        explain_volume(phantom(), tiny_model(), method=input_x_gradient, roi_names={1: "left"})
