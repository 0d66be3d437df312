"""Train the shipped partial-convolution inpainter (PartialConvUNet3d) on healthy brain patches only.

Patches: Colin27 and MNI152 without lesions (datasets/lesions.py, seed 10), random flips/permutations; holes as
the paper (datasets.lesions.random_holes: single and clustered cubes) plus, half the time, a lesion-shaped
ellipsoid (the regions counterfactual masks become). Loss: Liu et al.'s per-voxel terms, 6·L1(hole) + L1(valid)
+ 0.1·TV of the composite (no perceptual/style terms: there is no pretrained 3D feature network to take them
from). Two phases as the paper: with batch norm in the encoder, then with the encoder's batch norm frozen at a
lower learning rate. Evaluation on held-out healthy patches of the ITK k-means T1 (another subject and scanner):
mean absolute error inside the holes, against filling the holes with the mean of the known voxels and with a
Gaussian blur of the holed image.

    OMP_NUM_THREADS=1 PYTHONPATH=. python tools/train_inpainter.py --minutes 11 \
        --output XAIExplainerLib/Resources/Inpainter
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from XAIExplainerLib.datasets.lesions import add_lesion, load_subject, make_patches, random_holes
from XAIExplainerLib.models.partial_conv import PartialConvUNet3d, composite, load_inpainter, save_inpainter

PATCH = 32
SPACING = 2.0
ARCH = {"depth": 4, "base_channels": 8, "max_channels": 64}


def hole_batch(n: int, rng: np.random.Generator, tissue: np.ndarray | None = None) -> torch.Tensor:
    """(n, 1, s, s, s) float holes: random cubes, half the time joined by a lesion-shaped ellipsoid."""
    holes = []
    for i in range(n):
        h = random_holes(PATCH, rng)
        if rng.uniform() < 0.5:
            region = tissue[i] if tissue is not None else np.ones((PATCH,) * 3, np.uint8)
            made = add_lesion(np.ones((PATCH,) * 3, np.float32), region, SPACING, rng)
            if made is not None:
                h = np.maximum(h, made[1])
        holes.append(h)
    return torch.from_numpy(np.stack(holes)[:, None].astype(np.float32))


def augment(batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    batch = batch.permute(0, 1, *(2 + rng.permutation(3)))
    for axis in (2, 3, 4):
        if rng.uniform() < 0.5:
            batch = batch.flip(axis)
    return batch.contiguous()


def loss_fn(net: PartialConvUNet3d, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    valid = 1 - hole
    out = net(image * valid, valid)
    hole_l1 = ((out - image).abs() * hole).mean()
    valid_l1 = ((out - image).abs() * valid).mean()
    comp = composite(image, out, hole)
    tv = sum((comp.diff(dim=a).abs()).mean() for a in (2, 3, 4))
    return 6 * hole_l1 + valid_l1 + 0.1 * tv


def blur(image: torch.Tensor, valid: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """Normalised convolution: Gaussian of the known voxels divided by the Gaussian of the mask."""
    from XAIExplainerLib.attribution.counterfactual import _gaussian_blur

    return _gaussian_blur(image * valid, sigma) / _gaussian_blur(valid, sigma).clamp_min(1e-6)


def evaluate(net: PartialConvUNet3d, images: np.ndarray, holes: torch.Tensor) -> dict[str, float]:
    """Hole MAE (intensity units: tissue median = 1) of the inpainter, the mean fill and a normalised blur."""
    x = torch.from_numpy(images)
    valid = 1 - holes
    with torch.no_grad():
        out = torch.cat([net(x[i:i + 16] * valid[i:i + 16], valid[i:i + 16]) for i in range(0, len(x), 16)])
    known_mean = (x * valid).sum(dim=(2, 3, 4), keepdim=True) / valid.sum(dim=(2, 3, 4), keepdim=True)
    n = holes.sum()
    return {"inpainter": float(((out - x).abs() * holes).sum() / n),
            "mean_fill": float(((known_mean - x).abs() * holes).sum() / n),
            "normalised_blur_fill": float(((blur(x, valid) - x).abs() * holes).sum() / n),
            "hole_fraction": float(holes.mean())}


def train_phase(net, images, tissue, rng, seconds, lr, batch, log) -> int:
    optimiser = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    net.train()
    end, step = time.time() + seconds, 0
    while time.time() < end:
        idx = rng.integers(0, len(images), batch)
        stacked = torch.cat([torch.from_numpy(images[idx]), hole_batch(batch, rng, tissue[idx])[:, :1]], 1)
        stacked = augment(stacked, rng)
        loss = loss_fn(net, stacked[:, :1], stacked[:, 1:])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        step += 1
        if step % 50 == 0:
            log(f"step {step} loss {loss.item():.4f}")
    net.eval()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=11.0, help="training time, split 3:1 between the phases")
    parser.add_argument("--train-patches", type=int, default=800)
    parser.add_argument("--test-patches", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--output", type=Path, default=Path("XAIExplainerLib/Resources/Inpainter"))
    args = parser.parse_args()
    start = time.time()
    log = lambda text: print(f"[{time.time() - start:5.0f} s] {text}", flush=True)  # noqa: E731
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    train = make_patches(("colin27", "mni152"), args.train_patches, PATCH, seed=10, lesion_fraction=0.0)
    tissue = np.stack([load_subject(s).tissue[tuple(slice(c, c + PATCH) for c in corner)]
                       for s, corner in zip(train.subjects, train.corners)])
    test = make_patches(("kmeans",), args.test_patches, PATCH, seed=11, lesion_fraction=0.0)
    test_tissue = np.stack([load_subject("kmeans").tissue[tuple(slice(c, c + PATCH) for c in corner)]
                            for corner in test.corners])
    test_holes = hole_batch(len(test), np.random.default_rng(12), test_tissue)
    log(f"data ready: {len(train)} training, {len(test)} test patches")
    net = PartialConvUNet3d(**ARCH, batch_norm_in_encoder=True)
    seconds = args.minutes * 60
    steps1 = train_phase(net, train.images, tissue, rng, 0.75 * seconds, 1e-3, args.batch, log)
    phase1 = evaluate(net, test.images, test_holes)
    log(f"phase 1 ({steps1} steps): {phase1}")
    net.batch_norm_in_encoder = False
    steps2 = train_phase(net, train.images, tissue, rng, 0.25 * seconds, 2e-4, args.batch, log)
    phase2 = evaluate(net, test.images, test_holes)
    log(f"phase 2 ({steps2} steps): {phase2}")
    args.output.mkdir(parents=True, exist_ok=True)
    weights = save_inpainter(net, args.output / "inpainter.pt", dtype="float16", extra={
        "patch_size": PATCH, "spacing_mm": SPACING, "intensity": "T1 divided by the subject's tissue median",
        "description": "3D partial-convolution U-Net trained on healthy Colin27/MNI152 patches by "
                       "tools/train_inpainter.py; a demonstration model."})
    half = evaluate(load_inpainter(weights), test.images, test_holes)
    evaluation = {
        "test": f"{len(test)} healthy {PATCH}^3 patches of the ITK k-means T1 (not a training subject), holes "
                "from random_holes + lesion-shaped ellipsoids (seed 12)",
        "hole_mae_after_phase1_bn": phase1, "hole_mae_after_phase2_frozen_bn": phase2,
        "hole_mae_float16_weights": half, "steps": {"phase1": steps1, "phase2": steps2}, "batch": args.batch,
        "training_patches": len(train), "seconds": round(time.time() - start, 1),
        "command": f"OMP_NUM_THREADS=1 PYTHONPATH=. python tools/train_inpainter.py --minutes {args.minutes:g} "
                   f"--output {args.output}"}
    (args.output / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n")
    print(json.dumps(evaluation, indent=2))


if __name__ == "__main__":
    main()
