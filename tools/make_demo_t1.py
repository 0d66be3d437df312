#!/usr/bin/env python3
"""Rebuild XAIExplainerLib/Resources/DemoData/Colin27_T1_3mm.nii.gz (the "Load demo" T1) from mricron-data.

Why 3 mm: it is the demo model's own spacing, so nothing is lost for the demo, and the file stays ~143 KB.
Licence and provenance: see Resources/DemoData/NOTICE.txt (BSD-3-clause, Chris Rorden / MRIcron).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SOURCE = Path("/usr/share/mricron/templates/ch2.nii.gz")
TARGET = Path(__file__).resolve().parents[1] / "XAIExplainerLib" / "Resources" / "DemoData" / "Colin27_T1_3mm.nii.gz"


def make_demo_t1(source: Path = SOURCE, target: Path = TARGET, spacing: float = 3.0) -> Path:
    """Smooth (anti-alias), resample to ``spacing`` mm, keep uint8, zero the faint background (compresses)."""
    image = sitk.ReadImage(str(source))
    smooth = sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), spacing / 2.5)
    size = [int(round(n * s / spacing)) for n, s in zip(image.GetSize(), image.GetSpacing())]
    out = sitk.Resample(smooth, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), (spacing,) * 3,
                        image.GetDirection(), 0.0, sitk.sitkFloat32)
    array = np.clip(np.round(sitk.GetArrayFromImage(out)), 0, 255).astype(np.uint8)
    array[array < 8] = 0
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(out)
    sitk.WriteImage(result, str(target), useCompression=True, compressionLevel=9)
    return target


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--output", type=Path, default=TARGET)
    args = parser.parse_args()
    print(make_demo_t1(args.source, args.output))
