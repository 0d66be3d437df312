"""The Counterfactual section's Logic headless with slicer-core, through the real background CLI: the region as a
segment, the soft map as a heatmap over the input, the inpainted volume beside the original in linked views, the
probability change in a table and the status line, the input untouched, no work folder left."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slicer_standins  # noqa: E402

pytest.importorskip("slicer")
from XAIExplainerLib.slicer_bridge import create_headless_scene  # noqa: E402

N = 16
WORK_ROOT = Path(tempfile.mkdtemp(prefix="xai-cf-logic-"))


@pytest.fixture(scope="module")
def module():
    saved = {k: sys.modules.get(k) for k in ("qt", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper",
                                             "slicer.i18n", "XAIExplainerModule")}
    yield slicer_standins.load_module()
    for name, value in saved.items():
        if value is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = value


@pytest.fixture(scope="module")
def run(module, tmp_path_factory):
    import slicer

    from XAIExplainerLib.models import ModelConfig
    from XAIExplainerLib.models.network import build_network
    from XAIExplainerLib.slicer_bridge.volumes import add_volume_node
    from XAIExplainerLib.volume import Volume

    folder = tmp_path_factory.mktemp("cf")
    config = ModelConfig(kind="classifier", label_names=["healthy", "lesion"], architecture="Classifier",
                         preprocessing=[], network_kwargs={"in_shape": [1, N, N, N], "classes": 2,
                                                           "channels": [4, 8], "strides": [2, 2]})
    torch.manual_seed(0)
    torch.save(build_network(config).state_dict(), folder / "clf.pt")
    config.save(folder / "clf.json")
    ctx = create_headless_scene()
    array = (np.random.RandomState(0).rand(N, N, N) * 100).astype(np.float32)
    volume = add_volume_node(Volume(array, (1.0, 1.5, 2.0), (3.0, 4.0, 5.0),
                                    (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), {}), "T1")
    before = np.array(slicer.util.arrayFromVolume(volume), copy=True)
    logic = module.XAIExplainerLogic()
    logic.pythonExecutable = sys.executable
    logic.workRoot = WORK_ROOT
    nodes = logic.counterfactual(volume, folder / "clf.pt", "blur", targetClass="lesion",
                                 methodParameters={"steps": 30, "restarts": 2}, device="cpu", wait=True)
    return {"ctx": ctx, "logic": logic, "volume": volume, "nodes": nodes, "before": before, "folder": folder}


def test_nodes_segment_heatmap_inpainted_table(run):
    import slicer

    nodes, volume = run["nodes"], run["volume"]
    segments = nodes["segmentation"].GetSegmentation()
    mask_voxels = nodes["record"]["mask_voxels"]
    assert mask_voxels > 0
    assert segments.GetNumberOfSegments() == 1
    assert segments.GetNthSegment(0).GetName() == "counterfactual region (lesion)"
    soft = slicer.util.arrayFromVolume(nodes["soft_map"])
    assert soft.shape == (N, N, N) and 0.0 <= soft.min() and soft.max() <= 1.0
    assert nodes["soft_map"].GetDisplayNode().GetWindow() == pytest.approx(2.0)  # diverging window [-1, 1]
    inpainted = slicer.util.arrayFromVolume(nodes["inpainted"])
    source = slicer.util.arrayFromVolume(volume)
    changed = inpainted != source
    assert 0 < changed.sum() <= mask_voxels  # only the region is replaced
    table = nodes["table"]
    cells = {table.GetCellText(r, 0): table.GetCellText(r, 1) for r in range(table.GetNumberOfRows())}
    record = nodes["record"]
    assert cells["class"] == "lesion"
    assert float(cells["probability before"]) == pytest.approx(record["probability_before"], rel=1e-5)
    assert float(cells["probability after"]) == pytest.approx(record["probability_after"], rel=1e-5)
    assert "→" in nodes["status"] and "lesion" in nodes["status"]
    assert nodes["loss_table"].GetNumberOfRows() == 30


def test_linked_views_original_and_inpainted(run):
    layout = run["nodes"]["layout"]
    first, second = layout.composite_nodes
    assert first.GetBackgroundVolumeID() == run["volume"].GetID()
    assert first.GetForegroundVolumeID() == run["nodes"]["soft_map"].GetID()
    assert second.GetBackgroundVolumeID() == run["nodes"]["inpainted"].GetID()
    assert first.GetLinkedControl() and second.GetLinkedControl()


def test_input_untouched_and_no_work_folder_left(run):
    import slicer

    assert np.array_equal(slicer.util.arrayFromVolume(run["volume"]), run["before"])
    assert not list(WORK_ROOT.glob("XAIExplainer-*"))


def test_bad_options_fail_before_anything_starts(run, module):
    logic = run["logic"]
    with pytest.raises(Exception, match="steps"):
        logic.counterfactual(run["volume"], run["folder"] / "clf.pt", "zero", methodParameters={"steps": 0},
                             wait=True)
    with pytest.raises(ValueError, match="inpainter"):
        logic.counterfactual(run["volume"], run["folder"] / "clf.pt", run["folder"] / "missing.pt", wait=True)
    with pytest.raises(Exception, match="class"):
        logic.counterfactual(run["volume"], run["folder"] / "clf.pt", "zero", targetClass="tumour",
                             methodParameters={"steps": 2}, wait=True)
    assert not list(WORK_ROOT.glob("XAIExplainer-*"))
