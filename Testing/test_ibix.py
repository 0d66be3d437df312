"""IBIX forward/backward mappings against closed forms (linear convolution), the exact-derivative limit, multiscale
and bad input. Float64 tiny volumes: every test runs in well under a second or a few seconds."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from XAIExplainerLib.attribution.ibix import (backward_map_exact, forward_map, forward_map_exact, jitters)
from XAIExplainerLib.attribution.ibix_blocks import (block_scores, block_scores_exact, multiscale_backward_map,
                                                     paint_blocks, slic_blocks)
from XAIExplainerLib.attribution.supervoxels import cube_supervoxels
from XAIExplainerLib.errors import (GeometryMismatchError, InvalidVolumeError, MethodParameterError,
                                    ModelCapabilityError)

SHAPE = (8, 8, 8)


class LinearConv(torch.nn.Module):
    """f(x) = k * x (same padding): J·v = k * v and Jᵀ·u = conv_transpose(u, k), known exactly."""

    def __init__(self, kernel: torch.Tensor) -> None:
        super().__init__()
        self.kernel = kernel

    def forward(self, x):
        return F.conv3d(x, self.kernel, padding=1)


@pytest.fixture
def linear():
    g = torch.Generator().manual_seed(0)
    kernel = torch.randn(1, 1, 3, 3, 3, generator=g, dtype=torch.float64)
    x = torch.randn(1, 1, *SHAPE, generator=g, dtype=torch.float64)
    return LinearConv(kernel), kernel, x


def _rel(a, b) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).norm() / b.norm())


def _box(lo, hi) -> torch.Tensor:
    m = torch.zeros(SHAPE, dtype=torch.float64)
    m[lo:hi, lo:hi, lo:hi] = 1
    return m


def test_jitters_are_symmetric_and_skip_zero():
    assert jitters(2.0, 2) == [-2.0, -1.0, 1.0, 2.0]


def test_forward_map_of_linear_conv_is_mask_convolved_with_kernel_for_every_jitter(linear):
    model, kernel, x = linear
    mask = _box(2, 5)
    expected = F.conv3d(mask[None, None], kernel, padding=1)[0]
    for H, N in ((0.01, 1), (5.0, 3), (100.0, 4)):
        assert _rel(forward_map(model, x, mask, jitter_range=H, n_jitters=N), expected) < 1e-10
    assert _rel(forward_map_exact(model, x, mask), expected) < 1e-10
    # the authors' code variant: mean |f(x+hM) - f(x)| = mean|h| * |k * M|, mean|h_k| = H (N+1) / (2N)
    authors = forward_map(model, x, mask, jitter_range=3.0, n_jitters=3, variant="authors")
    assert _rel(authors, 3.0 * 4 / 6 * expected.abs()) < 1e-10


def test_backward_map_of_linear_conv_is_closed_form_of_eq6(linear):
    model, kernel, x = linear
    out_mask = _box(0, 4)
    blocks = cube_supervoxels(SHAPE, 8).numpy()  # 2x2x2 boxes of 4^3 voxels
    scores = block_scores(model, x, out_mask, blocks, jitter_range=2.0, n_jitters=2, variant="eq6")
    for k in range(8):
        response = F.conv3d(torch.as_tensor(blocks == k, dtype=torch.float64)[None, None], kernel, padding=1).abs()
        assert abs(scores[k] - float((response[0, 0] * out_mask).sum() / response.sum())) < 1e-12
    assert 0 <= scores.min() and scores.max() <= 1 and scores.argmax() == 0  # the block under M^f wins


def test_exact_backward_map_equals_closed_form_and_unit_block_perturbation(linear):
    model, kernel, x = linear
    out_mask = _box(3, 6)
    exact = backward_map_exact(model, x, out_mask)[0]
    closed = F.conv_transpose3d(out_mask[None, None], kernel, padding=1)[0, 0]  # Eq. 7: sum_{M^f} df_i/dx_k
    assert _rel(exact, closed) < 1e-10
    unit = np.arange(np.prod(SHAPE)).reshape(SHAPE)  # one block per voxel
    perturbed = block_scores(model, x, out_mask, unit, jitter_range=1.0, n_jitters=1, variant="sum")
    assert _rel(paint_blocks(unit, perturbed), closed) < 1e-10


def test_exact_block_eq6_of_linear_conv_equals_closed_form_and_jitter_scheme(linear):
    model, kernel, x = linear
    out_mask = _box(0, 4)
    blocks = cube_supervoxels(SHAPE, 8).numpy()
    closed = np.array([float((r * out_mask).sum() / r.sum()) for r in (
        F.conv3d(torch.as_tensor(blocks == k, dtype=torch.float64)[None, None], kernel, padding=1).abs()[0, 0]
        for k in range(8))])
    for batch in (1, 3, 8):  # batched JVPs: the answer does not depend on how blocks are grouped
        exact = block_scores_exact(model, x, out_mask, blocks, batch_size=batch)
        assert np.abs(exact - closed).max() / np.abs(closed).max() < 1e-10
    jittered = block_scores(model, x, out_mask, blocks, jitter_range=7.0, n_jitters=3, variant="eq6")
    assert np.abs(exact - jittered).max() / np.abs(closed).max() < 1e-10  # linear: every H gives the limit


def test_exact_block_sum_is_block_sum_of_the_vjp_and_jittered_eq6_converges_to_it():
    net = _smooth_net()
    x = torch.randn(1, 1, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    out_mask = _box(3, 6)
    blocks = cube_supervoxels(SHAPE, 8).numpy()
    vjp = backward_map_exact(net, x, out_mask)[0].numpy()
    sums = block_scores_exact(net, x, out_mask, blocks, variant="sum", batch_size=3)
    assert np.allclose(sums, [vjp[blocks == k].sum() for k in range(8)], rtol=1e-10, atol=1e-12)
    exact = block_scores_exact(net, x, out_mask, blocks)
    errors = [np.abs(block_scores(net, x, out_mask, blocks, jitter_range=H, n_jitters=2) - exact).max()
              for H in (3.0, 0.3, 0.03)]
    assert all(a > b for a, b in zip(errors, errors[1:])) and errors[-1] < 1e-4, errors
    with pytest.raises(MethodParameterError):
        block_scores_exact(net, x, out_mask, blocks, variant="authors")


def _smooth_net() -> torch.nn.Module:
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 3, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv3d(3, 2, 3, padding=1))
    return net.double().eval()


def test_perturbation_maps_converge_to_exact_maps_as_jitter_range_shrinks():
    net = _smooth_net()
    x = torch.randn(1, 1, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    mask, out_mask = _box(2, 5), _box(3, 6)
    exact_f = forward_map_exact(net, x, mask)
    errors = [_rel(forward_map(net, x, mask, jitter_range=H, n_jitters=2), exact_f) for H in (3.0, 1.0, 0.3, 0.1)]
    assert all(a > b for a, b in zip(errors, errors[1:])) and errors[-1] < 1e-3, errors
    # backward: unit blocks, signed sum -> the vector-Jacobian product (one channel region per output channel)
    exact_b = backward_map_exact(net, x, out_mask)[0]
    unit = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    back = [_rel(paint_blocks(unit, block_scores(net, x, out_mask, unit, jitter_range=H, n_jitters=1,
                                                 variant="sum")), exact_b) for H in (3.0, 0.3, 0.03)]
    assert all(a > b for a, b in zip(back, back[1:])) and back[-1] < 1e-3, back


def test_exact_mode_works_on_torchscript():
    net = _smooth_net()
    scripted = torch.jit.script(net)
    x = torch.randn(1, 1, *SHAPE, dtype=torch.float64)
    assert _rel(forward_map_exact(scripted, x, _box(2, 5)), forward_map_exact(net, x, _box(2, 5))) < 1e-12
    assert _rel(backward_map_exact(scripted, x, _box(1, 3)), backward_map_exact(net, x, _box(1, 3))) < 1e-12


def test_multiscale_with_threshold_zero_equals_single_scale():
    net = _smooth_net()
    from scipy.ndimage import gaussian_filter

    image = gaussian_filter(np.random.default_rng(3).normal(size=SHAPE), 1.0)  # structure for SLIC to follow
    x = torch.from_numpy(image)[None, None]
    options = dict(jitter_range=1.0, n_jitters=1)
    assert slic_blocks(image, 20).max() + 1 >= 8 and slic_blocks(image, 10).max() + 1 >= 4
    single = paint_blocks(slic_blocks(image, 20), block_scores(net, x, _box(0, 3), slic_blocks(image, 20), **options))
    multi = multiscale_backward_map(net, x, _box(0, 3), image, n_blocks=20, threshold=0.0, **options)
    assert np.array_equal(single, multi)
    coarse_only = multiscale_backward_map(net, x, _box(0, 3), image, n_blocks=20, threshold=2.0, **options)
    assert not np.array_equal(coarse_only, multi)  # a threshold above every score keeps the coarse map
    exact_single = paint_blocks(slic_blocks(image, 20), block_scores_exact(net, x, _box(0, 3), slic_blocks(image, 20)))
    exact_multi = multiscale_backward_map(net, x, _box(0, 3), image, n_blocks=20, threshold=0.0, exact=True,
                                          **options)
    assert np.array_equal(exact_single, exact_multi)


def test_slic_blocks_partition_the_volume():
    from scipy.ndimage import gaussian_filter

    image = gaussian_filter(np.random.default_rng(0).random(SHAPE), 1.0)
    blocks = slic_blocks(image, 10)
    assert blocks.min() == 0 and set(np.unique(blocks)) == set(range(blocks.max() + 1))


@pytest.mark.parametrize("call, error", [
    (lambda m, x: forward_map(m, x, torch.ones(4, 4, 4), jitter_range=1.0, n_jitters=1), GeometryMismatchError),
    (lambda m, x: forward_map(m, x, torch.zeros(SHAPE), jitter_range=1.0, n_jitters=1), InvalidVolumeError),
    (lambda m, x: forward_map(m, x, _box(1, 2), jitter_range=0.0, n_jitters=1), MethodParameterError),
    (lambda m, x: backward_map_exact(m, x, torch.zeros(SHAPE)), InvalidVolumeError),
    (lambda m, x: forward_map_exact(lambda t: t.flatten(1)[:, :3], x, _box(1, 2)), ModelCapabilityError),
])
def test_bad_input_is_one_named_error(linear, call, error):
    model, _, x = linear
    with pytest.raises(error) as info:
        call(model, x)
    assert "\n" not in str(info.value)
