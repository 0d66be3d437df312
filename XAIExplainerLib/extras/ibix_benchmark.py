"""Benchmark: IBIX voxel-resolution backward map in exact mode (one VJP) vs the paper's perturbation scheme.

    python -m XAIExplainerLib.extras.ibix_benchmark [--model deepbet|small] [--blocks 500] [--jitters 100]
                                                   [--measure-blocks 1] [--measure-jitters 4] [--device cpu]

The perturbation scheme costs K·2N model runs (K = 500, N = 100: 100 000 runs). Running all of them on a 3D network
takes days on a CPU, so by default ``--measure-blocks`` blocks with ``--measure-jitters`` jitters per sign are really
run through :func:`block_scores` (batched as in a full run) and the time per model run is extrapolated linearly to
K·2N runs (the runs are independent and identical in cost; the output says "extrapolated").
``--measure-blocks 0 --measure-jitters 0`` runs everything (feasible with ``--model small``).
The authors' published 2D time for one backward mapping on a 232×200 image: 24–174 s (IBIX-CAE, Keras).
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

AUTHORS_2D_FORWARD = "authors' 2D tool: about 0.33 s for one forward mapping of a 232×200 image (100 jitters)"
AUTHORS_2D = "authors' 2D tool: 24–174 s for one backward mapping of a 232×200 image (multiscale 24 s, single-scale " \
             "parallel 94 s, sequential 174 s)"


def _deepbet(device: str) -> tuple[Any, Any]:
    from ..pipelines.ibix import load_image_to_image
    from ..volume import read_volume
    from .ibix_demo import COLIN27, DEEPBET_CONFIG, deepbet_weights

    model = load_image_to_image(deepbet_weights(), device=device, config=DEEPBET_CONFIG)
    return model, model.to_tensor(model.preprocess(read_volume(COLIN27)))


def _small(device: str) -> tuple[Any, Any]:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv3d(8, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv3d(8, 1, 3, padding=1)).eval().to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    from scipy.ndimage import gaussian_filter

    # smooth structure (white noise gives SLIC at compactness 0.1 nothing to follow: it returns 1–2 segments)
    image = gaussian_filter(np.random.default_rng(0).normal(size=(32, 32, 32)), 2.0).astype(np.float32)
    return net, torch.from_numpy(image)[None, None].to(device)


def _sync(x) -> None:
    import torch

    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)


def benchmark(model_name: str = "deepbet", n_blocks: int = 500, n_jitters: int = 100, measure_blocks: int = 1,
              measure_jitters: int = 4, device: str = "cpu", batch_size: int | None = None) -> dict[str, Any]:
    """Seconds of the exact backward map and of the (measured or extrapolated) perturbation backward map."""
    from ..attribution.ibix import backward_map_exact
    from ..attribution.ibix_blocks import block_scores, block_scores_exact, slic_blocks

    model, x = (_deepbet if model_name == "deepbet" else _small)(device)
    shape = tuple(x.shape[2:])
    region = np.zeros(shape, np.float32)
    c = [s // 2 for s in shape]
    region[c[0] - 4:c[0] + 4, c[1] - 4:c[1] + 4, c[2] - 4:c[2] + 4] = 1
    import torch

    region_t = torch.from_numpy(region)
    backward_map_exact(model, x, region_t)  # warm-up (allocator, TorchScript profiling runs)
    _sync(x)
    started = time.perf_counter()
    backward_map_exact(model, x, region_t)
    _sync(x)
    exact_s = time.perf_counter() - started
    blocks = slic_blocks(x[0, 0].cpu().numpy(), n_blocks)
    k = int(blocks.max()) + 1
    run_blocks = k if measure_blocks <= 0 else min(measure_blocks, k)
    run_jitters = n_jitters if measure_jitters <= 0 else min(measure_jitters, n_jitters)
    subset = np.where(blocks < run_blocks, blocks, -1)
    span = float(x.max() - x.min())
    started = time.perf_counter()
    block_scores(model, x, region_t, subset, jitter_range=0.15 * span, n_jitters=run_jitters, batch_size=batch_size)
    _sync(x)
    measured_s = time.perf_counter() - started
    measured_runs = run_blocks * 2 * run_jitters
    perturbation_s = measured_s / measured_runs * k * 2 * n_jitters
    started = time.perf_counter()
    block_scores_exact(model, x, region_t, subset, batch_size=batch_size)  # Eq. 6 per block, one JVP each
    _sync(x)
    blocks_exact_s = (time.perf_counter() - started) / run_blocks * k
    return {"model": model_name, "input_shape": shape, "device": str(x.device), "blocks": k, "n_jitters": n_jitters,
            "runs": k * 2 * n_jitters, "measured_runs": measured_runs, "measured_s": measured_s,
            "exact_s": exact_s, "perturbation_s": perturbation_s, "extrapolated": measured_runs < k * 2 * n_jitters,
            "ratio": perturbation_s / exact_s, "blocks_exact_s": blocks_exact_s,
            "blocks_ratio": perturbation_s / blocks_exact_s}


def forward_benchmark(size: int = 128, n_jitters: int = 100, measure_jitters: int = 4, device: str = "cpu",
                      batch_size: int | None = None) -> dict[str, Any]:
    """Seconds of one forward mapping with deepbet on a ``size``³ input (Colin27 resampled): the jittered map with
    2N runs (``measure_jitters`` per sign really run and extrapolated, or all with 0) and the exact JVP.

    deepbet's own pipeline resizes to 256³; its TorchScript network is fully convolutional, so the benchmark feeds
    the network itself a ``size``³ volume (the issue's 128³ case), a cube of 8³ voxels at the centre as M^x.
    """
    import torch

    from ..attribution.ibix import forward_map, forward_map_exact

    model, x = _deepbet(device)
    x = torch.nn.functional.interpolate(x, size=(size,) * 3, mode="trilinear", align_corners=False)
    net = model.network
    region = torch.zeros((size,) * 3)
    c = size // 2
    region[c - 4:c + 4, c - 4:c + 4, c - 4:c + 4] = 1
    span = float(x.max() - x.min())
    forward_map_exact(net, x, region)  # warm-up (TorchScript profiling runs)
    _sync(x)
    started = time.perf_counter()
    forward_map_exact(net, x, region)
    _sync(x)
    exact_s = time.perf_counter() - started
    run = n_jitters if measure_jitters <= 0 else min(measure_jitters, n_jitters)
    started = time.perf_counter()
    forward_map(net, x, region, jitter_range=0.15 * span, n_jitters=run, batch_size=batch_size)
    _sync(x)
    measured_s = time.perf_counter() - started
    return {"size": size, "device": str(x.device), "runs": 2 * n_jitters, "measured_runs": 2 * run,
            "measured_s": measured_s, "jittered_s": measured_s / (2 * run + 1) * (2 * n_jitters + 1),
            "exact_s": exact_s}


def convergence(shares: tuple[float, ...] = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003), n_jitters: int = 4,
                device: str = "cpu") -> list[dict[str, float]]:
    """The H → 0 curve on the shipped tissue network (nonlinear: PReLU, instance norm) and the MNI152 T1: relative
    error ‖F_H − J·M^x‖ / ‖J·M^x‖ of the jittered forward map (paper Eq. 5) against the exact JVP, H given as a
    share of the model-space intensity range; M^x is the tissue demo's white-matter ball."""
    from ..attribution.ibix import forward_map, forward_map_exact
    from ..datasets.samples import mni152_t1
    from ..pipelines.ibix import load_image_to_image, region_tensor
    from .ibix_demo import TISSUE_MODEL, TISSUE_MX_RAS, TISSUE_RADIUS_MM, _ball

    image = mni152_t1()
    image = image.with_array(image.array.astype(np.float32))
    model = load_image_to_image(TISSUE_MODEL, device=device)
    model_space = model.preprocess(image)
    x = model.to_tensor(model_space)
    region = region_tensor(model, image.with_array(_ball(image, TISSUE_MX_RAS, TISSUE_RADIUS_MM).astype(np.uint8)),
                           model_space, "M^x")
    exact = forward_map_exact(model, x, region)
    span = float(x.max() - x.min())
    rows = []
    for share in shares:
        jittered = forward_map(model, x, region, jitter_range=share * span, n_jitters=n_jitters)
        rows.append({"H_share": share, "H": share * span,
                     "rel_error": float((jittered - exact).norm() / exact.norm())})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["deepbet", "small"], default="deepbet")
    parser.add_argument("--blocks", type=int, default=500)
    parser.add_argument("--jitters", type=int, default=100)
    parser.add_argument("--measure-blocks", type=int, default=1, help="blocks really run (0: all)")
    parser.add_argument("--measure-jitters", type=int, default=4, help="jitters per sign really run (0: all N)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--forward", type=int, metavar="SIZE",
                        help="instead: time one forward mapping with deepbet on a SIZE^3 input (e.g. 128)")
    parser.add_argument("--convergence", action="store_true",
                        help="instead: the H -> 0 curve of the jittered forward map on the tissue network")
    args = parser.parse_args(argv)
    if args.forward:
        r = forward_benchmark(args.forward, args.jitters, args.measure_jitters, args.device, args.batch_size)
        how = f"extrapolated from {r['measured_runs']} runs in {r['measured_s']:.1f} s" \
            if r["measured_runs"] < r["runs"] else "all runs"
        print(f"deepbet forward mapping on {r['size']}^3 ({r['device']}): jittered, 2N = {r['runs']} runs: "
              f"{r['jittered_s']:.1f} s ({how}); exact (one JVP): {r['exact_s']:.2f} s")
        print(AUTHORS_2D_FORWARD)
        return 0
    if args.convergence:
        print("H (share of the intensity range)  H  relative error of the jittered forward map vs the exact JVP")
        for row in convergence(n_jitters=min(args.jitters, 4), device=args.device):
            print(f"{row['H_share']:<8g} {row['H']:<10.4g} {row['rel_error']:.3e}")
        return 0
    r = benchmark(args.model, args.blocks, args.jitters, args.measure_blocks, args.measure_jitters, args.device,
                  args.batch_size)
    how = f"extrapolated from {r['measured_runs']} runs in {r['measured_s']:.1f} s" if r["extrapolated"] \
        else "all blocks run"
    print(f"model {r['model']} input {r['input_shape']} on {r['device']}")
    print(f"exact backward map (one VJP, voxel resolution): {r['exact_s']:.2f} s")
    print(f"perturbation backward map, K={r['blocks']} blocks x 2N={2 * r['n_jitters']} jitters = {r['runs']} runs: "
          f"{r['perturbation_s']:.1f} s ({how})")
    print(f"ratio perturbation / exact: {r['ratio']:.0f}x")
    print(f"exact Eq. 6 per block (K={r['blocks']} JVPs): {r['blocks_exact_s']:.1f} s "
          f"({'extrapolated' if r['extrapolated'] else 'all blocks run'}); perturbation / exact blocks: "
          f"{r['blocks_ratio']:.0f}x")
    print(AUTHORS_2D)
    return 0


if __name__ == "__main__":
    sys.exit(main())
