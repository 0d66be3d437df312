"""``xai-explainer ibix`` and the IBIX pipeline on saved TorchScript models with known answers; bad input → one line,
exit code 2, nothing written."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from XAIExplainerLib.cli.main import main
from XAIExplainerLib.volume import Volume, read_volume, write_volume

SHAPE = (10, 10, 10)
KERNEL = torch.randn(1, 1, 3, 3, 3, generator=torch.Generator().manual_seed(0))


class Conv(torch.nn.Module):
    def __init__(self, pool: bool = False) -> None:
        super().__init__()
        self.kernel = torch.nn.Parameter(KERNEL.clone())
        self.pool = pool

    def forward(self, x):
        y = F.conv3d(x, self.kernel, padding=1)
        return F.avg_pool3d(y, 2) if self.pool else y


class Flat(torch.nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :3]


def _save_model(tmp_path, net, name: str):
    path = tmp_path / f"{name}.pt"
    torch.jit.script(net).save(str(path))
    config = tmp_path / f"{name}.json"
    config.write_text(json.dumps({"kind": "image_to_image", "channel_names": ["out"], "preprocessing": [],
                                  "axis_order": "zyx", "modality": "MRI"}))
    return path, config


@pytest.fixture
def case(tmp_path):
    rng = np.random.default_rng(0)
    image = Volume(rng.normal(size=SHAPE).astype(np.float32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    mask = np.zeros(SHAPE, np.uint8)
    mask[3:6, 3:6, 3:6] = 2
    mask[0:2, 0:2, 0:2] = 1
    write_volume(image, tmp_path / "in.nii.gz")
    write_volume(image.with_array(mask), tmp_path / "mask.nii.gz")
    weights, config = _save_model(tmp_path, Conv(), "conv")
    return tmp_path, weights, config, mask


def _run(tmp_path, weights, config, *extra) -> int:
    return main(["ibix", "--input", str(tmp_path / "in.nii.gz"), "--model", str(weights), "--config", str(config),
                 "--mask", str(tmp_path / "mask.nii.gz"), "--device", "cpu", *extra])


def test_cli_forward_exact_and_jittered_equal_mask_convolved_with_kernel(case):
    tmp, weights, config, mask = case
    expected = F.conv3d(torch.from_numpy((mask == 2).astype(np.float32))[None, None], KERNEL, padding=1)[0, 0]
    for extra in (["--exact"], ["--jitter-range", "2", "--jitters", "3"]):
        out = tmp / f"fw{len(extra)}"
        assert _run(tmp, weights, config, "--mode", "forward", "--label", "2", "--output", str(out), *extra) == 0
        fmap = read_volume(out / "forward_out.nii.gz").array
        assert np.abs(fmap - expected.numpy()).max() < 1e-4 * np.abs(expected.numpy()).max()
        provenance = json.loads((out / "provenance.json").read_text())
        assert provenance["mode"] == "forward" and provenance["params"]["mask_voxels"] == 27


def test_cli_backward_exact_is_transposed_convolution_on_input_grid(case):
    tmp, weights, config, mask = case
    out = tmp / "bw"
    assert _run(tmp, weights, config, "--mode", "backward", "--label", "2", "--exact", "--output", str(out)) == 0
    expected = F.conv_transpose3d(torch.from_numpy((mask == 2).astype(np.float32))[None, None], KERNEL,
                                  padding=1)[0, 0].numpy()
    bmap = read_volume(out / "backward.nii.gz")
    assert bmap.shape == SHAPE and np.abs(bmap.array - expected).max() < 1e-5 * np.abs(expected).max()


def test_backward_blocks_on_pooled_output_grid(case):
    """A 2× pooled output covers the same field of view: the mask goes to the coarse grid, the map comes back."""
    tmp, _, _, _ = case
    weights, config = _save_model(tmp, Conv(pool=True), "pooled")
    out = tmp / "pooled_bw"
    assert _run(tmp, weights, config, "--mode", "backward", "--label", "1", "--blocks", "cubes", "--blocks-count",
                "8", "--jitters", "1", "--output", str(out)) == 0
    bmap = read_volume(out / "backward.nii.gz").array  # M^f = the 2³ corner = one voxel of the pooled grid
    assert 0 <= bmap.min() and bmap.max() <= 1 + 1e-6
    assert bmap[0, 0, 0] == bmap.max() and bmap[0, 0, 0] > 10 * bmap[9, 9, 9]  # the block under M^f scores highest
    fw = tmp / "pooled_fw"
    assert _run(tmp, weights, config, "--mode", "forward", "--label", "2", "--exact", "--output", str(fw)) == 0
    assert read_volume(fw / "forward_out.nii.gz").spacing == (2.0, 2.0, 2.0)


class TwoChannel(torch.nn.Module):
    """Channel 0 = k * x, channel 1 = 3·(k * x): M^f on channel 1 alone gives 3× the map of channel 0 alone."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel = torch.nn.Parameter(KERNEL.clone())

    def forward(self, x):
        y = F.conv3d(x, self.kernel, padding=1)
        return torch.cat([y, 3 * y], 1)


def test_exact_block_eq6_and_channel_selection_through_the_cli(case):
    tmp, weights, config, mask = case
    out = tmp / "bw_blocks"
    assert _run(tmp, weights, config, "--mode", "backward", "--label", "2", "--exact", "--resolution", "blocks",
                "--blocks", "cubes", "--blocks-count", "8", "--output", str(out),
                "--result-json", str(tmp / "r.json")) == 0
    record = json.loads((tmp / "r.json").read_text())
    assert record["maps"]["backward"] == str(out / "backward.nii.gz")
    jit = tmp / "bw_jitter"
    assert _run(tmp, weights, config, "--mode", "backward", "--label", "2", "--blocks", "cubes", "--blocks-count",
                "8", "--jitters", "2", "--output", str(jit)) == 0
    exact, jittered = read_volume(out / "backward.nii.gz").array, read_volume(jit / "backward.nii.gz").array
    assert np.abs(exact - jittered).max() < 1e-5 and 0 <= exact.min() and exact.max() <= 1  # linear: H-independent
    weights2, config2 = _save_model(tmp, TwoChannel(), "two")
    data = json.loads(config2.read_text())
    config2.write_text(json.dumps({**data, "channel_names": ["a", "b"]}))
    maps = {}
    for channel in ("a", "1"):
        folder = tmp / f"ch{channel}"
        assert _run(tmp, weights2, config2, "--mode", "backward", "--label", "2", "--exact", "--channel", channel,
                    "--output", str(folder)) == 0
        maps[channel] = read_volume(folder / "backward.nii.gz").array
    assert np.allclose(maps["1"], 3 * maps["a"], rtol=1e-5, atol=1e-6) and np.abs(maps["a"]).max() > 0


def test_label_map_blocks_equal_the_same_partition_given_as_cubes(case):
    from XAIExplainerLib.attribution.supervoxels import cube_supervoxels

    tmp, weights, config, _ = case
    cubes = cube_supervoxels(SHAPE, 8).numpy()
    write_volume(read_volume(tmp / "in.nii.gz").with_array((10 * cubes + 3).astype(np.int16)), tmp / "blocks.nii.gz")
    common = ["--mode", "backward", "--label", "2", "--jitters", "1"]
    assert _run(tmp, weights, config, *common, "--blocks", "labels", "--block-labels", str(tmp / "blocks.nii.gz"),
                "--output", str(tmp / "by_labels")) == 0
    assert _run(tmp, weights, config, *common, "--blocks", "cubes", "--blocks-count", "8",
                "--output", str(tmp / "by_cubes")) == 0
    by_labels = read_volume(tmp / "by_labels" / "backward.nii.gz").array
    assert len(np.unique(by_labels)) == 8
    assert np.allclose(by_labels, read_volume(tmp / "by_cubes" / "backward.nii.gz").array, atol=1e-7)


def test_ibix_output_writes_every_channel_on_the_input_grid(case):
    tmp, _, _, _ = case
    weights, config = _save_model(tmp, TwoChannel(), "two")
    config.write_text(json.dumps({**json.loads(config.read_text()), "channel_names": ["a", "b"]}))
    out = tmp / "outputs"
    assert main(["ibix-output", "--input", str(tmp / "in.nii.gz"), "--model", str(weights), "--config", str(config),
                 "--output", str(out), "--device", "cpu", "--result-json", str(tmp / "o.json")]) == 0
    channels = json.loads((tmp / "o.json").read_text())["channels"]
    image = read_volume(tmp / "in.nii.gz")
    expected = F.conv3d(torch.from_numpy(image.array)[None, None], KERNEL, padding=1)[0, 0].numpy()
    a, b = read_volume(channels["a"]), read_volume(channels["b"])
    assert a.shape == image.shape and a.spacing == image.spacing and a.origin == image.origin
    assert np.allclose(a.array, expected, atol=1e-5) and np.allclose(b.array, 3 * expected, atol=1e-4)


@pytest.mark.parametrize("problem", ["unknown_channel", "voxels_without_exact", "labels_without_file"])
def test_backward_option_errors_are_one_line(case, problem, capsys):
    tmp, weights, config, _ = case
    extra = {"unknown_channel": ["--exact", "--channel", "nope"], "voxels_without_exact": ["--resolution", "voxels"],
             "labels_without_file": ["--blocks", "labels"]}[problem]
    out = tmp / "out"
    assert _run(tmp, weights, config, "--mode", "backward", "--label", "2", *extra, "--output", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and not out.exists()


@pytest.mark.parametrize("problem", ["other_grid", "empty", "absent_label", "zero_range", "not_a_volume"])
def test_bad_input_is_one_line_and_writes_nothing(case, problem, capsys):
    tmp, weights, config, mask = case
    args = ["--mode", "forward", "--label", "2"]
    if problem == "other_grid":
        write_volume(Volume(np.ones((5, 5, 5), np.uint8), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0)), tmp / "mask.nii.gz")
    elif problem == "empty":
        write_volume(read_volume(tmp / "in.nii.gz").with_array(np.zeros(SHAPE, np.uint8)), tmp / "mask.nii.gz")
        args = ["--mode", "backward"]
    elif problem == "absent_label":
        args = ["--mode", "forward", "--label", "7"]
    elif problem == "zero_range":
        args += ["--jitter-range", "0"]
    else:
        weights, config = _save_model(tmp, Flat(), "flat")
    out = tmp / "out"
    assert _run(tmp, weights, config, *args, "--output", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert not out.exists() and not [p for p in tmp.iterdir() if p.name.startswith(".out")]
