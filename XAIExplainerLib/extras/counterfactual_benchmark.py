"""Time per volume of the counterfactual optimisation (100 Adam steps): B volumes in one batch vs one by one.

    python -m XAIExplainerLib.extras.counterfactual_benchmark --volumes 8 --size 48 --fill inpainter

The classifier is a small MONAI ``Classifier`` and the inpainter an (untrained) :class:`PartialConvUNet3d` of the
default size; timing does not depend on their weights. Both runs use the same inputs and settings. Each volume has
its own loss and Adam is element-wise, so the two runs differ only by the rounding of batched kernels; Adam
normalises the gradient, so a voxel whose gradient is ~0 can still end on the other side of θ: the share of
agreeing mask voxels and the largest soft-map difference are reported.
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any


def _setup(size: int, volumes: int, device: str, seed: int) -> tuple[Any, Any, Any]:
    import torch
    from monai.networks.nets import Classifier

    from ..models.partial_conv import PartialConvUNet3d

    torch.manual_seed(seed)
    classifier = Classifier(in_shape=(1, size, size, size), classes=2, channels=(8, 16, 32, 64),
                            strides=(2, 2, 2, 2)).to(device).eval()
    for p in classifier.parameters():
        p.requires_grad_(False)
    inpainter = PartialConvUNet3d().to(device).eval()
    x = torch.rand(volumes, 1, size, size, size, device=device)
    return classifier, inpainter, x


def run_benchmark(volumes: int = 8, size: int = 48, steps: int = 100, fill: str = "inpainter",
                  device: str = "cpu", seed: int = 0) -> dict[str, Any]:
    """Seconds for the batched run and for the one-by-one loop, per volume, and whether the masks agree."""
    import torch

    from ..attribution.counterfactual import counterfactual

    classifier, inpainter, x = _setup(size, volumes, device, seed)
    options = dict(fill=fill, inpainter=inpainter, steps=steps, seed=seed)
    counterfactual(classifier, x[:1], 1, **{**options, "steps": 2})  # warm-up (allocator, cuDNN)

    def timed(fn):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return out, time.perf_counter() - start

    batched, t_batched = timed(lambda: counterfactual(classifier, x, 1, **options))
    singles, t_single = timed(lambda: [counterfactual(classifier, x[i:i + 1], 1, **options) for i in range(volumes)])
    masks = torch.stack([s.mask[0] for s in singles])
    soft = torch.stack([s.attributions[0] for s in singles])
    return {"volumes": volumes, "size": size, "steps": steps, "fill": fill, "device": device,
            "threads": torch.get_num_threads(), "batched_s_per_volume": t_batched / volumes,
            "one_by_one_s_per_volume": t_single / volumes, "speedup": t_single / t_batched,
            "mask_voxels_agreeing": float((batched.mask == masks).float().mean()),
            "soft_map_max_abs_difference": float((batched.attributions - soft).abs().max()),
            "prob_after_batched": batched.prob_after, "prob_after_one_by_one": [s.prob_after[0] for s in singles]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--volumes", type=int, default=8)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--fill", default="inpainter", choices=["inpainter", "zero", "mean", "blur"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(run_benchmark(args.volumes, args.size, args.steps, args.fill, args.device, args.seed),
                     indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
