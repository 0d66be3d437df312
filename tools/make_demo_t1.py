#!/usr/bin/env python3
"""Rebuild XAIExplainerLib/Resources/DemoData/Colin27_T1_3mm.nii.gz (the "Load demo" T1) and its brain mask
Colin27_brainmask_3mm.nii.gz (the Regression and IBIX section demos) from mricron-data.

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
MASK_SOURCE = Path("/usr/share/mricron/templates/ch2bet.nii.gz")
MASK_TARGET = TARGET.with_name("Colin27_brainmask_3mm.nii.gz")


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


def make_demo_brain_mask(source: Path = MASK_SOURCE, grid: Path = TARGET, target: Path = MASK_TARGET) -> Path:
    """Colin27's brain (MRIcron's skull-stripped ch2bet > 0) on the demo T1's 3 mm grid (linear, > 0.5), uint8.

    Why: the tissue networks were trained on the skull-stripped MNI152 template, so their demos feed the brain only;
    the mask is shipped (a few KB) because nilearn and mricron-data are not available inside Slicer.
    """
    brain = sitk.Cast(sitk.ReadImage(str(source)) > 0, sitk.sitkFloat32)
    reference = sitk.ReadImage(str(grid))
    on_grid = sitk.Resample(brain, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    mask = sitk.Cast(on_grid > 0.5, sitk.sitkUInt8)
    sitk.WriteImage(mask, str(target), useCompression=True, compressionLevel=9)
    return target


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--output", type=Path, default=TARGET)
    args = parser.parse_args()
    print(make_demo_t1(args.source, args.output))
    print(make_demo_brain_mask(grid=args.output, target=args.output.with_name(MASK_TARGET.name)))
