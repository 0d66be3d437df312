#!/usr/bin/env python3
"""Held-out R² of the shipped tissue regressor through its adapter, i.e. with the config's preprocessing step
(each patch divided by its own 99.5th percentile), next to the network-level numbers the training script records.

    OMP_NUM_THREADS=1 PYTHONPATH=. python tools/evaluate_tissue_regressor_config.py

Why: the training patches were scaled by the 99.5th percentile of the whole MNI152 T1; a user's patch has only its
own. This writes ``float16_config_preprocessing`` into Resources/TissueRegressor/evaluation.json, so the README can
state what a user gets from the CLI or Slicer, not only what the bare network gets on pre-scaled patches.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import torch

from XAIExplainerLib.datasets.tissue import TISSUE_NAMES, hemisphere_patches, mni152_tissues
from XAIExplainerLib.extras.tissue_regressor import RESOURCE_DIR, WEIGHTS_FILE
from XAIExplainerLib.models.outputs import RegressionModel
from XAIExplainerLib.volume import Volume

COMMAND = "OMP_NUM_THREADS=1 PYTHONPATH=. python tools/evaluate_tissue_regressor_config.py"


def evaluate() -> dict:
    model = RegressionModel.load(WEIGHTS_FILE, device="cpu")
    maps = mni152_tissues(2.0)
    record = {}
    for name, (hemisphere, stride) in {"right_stride8": ("right", 8), "right_stride4": ("right", 4),
                                       "left_stride8_train": ("left", 8)}.items():
        x, y, _ = hemisphere_patches(maps, hemisphere, 32, stride)
        prepared = np.stack([model.preprocess(Volume(p[0], maps.t1.spacing)).array[None] for p in x])
        with torch.no_grad():
            pred = np.concatenate([model(torch.from_numpy(prepared[i:i + 64])).double().numpy()
                                   for i in range(0, len(prepared), 64)])
        truth = y.astype(np.float64)
        r2 = 1 - ((pred - truth) ** 2).sum(0) / ((truth - truth.mean(0)) ** 2).sum(0)
        record[name] = {"n_patches": int(len(x)), "r2": dict(zip(TISSUE_NAMES, r2.tolist())),
                        "mae": dict(zip(TISSUE_NAMES, np.abs(pred - truth).mean(0).tolist()))}
    return record


def main() -> int:
    path = RESOURCE_DIR / "evaluation.json"
    evaluation = json.loads(path.read_text())
    evaluation["float16_config_preprocessing"] = {"command": COMMAND, **evaluate()}
    path.write_text(json.dumps(evaluation, indent=2) + "\n")
    print(json.dumps(evaluation["float16_config_preprocessing"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
