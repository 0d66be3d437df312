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
    from ..attribution.ibix_blocks import block_scores, slic_blocks

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
    return {"model": model_name, "input_shape": shape, "device": str(x.device), "blocks": k, "n_jitters": n_jitters,
            "runs": k * 2 * n_jitters, "measured_runs": measured_runs, "measured_s": measured_s,
            "exact_s": exact_s, "perturbation_s": perturbation_s, "extrapolated": measured_runs < k * 2 * n_jitters,
            "ratio": perturbation_s / exact_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["deepbet", "small"], default="deepbet")
    parser.add_argument("--blocks", type=int, default=500)
    parser.add_argument("--jitters", type=int, default=100)
    parser.add_argument("--measure-blocks", type=int, default=1, help="blocks really run (0: all)")
    parser.add_argument("--measure-jitters", type=int, default=4, help="jitters per sign really run (0: all N)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int)
    args = parser.parse_args(argv)
    r = benchmark(args.model, args.blocks, args.jitters, args.measure_blocks, args.measure_jitters, args.device,
                  args.batch_size)
    how = f"extrapolated from {r['measured_runs']} runs in {r['measured_s']:.1f} s" if r["extrapolated"] \
        else "all blocks run"
    print(f"model {r['model']} input {r['input_shape']} on {r['device']}")
    print(f"exact backward map (one VJP, voxel resolution): {r['exact_s']:.2f} s")
    print(f"perturbation backward map, K={r['blocks']} blocks x 2N={2 * r['n_jitters']} jitters = {r['runs']} runs: "
          f"{r['perturbation_s']:.1f} s ({how})")
    print(f"ratio perturbation / exact: {r['ratio']:.0f}x")
    print(AUTHORS_2D)
    return 0


if __name__ == "__main__":
    sys.exit(main())
