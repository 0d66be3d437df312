"""Per-class Dice of the shipped demo model on Colin27 'ch2better' (0.5 mm), a volume it was not trained on.

Caveat printed with the table: ch2better is the same brain as the Colin27 training image (a different
reconstruction at 0.5 mm), so this measures robustness to resolution/reconstruction, not generalisation to new
subjects. AAL structures resampled (nearest) onto the ch2better grid are the reference.

    python tools/evaluate_demo_model.py [--output XAIExplainerLib/Resources/DemoModel/evaluation.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from XAIExplainerLib.datasets import samples as sample_data
from XAIExplainerLib.datasets.brain_structures import STRUCTURE_NAMES, structures_from_aal
from XAIExplainerLib.extras.demo import DEMO_MODEL_PATH
from XAIExplainerLib.models import SegmentationModel
from XAIExplainerLib.volume import resample_to_reference


def dice_per_class(prediction: np.ndarray, reference: np.ndarray, n_classes: int) -> dict[int, float]:
    scores = {}
    for c in range(n_classes):
        p, r = prediction == c, reference == c
        denominator = p.sum() + r.sum()
        scores[c] = float(2 * (p & r).sum() / denominator) if denominator else float("nan")
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=DEMO_MODEL_PATH.parent / "evaluation.json")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    image = sample_data.colin27_t1_hires()
    aal, aal_names = sample_data.aal_atlas()
    reference = structures_from_aal(resample_to_reference(aal, image, "nearest").array.astype(np.int64), aal_names)
    model = SegmentationModel.load(DEMO_MODEL_PATH, device=args.device)
    start = time.perf_counter()
    result = model.segment(image, return_probabilities=False)
    seconds = time.perf_counter() - start
    scores = dice_per_class(result.labels.array, reference, len(STRUCTURE_NAMES))
    foreground = [scores[c] for c in range(1, len(STRUCTURE_NAMES))]
    report = {
        "volume": "Colin27 ch2better (0.5 mm, 301x370x316), not used in training; same subject as the ch2 training image",
        "reference": "AAL regions grouped into structures, resampled (nearest) onto the ch2better grid",
        "dice": {STRUCTURE_NAMES[c]: round(s, 4) for c, s in scores.items()},
        "mean_foreground_dice": round(float(np.mean(foreground)), 4),
        "segmentation_seconds": round(seconds, 1),
        "device": str(model.device),
        "training_steps": model.config.extra.get("training_steps"),
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print("| structure | Dice |\n|---|---|")
    for name, score in report["dice"].items():
        print(f"| {name} | {score:.3f} |")
    print(f"| **mean (13 foreground classes)** | **{report['mean_foreground_dice']:.3f}** |")
    print(f"segmentation took {seconds:.1f} s on {model.device}; wrote {args.output}")


if __name__ == "__main__":
    main()
