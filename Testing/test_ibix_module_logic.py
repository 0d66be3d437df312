"""The module's IBIX Logic end to end under slicer-core, through the real background CLI.

A two-channel image-to-image TorchScript model (channel b = 3 × channel a = 3 · (k * x)) on a small volume with a
non-trivial geometry: "Run network" loads the channels as volumes on the input's grid; a segment painted on the
channel-b volume gives a backward map of channel b (the channel found from where it was painted) and a segment on
the input gives forward maps, each node on the geometry of, and equal to, what the CLI writes for the same mask.
A segment on another grid is resampled onto the input's; an empty or unknown segment is refused before anything
runs, leaving no work folder behind.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slicer_standins  # noqa: E402

pytest.importorskip("slicer")
from XAIExplainerLib.cli.main import main  # noqa: E402
from XAIExplainerLib.errors import SceneInputError  # noqa: E402
from XAIExplainerLib.slicer_bridge.volumes import add_volume_node, node_ijk_to_ras, volume_from_node  # noqa: E402
from XAIExplainerLib.volume import Volume, read_volume, write_volume  # noqa: E402

SHAPE = (12, 10, 11)
KERNEL = torch.randn(1, 1, 3, 3, 3, generator=torch.Generator().manual_seed(0))
WORK_ROOT = Path(tempfile.mkdtemp(prefix="xai-ibix-logic-"))


class TwoChannel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.kernel = torch.nn.Parameter(KERNEL.clone())

    def forward(self, x):
        y = torch.tanh(F.conv3d(x, self.kernel, padding=1))
        return torch.cat([y, 3 * y], 1)


@pytest.fixture(scope="module")
def module():
    with slicer_standins.loaded_module() as loaded:
        yield loaded


@pytest.fixture(scope="module")
def setup(module, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ibix")
    model = tmp / "two.pt"
    torch.jit.script(TwoChannel()).save(str(model))
    (tmp / "two.json").write_text(json.dumps({"kind": "image_to_image", "channel_names": ["a", "b"],
                                              "preprocessing": [], "axis_order": "zyx", "modality": "MRI"}))
    rng = np.random.default_rng(0)
    image = Volume(rng.normal(size=SHAPE).astype(np.float32), (1.0, 1.5, 2.0), (-5.0, 3.0, 7.0))
    write_volume(image, tmp / "in.nii.gz")
    ctx, logic = slicer_standins.headless_logic(module, WORK_ROOT)
    volume = add_volume_node(image, "t1")
    outputs = logic.runImageToImage(volume, str(model), device="cpu", wait=True)
    return {"tmp": tmp, "model": model, "image": image, "ctx": ctx, "logic": logic, "volume": volume,
            "outputs": outputs}


def _segmentation(ctx, mask: np.ndarray, geometry: Volume, reference=None, name: str = "painted"):
    """A segmentation with one segment made from ``mask`` on ``geometry`` (as the Segment Editor would leave it)."""
    label = add_volume_node(geometry.with_array(mask.astype(np.uint8)), f"{name} label", labelmap=True)
    segmentation = ctx.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    if reference is not None:
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    assert ctx.logic("Segmentations").ImportLabelmapToSegmentationNode(label, segmentation)
    ctx.scene.RemoveNode(label)
    return segmentation, segmentation.GetSegmentation().GetNthSegmentID(0)


def _cli(setup, mask: np.ndarray, out: Path, mode: str, *extra) -> Path:
    write_volume(setup["image"].with_array(mask.astype(np.uint8)), setup["tmp"] / f"{out.name}_mask.nii.gz")
    assert main(["ibix", "--input", str(setup["tmp"] / "in.nii.gz"), "--model", str(setup["model"]),
                 "--mask", str(setup["tmp"] / f"{out.name}_mask.nii.gz"), "--device", "cpu", "--output", str(out),
                 "--mode", mode, *extra]) == 0
    return out


def _same_geometry(node, volume: Volume) -> None:
    assert np.allclose(node_ijk_to_ras(node), volume.ijk_to_ras(), atol=1e-5)
    assert volume_from_node(node).shape == volume.shape


def test_run_network_loads_each_channel_on_the_input_grid(setup):
    outputs, image = setup["outputs"], setup["image"]
    assert list(outputs) == ["a", "b"]
    expected = torch.tanh(F.conv3d(torch.from_numpy(image.array)[None, None], KERNEL, padding=1))[0, 0].numpy()
    for name, factor in (("a", 1.0), ("b", 3.0)):
        _same_geometry(outputs[name], image)
        assert np.allclose(volume_from_node(outputs[name]).array, factor * expected, atol=1e-5)
        assert outputs[name].GetAttribute("XAIExplainer.channel") == name


def test_backward_map_of_a_segment_painted_on_an_output_channel(setup):
    mask = np.zeros(SHAPE, bool)
    mask[4:8, 3:6, 5:9] = True
    segmentation, segment = _segmentation(setup["ctx"], mask, setup["image"], reference=setup["outputs"]["b"])
    maps = setup["logic"].ibix(setup["volume"], str(setup["model"]), mode="backward", maskSegmentation=segmentation,
                               segmentId=segment, exact=True, device="cpu", wait=True)
    node = maps["backward"]
    reference = read_volume(_cli(setup, mask, setup["tmp"] / "cli_bw", "backward", "--exact", "--channel", "b") / "backward.nii.gz")
    _same_geometry(node, reference)
    assert np.allclose(volume_from_node(node).array, reference.array, rtol=1e-6, atol=1e-7)
    assert json.loads(node.GetAttribute("XAIExplainer.params"))["channel"] == "b"  # found from the painted volume
    assert node.GetNodeReference("XAIExplainer.background") is setup["volume"]
    both = read_volume(_cli(setup, mask, setup["tmp"] / "cli_bw_all", "backward", "--exact") / "backward.nii.gz").array
    assert np.allclose(both, reference.array * 4 / 3, rtol=1e-4, atol=1e-6)  # a + b = (1 + 3)·a; b alone = 3·a


def test_forward_maps_of_a_segment_painted_on_the_input_are_shown_over_each_channel(setup):
    mask = np.zeros(SHAPE, bool)
    mask[2:5, 2:5, 2:5] = True
    segmentation, segment = _segmentation(setup["ctx"], mask, setup["image"], reference=setup["volume"], name="Mx")
    maps = setup["logic"].ibix(setup["volume"], str(setup["model"]), mode="forward", maskSegmentation=segmentation,
                               segmentId=segment, jitters=2, jitterRange=0.5, device="cpu", wait=True)
    cli = _cli(setup, mask, setup["tmp"] / "cli_fw", "forward", "--jitters", "2", "--jitter-range", "0.5")
    assert sorted(maps) == ["forward_a", "forward_b"]
    for name, node in maps.items():
        reference = read_volume(cli / f"{name}.nii.gz")
        _same_geometry(node, reference)
        assert np.allclose(volume_from_node(node).array, reference.array, rtol=1e-6, atol=1e-7)
        assert node.GetNodeReference("XAIExplainer.background") is setup["outputs"][name[-1]]
        assert node.GetDisplayNode().GetWindow() > 0  # styled as a heatmap


def test_a_segment_painted_on_another_grid_is_resampled_onto_the_input(setup, tmp_path):
    from XAIExplainerLib.slicer_bridge.ibix import export_segment_mask

    image = setup["image"]
    coarse = Volume(np.zeros((6, 5, 6), np.float32), (2.0, 3.0, 4.0), image.origin)  # 2× coarser, same corner
    mask = np.zeros(coarse.shape, bool)
    mask[1:3, 1:3, 1:3] = True
    segmentation, segment = _segmentation(setup["ctx"], mask, coarse, name="coarse")
    count = export_segment_mask(segmentation, segment, setup["volume"], tmp_path / "m.nii.gz")
    exported = read_volume(tmp_path / "m.nii.gz")
    assert exported.shape == image.shape and np.allclose(exported.ijk_to_ras(), image.ijk_to_ras(), atol=1e-5)
    assert count == int(exported.array.sum()) and 27 <= count <= 125  # 2³ coarse voxels ≈ 4³ fine ones
    centre = np.argwhere(exported.array).mean(0)  # coarse index 1.5 = fine index 3 on every axis
    assert np.allclose(centre, [3.0, 3.0, 3.0], atol=0.6), centre


@pytest.mark.parametrize("problem", ["empty", "unknown_segment", "bad_mode"])
def test_bad_segments_are_refused_before_anything_runs(setup, problem):
    ctx = setup["ctx"]
    mask = np.zeros(SHAPE, bool)
    mask[3:5, 3:5, 3:5] = True
    segmentation, segment = _segmentation(ctx, mask, setup["image"], name=f"bad {problem}")
    if problem == "empty":
        segmentation.GetSegmentation().AddEmptySegment("empty")
        segment = "empty"
    elif problem == "unknown_segment":
        segment = "nope"
    before = set(WORK_ROOT.iterdir())
    with pytest.raises(ValueError if problem == "bad_mode" else SceneInputError) as info:
        setup["logic"].ibix(setup["volume"], str(setup["model"]), mode="sideways" if problem == "bad_mode" else
                            "forward", maskSegmentation=segmentation, segmentId=segment, device="cpu", wait=True)
    assert "\n" not in str(info.value)
    assert set(WORK_ROOT.iterdir()) == before and not setup["logic"].isRunning()


def test_mask_of_a_volume_under_a_transform_shares_the_hardened_input_grid(setup, tmp_path):
    """The input is exported with its parent transform hardened; the mask must land on that same grid (else the
    CLI would refuse it as 'another grid')."""
    import vtk

    from XAIExplainerLib.pipelines.ibix import select_region
    from XAIExplainerLib.slicer_bridge.ibix import export_segment_mask
    from XAIExplainerLib.slicer_bridge.module_io import export_input_volume

    ctx, image = setup["ctx"], setup["image"]
    node = add_volume_node(image, "moved t1")
    shift = ctx.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(1, 3, 7.0)
    shift.SetMatrixTransformToParent(matrix)
    node.SetAndObserveTransformNodeID(shift.GetID())
    input_file, hardened = export_input_volume(node, tmp_path / "input.nii.gz")
    mask = np.zeros(SHAPE, bool)
    mask[4:7, 4:7, 4:7] = True
    segmentation, segment = _segmentation(ctx, mask, image, reference=node, name="on moved")
    segmentation.SetAndObserveTransformNodeID(shift.GetID())  # painted where the user sees the moved volume
    export_segment_mask(segmentation, segment, node, tmp_path / "mask.nii.gz", input_file)
    exported, moved = read_volume(tmp_path / "mask.nii.gz"), read_volume(input_file)
    assert hardened and np.allclose(exported.ijk_to_ras(), moved.ijk_to_ras())
    assert np.array_equal(select_region(exported, moved, None, "mask").array.astype(bool), mask)
