"""Train the shipped lesion / healthy classifier (LesionCNN3d) on synthetic lesions in real brains.

Training patches: Colin27 and MNI152 (datasets/lesions.py, seed 0), augmented by random flips, axis
permutations, intensity scaling and noise. Held out: (a) the ITK k-means T1, a subject and scanner never seen
in training, and (b) new patches of Colin27 and MNI152 drawn with another seed (new positions, new lesions).
Weights are saved as float16 only if the held-out AUCs do not change.

    OMP_NUM_THREADS=1 PYTHONPATH=. python tools/train_lesion_classifier.py --minutes 10 \
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


def augment(batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Random flips and axis permutation (a lesion has no orientation), intensity scale and Gaussian noise."""
    batch = batch.permute(0, 1, *(2 + rng.permutation(3)))
    for axis in (2, 3, 4):
        if rng.uniform() < 0.5:
            batch = batch.flip(axis)
    scale = torch.tensor(rng.uniform(0.9, 1.1, (batch.shape[0], 1, 1, 1, 1)), dtype=batch.dtype)
    noise = torch.tensor(rng.normal(0, 1, batch.shape) * rng.uniform(0, 0.03), dtype=batch.dtype)
    return (batch * scale + noise).contiguous()


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
    parser.add_argument("--train-patches", type=int, default=2000)
    parser.add_argument("--test-patches", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
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
    optimiser = torch.optim.AdamW(network.parameters(), lr=2e-3, weight_decay=1e-4)
    images, labels = torch.from_numpy(train.images), torch.from_numpy(train.labels)
    deadline = start + args.minutes * 60
    step = 0
    while time.time() < deadline:
        network.train()
        index = torch.from_numpy(rng.integers(0, len(train), args.batch))
        logits = network(augment(images[index], rng))
        loss = F.cross_entropy(logits, labels[index])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        step += 1
        if step % 100 == 0:
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
                             f"--minutes {args.minutes:g} --output {args.output}")
    args.output.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in network.state_dict().items()},
               args.output / "lesion_cnn.pt")
    CONFIG.save(args.output / "lesion_cnn.json")
    (args.output / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n")
    print(json.dumps(evaluation, indent=2))


if __name__ == "__main__":
    main()
