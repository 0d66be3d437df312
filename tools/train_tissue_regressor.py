"""Train the demo tissue-fraction regressor (GM, WM, CSF of 32³ T1 patches) on the LEFT hemisphere of MNI152 and
evaluate it on the RIGHT hemisphere it never saw; ship float16 weights, a JSON config and the evaluation JSON.

Data: ``datasets.tissue.mni152_tissues(2.0)`` (MNI152 2009a T1 and GM/WM maps from nilearn, CSF derived) and
``hemisphere_patches`` (32³ patches wholly inside one hemisphere, targets = mean tissue fractions of the patch).
Training patches: left hemisphere, stride 4 (overlapping), augmented with random flips along every axis, 90°
rotations in the axial plane, a random intensity scale (±10 %) and Gaussian noise (σ 0–0.03). The loss is the mean
squared error of the targets standardised by their training mean and standard deviation, so CSF (std 0.015) counts
as much as GM (std 0.09). No early stopping or model selection on the test hemisphere: the final weights are kept.

    OMP_NUM_THREADS=1 PYTHONPATH=. python tools/train_tissue_regressor.py --minutes 12 \
        --output XAIExplainerLib/Resources/TissueRegressor
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from XAIExplainerLib.datasets.tissue import TISSUE_NAMES, hemisphere_patches, mni152_tissues
from XAIExplainerLib.extras.tissue_regressor import TissueRegressor

CONFIG = {
    "kind": "regression",
    "architecture": "XAIExplainerLib.extras.tissue_regressor:TissueRegressor",
    "network_kwargs": {"width": 8},
    "modality": "MRI",
    "axis_order": "zyx",
    "preprocessing": [{"transform": "XAIExplainerLib.extras.tissue_regressor:scale_to_percentile",
                       "percentile": 99.5}],
    "target_names": list(TISSUE_NAMES),
    "target_units": ["fraction", "fraction", "fraction"],
    "description": "Demo 3D CNN (3 conv blocks, GAP, linear; ~101k parameters) regressing the mean grey-matter, "
                   "white-matter and CSF fractions of a 32x32x32 patch of a T1 at 2 mm scaled to its 99.5th "
                   "percentile (as datasets.tissue.mni152_tissues makes it; the preprocessing step divides any "
                   "input by its own 99.5th percentile). Trained on the left hemisphere of "
                   "MNI152 2009a by tools/train_tissue_regressor.py. Not for clinical use.",
    "extra": {"input_shape_zyx": [32, 32, 32], "spacing_mm": 2.0, "cam_layers": ["block1", "block2", "block3"]},
}


def r2_scores(pred: np.ndarray, truth: np.ndarray) -> list[float]:
    """Coefficient of determination per column: 1 − SS_res / SS_tot."""
    res = ((pred - truth) ** 2).sum(0)
    tot = ((truth - truth.mean(0)) ** 2).sum(0)
    return [float(v) for v in 1.0 - res / tot]


def augment(batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flips along each axis, a random axial 90° rotation, intensity scale ±10 %, Gaussian noise σ ≤ 0.03.

    Every augmentation keeps the patch's tissue fractions unchanged (they are means over the patch)."""
    out = batch.clone()
    for axis in (2, 3, 4):
        flip = torch.rand(out.shape[0], generator=gen) < 0.5
        out[flip] = out[flip].flip(axis)
    k = int(torch.randint(0, 4, (1,), generator=gen))
    out = torch.rot90(out, k, dims=(3, 4))
    scale = 1.0 + 0.2 * (torch.rand(out.shape[0], 1, 1, 1, 1, generator=gen) - 0.5)
    sigma = 0.03 * torch.rand(out.shape[0], 1, 1, 1, 1, generator=gen)
    return out * scale + sigma * torch.randn(out.shape, generator=gen)


def predict(net: torch.nn.Module, patches: np.ndarray, batch: int = 64) -> np.ndarray:
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(patches), batch):
            out.append(net(torch.from_numpy(patches[i:i + batch])).numpy())
    return np.concatenate(out).astype(np.float64)


def train(minutes: float, seed: int, batch_size: int, lr: float) -> tuple[TissueRegressor, dict]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    maps = mni152_tissues(2.0)
    x_train, y_train, _ = hemisphere_patches(maps, "left", 32, 4)
    mean, std = y_train.mean(0), y_train.std(0)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy((y_train - mean) / std)
    net = TissueRegressor(width=8)
    with torch.no_grad():  # start the head at the training mean: standardised outputs begin near 0
        net.head.bias.copy_(torch.from_numpy(mean))
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    std_t, mean_t = torch.from_numpy(std), torch.from_numpy(mean)
    started, steps, epochs = time.perf_counter(), 0, 0
    budget = minutes * 60.0
    while time.perf_counter() - started < budget:
        net.train()
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            frac = min(1.0, (time.perf_counter() - started) / budget)
            for group in optimiser.param_groups:  # cosine decay over the time budget
                group["lr"] = lr * 0.5 * (1.0 + np.cos(np.pi * frac))
            idx = order[i:i + batch_size]
            pred = (net(augment(xt[idx], gen)) - mean_t) / std_t
            loss = torch.nn.functional.mse_loss(pred, yt[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            steps += 1
            if time.perf_counter() - started >= budget:
                break
        epochs += 1
        print(f"epoch {epochs} step {steps} loss {loss.item():.4f} {time.perf_counter() - started:.0f}s", flush=True)
    info = {"steps": steps, "epochs": epochs, "train_seconds": round(time.perf_counter() - started, 1),
            "n_train_patches": int(len(xt)), "target_mean": mean.tolist(), "target_std": std.tolist()}
    return net.eval(), info


def evaluate(net: torch.nn.Module) -> dict:
    """R², MAE and the targets' spread on the held-out right hemisphere (stride 8: the standard patches; stride 4:
    more, overlapping ones) and on the training hemisphere."""
    maps = mni152_tissues(2.0)
    record = {}
    for name, (hemisphere, stride) in {"right_stride8": ("right", 8), "right_stride4": ("right", 4),
                                       "left_stride8_train": ("left", 8)}.items():
        x, y, _ = hemisphere_patches(maps, hemisphere, 32, stride)
        pred = predict(net, x)
        record[name] = {"n_patches": int(len(x)),
                        "r2": dict(zip(TISSUE_NAMES, r2_scores(pred, y.astype(np.float64)))),
                        "mae": dict(zip(TISSUE_NAMES, np.abs(pred - y).mean(0).tolist())),
                        "target_std": dict(zip(TISSUE_NAMES, y.std(0).astype(float).tolist()))}
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    net, info = train(args.minutes, args.seed, args.batch_size, args.lr)
    float32 = evaluate(net)
    half = {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    reloaded = TissueRegressor(width=8)
    reloaded.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in half.items()})
    float16 = evaluate(reloaded.eval())
    args.output.mkdir(parents=True, exist_ok=True)
    torch.save(half, args.output / "tissue_regressor.pt")
    (args.output / "tissue_regressor.json").write_text(json.dumps(CONFIG, indent=2) + "\n")
    record = {"command": "OMP_NUM_THREADS=1 PYTHONPATH=. python " + " ".join(["tools/train_tissue_regressor.py",
                                                                             *(argv or sys.argv[1:])]),
              "weights": "float16 (the float32 numbers are those of the network before the cast)",
              "training": info, "held_out": "right hemisphere (the network saw only left-hemisphere patches)",
              "float16": float16, "float32": float32,
              "torch": torch.__version__, "python": platform.python_version()}
    (args.output / "evaluation.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(float16["right_stride8"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
