"""Train the shipped multi-channel image-to-image demo network: MNI152 T1 → grey-matter / white-matter / CSF maps.

Why: IBIX's multi-channel case (a forward map per output channel, a backward map of one channel's region) needs a
real image-to-image pair; MNI152 2009a T1 and its tissue fractions (datasets/tissue.py) are one. The network is a
small MONAI 3D U-Net with 3 linear output channels trained with an L1 + MSE loss on random 40³ crops that lie
wholly in the LEFT hemisphere (LPS x > 0); the RIGHT hemisphere is never seen and is where it is evaluated
(per-channel MAE and R² on the intracranial voxels with x < 0). Mild intensity augmentation (gamma, contrast,
noise) lets it run on other T1 images (Colin27 in the demo). Weights are saved as float16 (the evaluation is
repeated with the float16 weights and both are recorded).

    OMP_NUM_THREADS=1 python tools/train_tissue_segmenter.py --minutes 13 \
        --output XAIExplainerLib/Resources/TissueModel
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from XAIExplainerLib.datasets.tissue import TISSUE_NAMES, mni152_tissues
from XAIExplainerLib.models.config import ModelConfig
from XAIExplainerLib.models.network import build_network
from XAIExplainerLib.models.preprocessing import preprocess
from XAIExplainerLib.volume import Volume, resample_to_reference

NAME = "tissue_unet"
CONFIG = ModelConfig(
    kind="image_to_image",
    channel_names=list(TISSUE_NAMES),
    modality="MRI",
    architecture="UNet",
    network_kwargs={"channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 1},
    axis_order="zyx",
    preprocessing=[{"transform": "Orientation", "axcodes": "RAS"},
                   {"transform": "ResampleToSpacing", "pixdim": [2.0, 2.0, 2.0]},
                   {"transform": "ForegroundPercentileScale", "lower": 0.5, "upper": 99.5},
                   {"transform": "DivisiblePad", "k": 8}],
    description="Demo 3D U-Net (MONAI UNet, 16-32-64-128 channels, 2 mm): T1 -> grey-matter, white-matter and CSF "
                "fractions (linear outputs). Trained on the left hemisphere of the MNI152 2009a T1 by "
                "tools/train_tissue_segmenter.py; evaluated on the right hemisphere. Not for clinical use.",
)
CROP = 40


def training_data(config: ModelConfig) -> tuple[Volume, np.ndarray, np.ndarray, np.ndarray]:
    """Model-space T1, the three fractions on its grid (3, z, y, x), the left-hemisphere and intracranial masks."""
    maps = mni152_tissues(2.0)
    model_space = preprocess(maps.t1, config)
    targets = np.stack([resample_to_reference(v, model_space.with_array(np.zeros(model_space.shape, np.float32)),
                                              "linear").array for v in (maps.grey_matter, maps.white_matter, maps.csf)])
    inside = resample_to_reference(maps.intracranial, model_space.with_array(np.zeros(model_space.shape, np.uint8)),
                                   "nearest").array > 0
    return model_space, targets.astype(np.float32), lps_x(model_space) > 0, inside


def lps_x(volume: Volume) -> np.ndarray:
    """Physical LPS x (mm) of every voxel centre, (z, y, x); MNI's mid-sagittal plane is x = 0, left is x > 0."""
    k, j, i = np.meshgrid(*[np.arange(n, dtype=float) for n in volume.shape], indexing="ij")
    matrix = volume.ijk_to_lps()
    return matrix[0, 0] * i + matrix[0, 1] * j + matrix[0, 2] * k + matrix[0, 3]


def crop_corners(left: np.ndarray, inside: np.ndarray, size: int) -> np.ndarray:
    """Corners (z, y, x) of every size³ crop lying wholly in the left hemisphere with ≥ 20 % intracranial voxels."""
    corners = []
    nz, ny, nx = left.shape
    for z in range(0, nz - size + 1, 2):
        for y in range(0, ny - size + 1, 2):
            for x in range(0, nx - size + 1, 2):
                box = (slice(z, z + size), slice(y, y + size), slice(x, x + size))
                if left[box].all() and inside[box].mean() >= 0.2:
                    corners.append((z, y, x))
    return np.asarray(corners)


def augment(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Gamma, contrast/brightness and noise: the intensity differences between T1 scanners and templates."""
    image = image.clamp(min=0) ** float(rng.uniform(0.8, 1.25))
    image = image * float(rng.uniform(0.9, 1.1)) + float(rng.uniform(-0.05, 0.05))
    return image + torch.randn_like(image) * float(rng.uniform(0.0, 0.03))


def batch(image: np.ndarray, targets: np.ndarray, corners: np.ndarray, n: int, rng: np.random.Generator):
    xs, ys = [], []
    for z, y, x in corners[rng.integers(len(corners), size=n)]:
        box = (slice(z, z + CROP), slice(y, y + CROP), slice(x, x + CROP))
        xs.append(augment(torch.from_numpy(image[box].copy())[None], rng))
        ys.append(torch.from_numpy(targets[(slice(None), *box)].copy()))
    return torch.stack(xs), torch.stack(ys)


def evaluate(network, image: np.ndarray, targets: np.ndarray, region: np.ndarray) -> dict:
    """Per-channel MAE and R² of the whole-volume prediction on ``region`` voxels."""
    with torch.no_grad():
        pred = network(torch.from_numpy(image)[None, None].float())[0].numpy()
    out = {}
    for c, name in enumerate(TISSUE_NAMES):
        p, t = pred[c][region], targets[c][region]
        out[name] = {"mae": round(float(np.abs(p - t).mean()), 4),
                     "r2": round(float(1 - ((p - t) ** 2).sum() / ((t - t.mean()) ** 2).sum()), 4)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("XAIExplainerLib/Resources/TissueModel"))
    parser.add_argument("--minutes", type=float, default=13.0, help="wall-clock training budget")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model_space, targets, left, inside = training_data(CONFIG)
    image = model_space.array.astype(np.float32)
    corners = crop_corners(left, inside, CROP)
    network = build_network(CONFIG)
    n_params = sum(p.numel() for p in network.parameters())
    print(f"model space {image.shape}, {len(corners)} left crops, {n_params / 1e6:.3f} M parameters", flush=True)
    optimiser = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=1e-5)
    budget, start, step = args.minutes * 60.0, time.perf_counter(), 0
    network.train()
    while time.perf_counter() - start < budget:
        lr = args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (time.perf_counter() - start) / budget)))
        for group in optimiser.param_groups:
            group["lr"] = lr
        x, y = batch(image, targets, corners, args.batch_size, rng)
        pred = network(x)
        loss = (pred - y).abs().mean() + ((pred - y) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        step += 1
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f} lr {lr:.2e} {time.perf_counter() - start:.0f} s", flush=True)
    network.eval()
    right = (~left) & inside
    metrics32 = evaluate(network, image, targets, right)
    half = {k: v.half() for k, v in network.state_dict().items()}
    network.load_state_dict({k: v.float() for k, v in half.items()})
    metrics16 = evaluate(network, image, targets, right)
    args.output.mkdir(parents=True, exist_ok=True)
    torch.save(half, args.output / f"{NAME}.pt")
    config = ModelConfig.from_dict({**CONFIG.to_dict(), "extra": {"training_steps": step}})
    config.save(args.output / f"{NAME}.json")
    record = {"data": "MNI152 2009a T1 and GM/WM/CSF fractions at 2 mm (datasets/tissue.py: mni152_tissues(2.0))",
              "training": f"random {CROP}^3 crops wholly in the left hemisphere (LPS x > 0), {step} steps of "
                          f"batch {args.batch_size}, {time.perf_counter() - start:.0f} s on the CPU",
              "evaluation_region": "right hemisphere (LPS x < 0), intracranial voxels, never seen in training",
              "evaluation_voxels": int(right.sum()),
              "caveat": "The MNI152 2009a template is symmetric: the right hemisphere is close to a mirror image of "
                        "the left, so this hold-out tests mirrored anatomy, not an unseen brain.", "metrics_float16": metrics16, "metrics_float32": metrics32,
              "parameters": int(n_params), "command": "OMP_NUM_THREADS=1 python " + " ".join(
                  ["tools/train_tissue_segmenter.py", *(argv if argv is not None else sys.argv[1:])])}
    (args.output / "evaluation.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
