"""The Regression and IBIX sections' "Load demo" end to end under slicer-core, through the real background CLI.

The demo inputs are made from the shipped Colin27 T1 alone (no nilearn, no mricron-data in Slicer). Known answers:
the regression patch is exactly the documented 32³ crop of the skull-stripped Colin27 brain resampled to 2 mm and
scaled to its 99.5th percentile (recomputed here with SimpleITK from the shipped files), it lies wholly in the right
hemisphere, and the node sits on that geometry. The shipped regressor's GM/WM/CSF fractions on it are compared with
two independent sources where the test data are installed: the AAL atlas (drawn on Colin27 itself) for grey matter and
the MNI152 tissue maps at the same MNI position (a population prior). The regressor's config scales any input as in
training (the prediction is unchanged when the patch is in scanner units; the adapter-level held-out R² recorded in
evaluation.json is reproduced). Grad-CAM++ (layers auto) and SmoothGrad run on
the patch: heatmaps on its grid, predictions in [0, 1] summing to at most ~1, the same predictions as the library
gives directly. The IBIX demo loads the 2 mm brain, a painted M^x in white matter and the tissue U-Net; the network's
grey/white/CSF outputs on it are checked for anatomy (white matter brighter inside the painted WM ball than in
cortex), and an exact forward IBIX map is largest near the painted region.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slicer_standins  # noqa: E402

slicer = pytest.importorskip("slicer")
torch = pytest.importorskip("torch")
from XAIExplainerLib.datasets import section_demos as demos  # noqa: E402
from XAIExplainerLib.slicer_bridge import section_demos as bridge  # noqa: E402
from XAIExplainerLib.slicer_bridge.volumes import node_ijk_to_ras, volume_from_node  # noqa: E402
from XAIExplainerLib.volume import resample_to_reference  # noqa: E402

WORK_ROOT = Path(tempfile.mkdtemp(prefix="xai-section-demos-"))
NAMES = ["grey_matter", "white_matter", "csf"]


@pytest.fixture(scope="module")
def module():
    with slicer_standins.loaded_module() as loaded:
        yield loaded


@pytest.fixture(scope="module")
def session(module):
    ctx, logic = slicer_standins.headless_logic(module, WORK_ROOT)
    return {"ctx": ctx, "logic": logic, "params": logic.getParameterNode()}


def _brain_with_sitk() -> np.ndarray:
    """The documented recipe, written independently with SimpleITK: mask, 2 mm linear resampling, /p99.5."""
    t1 = sitk.Cast(sitk.ReadImage(str(demos.DEMO_T1)), sitk.sitkFloat32)
    mask = sitk.Cast(sitk.ReadImage(str(demos.DEMO_BRAIN_MASK)), sitk.sitkFloat32)
    size = [int(round(n * 3.0 / 2.0)) for n in t1.GetSize()]
    brain = sitk.Resample(t1 * mask, size, sitk.Transform(), sitk.sitkLinear, t1.GetOrigin(), (2.0,) * 3,
                          t1.GetDirection(), 0.0, sitk.sitkFloat32)
    data = sitk.GetArrayFromImage(brain)
    return np.clip(data / np.percentile(data, 99.5), 0, None)


def _table_column(table, name: str) -> np.ndarray:
    column = table.GetTable().GetColumnByName(name)
    return np.array([column.GetValue(i) for i in range(column.GetNumberOfTuples())], dtype=float)


def test_regression_demo_is_the_documented_patch_and_selects_the_regressor(session):
    logic, params = session["logic"], session["params"]
    volume = logic.loadRegressionDemo(params)
    assert params.inputVolume is volume and Path(params.modelPath) == bridge.REGRESSION_DEMO_MODEL
    assert logic.loadRegressionDemo(params) is volume  # pressed twice: nothing new
    patch = volume_from_node(volume)
    z, y, x = demos.REGRESSION_PATCH_CORNER
    expected = _brain_with_sitk()[z:z + 32, y:y + 32, x:x + 32]
    assert patch.shape == (32, 32, 32)
    np.testing.assert_allclose(patch.array, expected, atol=1e-5)
    # geometry: 2 mm voxels, axes as the demo T1 (LPS diag(-1,-1,1) -> RAS identity), corner voxel in place
    brain = demos.colin27_brain_2mm()
    corner_lps = brain.ijk_to_lps() @ np.array([x, y, z, 1.0])
    ras = node_ijk_to_ras(volume)
    np.testing.assert_allclose(ras[:3, :3], np.diag([2.0, 2.0, 2.0]), atol=1e-6)
    np.testing.assert_allclose(ras[:3, 3], corner_lps[:3] * [-1, -1, 1], atol=1e-5)
    lps_x = (patch.ijk_to_lps() @ np.array([[0, 31], [0, 0], [0, 0], [1, 1]]))[0]
    assert (lps_x < 0).all()  # right hemisphere: the regressor trained on left-hemisphere patches only
    assert (patch.array == 0).mean() < 0.1 and patch.array.max() > 0.9  # brain, not background


def test_regression_demo_prediction_agrees_with_independent_tissue_estimates():
    from XAIExplainerLib.models.outputs import RegressionModel

    prediction = RegressionModel.load(bridge.REGRESSION_DEMO_MODEL, device="cpu").predict(demos.regression_demo_patch())
    values = np.array([prediction[n] for n in NAMES])
    assert ((values > 0) & (values < 1)).all() and values.sum() <= 1.0
    pytest.importorskip("nilearn")
    try:
        from XAIExplainerLib.datasets.samples import aal_atlas
        from XAIExplainerLib.datasets.tissue import mni152_tissues
        atlas, _ = aal_atlas()
    except Exception as exc:  # mricron-data missing
        pytest.skip(str(exc))
    patch = demos.regression_demo_patch()
    aal_gm = resample_to_reference(atlas.with_array((atlas.array > 0).astype(np.float32)), patch, "linear").array.mean()
    maps = mni152_tissues(2.0)
    prior = np.array([resample_to_reference(getattr(maps, n), patch, "linear").array.mean() for n in NAMES])
    # measured: prediction GM 0.47 WM 0.41 CSF 0.083; MNI152 prior 0.49 0.38 0.097; AAL grey 0.63 (AAL's labels
    # reach into juxtacortical white matter, so it over-counts grey matter)
    np.testing.assert_allclose(values, prior, atol=0.06)
    assert values[0] < aal_gm and values[2] > 0.06  # the lateral ventricle gives a CSF fraction twice MNI's mean


def test_the_regressor_config_scales_any_input_as_in_training():
    """The config's preprocessing makes the prediction independent of the input's intensity unit, and reproduces the
    adapter-level held-out R² recorded in evaluation.json (the bare network's record is test_tissue_regressor's)."""
    import json

    from XAIExplainerLib.models.outputs import RegressionModel

    model = RegressionModel.load(bridge.REGRESSION_DEMO_MODEL, device="cpu")
    patch = demos.regression_demo_patch()
    scanner_units = patch.with_array(patch.array * 3571.0)
    a, b = model.predict(patch), model.predict(scanner_units)
    np.testing.assert_allclose([a[n] for n in NAMES], [b[n] for n in NAMES], atol=1e-5)
    pytest.importorskip("nilearn")
    from XAIExplainerLib.datasets.tissue import hemisphere_patches, mni152_tissues
    from XAIExplainerLib.volume import Volume

    maps = mni152_tissues(2.0)
    x, y, _ = hemisphere_patches(maps, "right", 32, 8)
    with torch.no_grad():
        prepared = np.stack([model.preprocess(Volume(p[0], maps.t1.spacing)).array[None] for p in x])
        pred = model(torch.from_numpy(prepared)).double().numpy()
    r2 = 1 - ((pred - y) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
    evaluation = json.loads((bridge.REGRESSION_DEMO_MODEL.parent / "evaluation.json").read_text())
    recorded = evaluation["float16_config_preprocessing"]["right_stride8"]["r2"]
    np.testing.assert_allclose(r2, [recorded[n] for n in NAMES], atol=1e-4)
    assert min(r2) > 0.83


def test_gradcampp_and_smoothgrad_on_the_regression_demo(session):
    from XAIExplainerLib.models.outputs import RegressionModel

    logic, params = session["logic"], session["params"]
    volume = logic.loadRegressionDemo(params)
    direct = RegressionModel.load(bridge.REGRESSION_DEMO_MODEL, device="cpu").predict(volume_from_node(volume))
    for method, options in (("gradcampp", {"layers": "auto"}), ("smoothgrad", {"n_samples": 4, "noise_level": 0.2})):
        nodes = logic.explainRegression(volume, params.modelPath, method=method, methodParameters=options, seed=0,
                                        device="cpu", wait=True)
        assert sorted(k for k in nodes if k.startswith("heatmap:")) == sorted(f"heatmap:{n}" for n in NAMES)
        for name in NAMES:
            node = nodes[f"heatmap:{name}"]
            np.testing.assert_allclose(node_ijk_to_ras(node), node_ijk_to_ras(volume), atol=1e-6)
            heat = volume_from_node(node).array
            assert heat.shape == (32, 32, 32) and np.isfinite(heat).all()
            assert np.abs(heat).max() > 0 or node.GetAttribute("XAIExplainer.blank_reason")
        predictions = _table_column(nodes["table"], "prediction")
        np.testing.assert_allclose(predictions, [direct[n] for n in NAMES], atol=1e-4)
        assert ((predictions >= 0) & (predictions <= 1)).all() and predictions.sum() <= 1.02


def test_ibix_demo_runs_the_tissue_unet_and_an_exact_forward_map(session):
    logic, params = session["logic"], session["params"]
    volume, region = logic.loadIbixDemo(params)
    assert params.inputVolume is volume and Path(params.modelPath) == bridge.IBIX_DEMO_MODEL
    assert logic.loadIbixDemo(params) == (volume, region)
    image = volume_from_node(volume)
    np.testing.assert_allclose(image.spacing, (2.0, 2.0, 2.0))
    assert (image.array > 0).any(axis=(1, 2))[[0, -1]].tolist() == [False, False]  # margin around the brain
    assert region.GetSegmentation().GetNumberOfSegments() == 1
    segment = region.GetSegmentation().GetNthSegmentID(0)
    assert region.GetSegmentation().GetSegment(segment).GetName() == "M^x: right corona radiata"
    outputs = logic.runImageToImage(volume, params.modelPath, device="cpu", wait=True)
    assert list(outputs) == NAMES
    channels = {n: volume_from_node(outputs[n]).array for n in NAMES}
    painted = demos.ibix_demo_region(image)
    assert painted.sum() > 20
    brain = image.array > 0
    # anatomy: the painted corona-radiata ball is white matter; the brightest and darkest brain voxels differ
    assert channels["white_matter"][painted].mean() > 0.6 > channels["grey_matter"][painted].mean()
    bright, dark = image.array > np.percentile(image.array[brain], 90), brain & (image.array < 0.3)
    assert channels["white_matter"][bright].mean() > channels["white_matter"][dark].mean() + 0.3
    maps = logic.ibix(volume, params.modelPath, mode="forward", maskSegmentation=region, segmentId=segment,
                      exact=True, device="cpu", wait=True)
    assert sorted(maps) == sorted(f"forward_{n}" for n in NAMES)
    centre = np.argwhere(painted).mean(0)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in image.shape], indexing="ij"), -1)
    far = np.linalg.norm((grid - centre) * 2.0, axis=-1) > 30.0  # mm: beyond the U-Net's reach from the ball
    for name, node in maps.items():
        # forward maps live on the output grid (model space: here DivisiblePad(8) pads the input by a few voxels);
        # Slicer places them physically, so compare them on the input's grid
        on_input = resample_to_reference(volume_from_node(node), image, "linear")
        np.testing.assert_allclose(node_ijk_to_ras(node)[:3, :3], node_ijk_to_ras(volume)[:3, :3], atol=1e-6)
        forward = np.abs(on_input.array)
        assert forward[painted].mean() > 10 * max(forward[far].mean(), 1e-12)
