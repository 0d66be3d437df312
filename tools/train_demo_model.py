"""Train the shipped demo Swin UNETR: 14 coarse brain structures (from AAL) on real T1 MRI.

Training images: Colin27 (with and without skull) and the MNI152 2009a T1, all in MNI space so the AAL atlas
labels each of them (on MNI152 the labels are only approximately right: AAL was drawn on Colin27). Heavy
augmentation (random affine, gamma, bias field, noise, contrast) stands in for the missing cohort. The model is
small (feature_size 12) and works at 3 mm so that it trains on a CPU; on a GPU, raise --minutes.

    python tools/train_demo_model.py --minutes 40 --output XAIExplainerLib/Resources/DemoModel
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from XAIExplainerLib.datasets import samples as sample_data
from XAIExplainerLib.datasets.brain_structures import STRUCTURE_NAMES, structures_from_aal
from XAIExplainerLib.models.config import ModelConfig
from XAIExplainerLib.models.network import build_network
from XAIExplainerLib.models.preprocessing import preprocess
from XAIExplainerLib.volume import Volume, resample_to_reference

DEMO_CONFIG = ModelConfig(
    label_names=STRUCTURE_NAMES,
    modality="MRI",
    axis_order="zyx",
    feature_size=12,
    spacing=(3.0, 3.0, 3.0),
    roi_size=(64, 64, 64),
    overlap=0.25,
    description="Demo Swin UNETR (feature_size 12, 3 mm) for 13 coarse brain structures derived from AAL, trained "
    "on Colin27 and MNI152 T1 with heavy augmentation by tools/train_demo_model.py. Not for clinical use.",
)


def training_pairs(config: ModelConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, labels) arrays in model space for each training volume."""
    aal, aal_names = sample_data.aal_atlas()
    pairs = []
    for image in (sample_data.colin27_t1(), sample_data.colin27_t1_brain(), sample_data.mni152_t1()):
        model_space = preprocess(image, config)
        labels_on_image = resample_to_reference(aal, model_space, "nearest")
        structures = structures_from_aal(labels_on_image.array.astype(np.int64), aal_names)
        pairs.append((model_space.array, structures))
    return pairs


def pad_to(array: np.ndarray, size: int, value: float) -> np.ndarray:
    pads = [(max(0, size - s) // 2, max(0, size - s) - max(0, size - s) // 2) for s in array.shape]
    return np.pad(array, pads, constant_values=value)


def random_affine(image: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate (±12°), scale (±12 %) and shift (±4 voxels) image and one-hot-free labels together."""
    angles = np.deg2rad(rng.uniform(-12, 12, 3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rot = (
        np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    )
    matrix = rot @ np.diag(rng.uniform(0.88, 1.12, 3))
    shift = rng.uniform(-4, 4, 3) * 2.0 / np.array(image.shape[-3:])
    theta = torch.tensor(np.concatenate([matrix, shift[:, None]], 1)[None], dtype=torch.float32)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    warped = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    warped_labels = F.grid_sample(labels.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return warped, warped_labels.long()


def random_intensity(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Gamma, smooth multiplicative bias field, contrast/brightness and Gaussian noise."""
    image = image.clamp(min=0) ** float(rng.uniform(0.7, 1.5))
    d, h, w = image.shape[-3:]
    coarse = torch.tensor(rng.uniform(0.8, 1.2, (1, 1, 3, 3, 3)), dtype=torch.float32)
    bias = F.interpolate(coarse, size=(d, h, w), mode="trilinear", align_corners=True)
    image = image * bias * float(rng.uniform(0.85, 1.15)) + float(rng.uniform(-0.08, 0.08))
    image = image + torch.randn(image.shape, generator=torch.Generator().manual_seed(int(rng.integers(2**31)))) * float(rng.uniform(0, 0.05))
    return image.clamp(0, 1)


def sample_batch(pairs, batch_size: int, roi: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for _ in range(batch_size):
        image, label = pairs[int(rng.integers(len(pairs)))]
        image_t = torch.from_numpy(pad_to(image, roi, 0.0))[None, None]
        label_t = torch.from_numpy(pad_to(label, roi, 0).astype(np.int64))[None, None]
        image_t, label_t = random_affine(image_t, label_t, rng)
        starts = [int(rng.integers(0, s - roi + 1)) for s in image_t.shape[-3:]]
        crop = tuple(slice(s, s + roi) for s in starts)
        images.append(random_intensity(image_t[(..., *crop)], rng))
        labels.append(label_t[(..., *crop)])
    return torch.cat(images), torch.cat(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("XAIExplainerLib/Resources/DemoModel"))
    parser.add_argument("--minutes", type=float, default=40.0, help="wall-clock training budget")
    parser.add_argument("--max-steps", type=int, default=100000)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the weights in --output (their step count is kept in the JSON)")
    args = parser.parse_args()

    from monai.losses import DiceCELoss

    from XAIExplainerLib.device import resolve_device

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    device = resolve_device(args.device)
    config = DEMO_CONFIG
    pairs = training_pairs(config)
    print("training volumes (model space):", [p[0].shape for p in pairs], flush=True)
    network = build_network(config).to(device)
    print(f"parameters: {sum(p.numel() for p in network.parameters()) / 1e6:.2f} M", flush=True)
    previous_steps = 0
    if args.resume:
        network.load_state_dict(torch.load(args.output / "swin_unetr_brain.pt", map_location=device))
        previous_steps = int(ModelConfig.load(args.output / "swin_unetr_brain.json").extra.get("training_steps", 0))
        print(f"resumed after {previous_steps} steps", flush=True)
    optimiser = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=1e-5)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    budget = args.minutes * 60.0
    start = time.perf_counter()
    step = 0
    network.train()
    while step < args.max_steps and time.perf_counter() - start < budget:
        # Cosine decay over the time budget: the step count is unknown on a shared CPU.
        lr = args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (time.perf_counter() - start) / budget)))
        for group in optimiser.param_groups:
            group["lr"] = max(lr, args.lr * 0.02)
        images, labels = sample_batch(pairs, args.batch_size, config.roi_size[0], rng)
        loss = loss_fn(network(images.to(device)), labels.to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        step += 1
        if step % 10 == 0:
            print(f"step {step} loss {loss.item():.4f} lr {lr:.2e} elapsed {time.perf_counter() - start:.0f}s", flush=True)
            if step % 50 == 0:
                save(network, config, args.output, previous_steps + step)
    save(network, config, args.output, previous_steps + step)
    print(f"done: {step} steps in {time.perf_counter() - start:.0f}s", flush=True)


def save(network: torch.nn.Module, config: ModelConfig, folder: Path, steps: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    tmp = folder / "swin_unetr_brain.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(folder / "swin_unetr_brain.pt")
    config.extra = {**config.extra, "training_steps": steps, "training_script": "tools/train_demo_model.py"}
    config.save(folder / "swin_unetr_brain.json")


if __name__ == "__main__":
    main()
