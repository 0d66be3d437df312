"""Train the shipped lesion / healthy classifier (LesionCNN3d) on synthetic lesions in real brains.

Training patches: Colin27 and MNI152 (datasets/lesions.py, seed 0). Each step draws 16³ crops of them (mostly
around a lesion when the patch has one; label 1 when the crop holds ≥ 10 lesion voxels or the whole lesion),
augmented by random flips, axis permutations, intensity scaling and noise. The network is fully convolutional
with global pooling, so crops train it 8× cheaper than whole 32³ patches, on which it is evaluated. Loss:
cross-entropy of the class plus a deep-supervision term (the ``evidence`` head predicts which cells of the last
feature map hold lesion voxels; the paper likewise pre-trained its classifier on mass/background patches). With
a few hundred CPU steps on whole patches and the class label alone, the network stayed near chance.
Held out: (a) the ITK k-means T1, a subject and scanner never seen in training, and (b) new patches of Colin27
and MNI152 drawn with another seed (new positions, new lesions). The evaluation JSON gives the AUCs of the
float32 network and of the saved float16 weights.

    OMP_NUM_THREADS=1 PYTHONPATH=. python tools/train_lesion_classifier.py --minutes 12 \
        --output XAIExplainerLib/Resources/LesionClassifier
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from XAIExplainerLib.datasets.lesions import make_patches
from XAIExplainerLib.models.config import ModelConfig
from XAIExplainerLib.models.lesion_cnn import LesionCNN3d

PATCH = 32
CROP = 16
SPACING = 2.0
CONFIG = ModelConfig(
    label_names=["healthy", "lesion"],
    modality="MRI",
    kind="classifier",
    architecture="XAIExplainerLib.models.lesion_cnn:LesionCNN3d",
    network_kwargs={"channels": [16, 32, 64]},
    spacing=(SPACING,) * 3,
    orientation="RAS",
    axis_order="zyx",
    preprocessing=[],
    output="logits",
    description=f"Lesion / healthy classifier for {PATCH}³ T1 patches at {SPACING} mm, RAS, intensities divided by "
    "the median of the subject's brain tissue (datasets/lesions.py). Trained on synthetic lesions in Colin27 and "
    "MNI152 by tools/train_lesion_classifier.py. A demonstration model, not for clinical use.",
    extra={"patch_size": PATCH, "last_conv_layer": "last_conv"},
)


def augment(batch: torch.Tensor, masks: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips and axis permutation (a lesion has no orientation; the masks follow), intensity scale, noise."""
    order = (0, 1, *(2 + rng.permutation(3)))
    batch, masks = batch.permute(*order), masks.permute(*order)
    for axis in (2, 3, 4):
        if rng.uniform() < 0.5:
            batch, masks = batch.flip(axis), masks.flip(axis)
    scale = torch.tensor(rng.uniform(0.9, 1.1, (batch.shape[0], 1, 1, 1, 1)), dtype=batch.dtype)
    noise = torch.tensor(rng.normal(0, 1, batch.shape) * rng.uniform(0, 0.03), dtype=batch.dtype)
    return (batch * scale + noise).contiguous(), masks.contiguous()


def crops(images: torch.Tensor, masks: torch.Tensor, batch: int, rng: np.random.Generator, size: int = CROP
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``batch`` random size³ crops (mostly around a lesion when the patch has one), their masks and labels.

    Label 1 when the crop holds at least 10 lesion voxels (or the whole lesion); the network is fully
    convolutional with global pooling, so it is trained on crops (8× cheaper) and applied to whole patches.
    """
    xs, ms, totals = [], [], []
    limit = images.shape[-1] - size
    for _ in range(batch):
        i = int(rng.integers(len(images)))
        voxels = torch.nonzero(masks[i, 0])
        if len(voxels) and rng.uniform() < 0.8:
            centre = voxels[int(rng.integers(len(voxels)))].numpy()
            corner = np.clip(centre - rng.integers(2, size - 2, 3), 0, limit)
        else:
            corner = rng.integers(0, limit + 1, 3)
        box = (i, slice(None), *[slice(int(c), int(c) + size) for c in corner])
        xs.append(images[box])
        ms.append(masks[box])
        totals.append(float(len(voxels)))
    x, m = torch.stack(xs), torch.stack(ms)
    counts = m.flatten(1).sum(1)
    needed = torch.minimum(torch.tensor(totals), torch.tensor(10.0))
    labels = ((counts > 0) & (counts >= needed)).long()
    return x, m, labels


def predict(network: torch.nn.Module, images: np.ndarray, dtype: torch.dtype = torch.float32) -> np.ndarray:
    """Lesion probabilities, in batches of 32."""
    network.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), 32):
            x = torch.from_numpy(images[start:start + 32]).to(dtype)
            out.append(torch.softmax(network.to(dtype)(x).float(), 1)[:, 1].numpy())
    network.float()
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--train-patches", type=int, default=1200)
    parser.add_argument("--test-patches", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32, help="16³ crops per step")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--output", type=Path, default=Path("XAIExplainerLib/Resources/LesionClassifier"))
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    start = time.time()
    train = make_patches(("colin27", "mni152"), args.train_patches, PATCH, seed=0, spacing_mm=SPACING)
    held = {"kmeans_subject": make_patches(("kmeans",), args.test_patches, PATCH, seed=2, spacing_mm=SPACING),
            "new_seed_colin27_mni152": make_patches(("colin27", "mni152"), args.test_patches, PATCH, seed=1,
                                                    spacing_mm=SPACING)}
    print(f"data ready in {time.time() - start:.0f} s", flush=True)
    network = LesionCNN3d(channels=CONFIG.network_kwargs["channels"])
    optimiser = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=1e-4)
    images = torch.from_numpy(train.images)
    lesion_masks = torch.from_numpy(train.lesion_masks[:, None].astype(np.float32))
    deadline = start + args.minutes * 60
    step = 0
    while time.time() < deadline:
        network.train()
        x, masks, crop_labels = crops(images, lesion_masks, args.batch, rng)
        x, masks = augment(x, masks, rng)
        features = network.feature_map(x)
        cells = F.max_pool3d(masks, 4)  # which 4³-voxel cells of the feature map hold lesion voxels
        loss = F.cross_entropy(network.classify(features), crop_labels) + \
            F.binary_cross_entropy_with_logits(network.evidence(features), cells)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        step += 1
        if step % 200 == 0:
            auc = roc_auc_score(held["kmeans_subject"].labels, predict(network, held["kmeans_subject"].images))
            print(f"step {step} loss {loss.item():.3f} kmeans AUC {auc:.3f} ({time.time() - start:.0f} s)", flush=True)
    evaluation = {"training_steps": step, "training_patches": len(train), "batch": args.batch,
                  "patch": f"{PATCH}^3 at {SPACING} mm", "training_subjects": ["colin27", "mni152"], "auc": {}}
    for name, patches in held.items():
        p32 = predict(network, patches.images)
        evaluation["auc"][name] = {"float32": round(float(roc_auc_score(patches.labels, p32)), 4),
                                   "patches": len(patches), "lesion_patches": int(patches.labels.sum()),
                                   "accuracy_at_0.5": round(float(np.mean((p32 > 0.5) == patches.labels)), 4)}
    half = LesionCNN3d(channels=CONFIG.network_kwargs["channels"])
    half.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in network.state_dict().items()})
    for name, patches in held.items():
        evaluation["auc"][name]["float16_weights"] = round(float(roc_auc_score(patches.labels,
                                                                               predict(half, patches.images))), 4)
    evaluation["seconds"] = round(time.time() - start, 1)
    evaluation["command"] = ("OMP_NUM_THREADS=1 PYTHONPATH=. python tools/train_lesion_classifier.py "
                             f"--minutes {args.minutes:g} --lr {args.lr:g} --output {args.output}")
    args.output.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in network.state_dict().items()},
               args.output / "lesion_cnn.pt")
    CONFIG.save(args.output / "lesion_cnn.json")
    (args.output / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n")
    print(json.dumps(evaluation, indent=2))


if __name__ == "__main__":
    main()
