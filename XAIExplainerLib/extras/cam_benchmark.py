"""Time Grad-CAM++ for all targets: ours (one forward, one partial backward per target) against MONAI's
``GradCAMpp`` (one forward and backward per target), on the shipped tissue regressor.

    OMP_NUM_THREADS=1 python -m XAIExplainerLib.extras.cam_benchmark --size 64 --repeat 3

Prints the median seconds of each and the maps' agreement. The tissue regressor has a GAP head, so MONAI's α and
the paper's coincide and MONAI's un-normalised map would be exp(score) times ours — but MONAI adds ε = 1e-7 to α's
denominator ``2g² + ΣA·g³``, and with gradients of ~1e-5 (a GAP over 16³ voxels at 64³) ε dominates g², so the
correlation falls to ~0.92–0.98 (with ε = 0 its formula equals ours to 1e-12). Ours cancels g² and has no ε.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64, help="cubic input size (the network takes any size)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    import torch
    from monai.visualize import GradCAMpp

    from ..attribution import RegressionScore, gradcampp
    from ..models.outputs import RegressionModel
    from .tissue_regressor import CAM_LAYER, WEIGHTS_FILE

    model = RegressionModel.load(WEIGHTS_FILE, device="cpu")
    net = model.network
    x = torch.rand((1, 1) + (args.size,) * 3, generator=torch.Generator().manual_seed(0))
    target = RegressionScore.build("higher", model.target_names)
    ours_t, monai_t = [], []
    for _ in range(args.repeat):
        started = time.perf_counter()
        ours = gradcampp(model, x, target, layers=CAM_LAYER)
        ours_t.append(time.perf_counter() - started)
        started = time.perf_counter()
        cam = GradCAMpp(nn_module=net, target_layers=CAM_LAYER)
        # frozen weights as ours (no weight gradients); the input carries the graph MONAI's hooks need
        theirs = [cam.compute_map(x.clone().requires_grad_(True), class_idx=k)[0, 0].detach()
                  for k in range(len(model.target_names))]
        monai_t.append(time.perf_counter() - started)
    corr = [float(np.corrcoef(ours.layer_maps[CAM_LAYER][k].clamp_min(0).flatten().numpy(),
                              theirs[k].flatten().numpy())[0, 1]) for k in range(len(theirs))]
    print(f"input {args.size}^3, {len(model.target_names)} targets, layer {CAM_LAYER}, torch threads "
          f"{torch.get_num_threads()}, median of {args.repeat}")
    print(f"  ours  (1 forward + {len(theirs)} partial backward): {statistics.median(ours_t):.3f} s")
    print(f"  MONAI GradCAMpp ({len(theirs)} x forward + backward): {statistics.median(monai_t):.3f} s")
    print("  correlation of the un-normalised layer maps per target: " + ", ".join(f"{c:.6f}" for c in corr))
    return 0


if __name__ == "__main__":
    sys.exit(main())
