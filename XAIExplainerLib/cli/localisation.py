"""``xai-explainer evaluate-localisation``: D, H, A and O of any saliency maps against ground-truth masks (issue 14).

Maps are given as ``METHOD=FILE``, one per case and method, in the order of the ``--ground-truth`` files:
``--maps ours=a1.nii.gz ours=a2.nii.gz cam=c1.nii.gz cam=c2.nii.gz --ground-truth g1.nii.gz g2.nii.gz``.
A map holding only 0 and 1 is a mask and is used as it is; any other map is thresholded at each percentile of
``--threshold-percentiles`` (over the organ mask when one is given). The CSV has one row per case, percentile
and method: D and H in mm, A (with ``--organ-mask``) and the overlap coefficient ``O_<other>`` with each other
method's mask. Every file is read and checked before the CSV is written (atomically).
"""
from __future__ import annotations

import argparse
import math
import os
import uuid
from pathlib import Path
from typing import Any

from ..errors import InvalidVolumeError


def _parse_maps(entries: list[str], cases: int) -> dict[str, list[str]]:
    """``METHOD=FILE`` entries → method → files, one per case, in the order given."""
    maps: dict[str, list[str]] = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise InvalidVolumeError(f"--maps entry {entry!r} must read METHOD=FILE, e.g. ours=mask.nii.gz.")
        maps.setdefault(name, []).append(path)
    for name, files in maps.items():
        if len(files) != cases:
            raise InvalidVolumeError(f"Method '{name}' has {len(files)} map(s) but there are {cases} ground-truth "
                                     "mask(s); give one map per method and case, in the ground-truth order.")
    return maps


def _read_case(truth_path: str, map_paths: dict[str, str], organ_path: str | None) -> tuple[Any, dict, Any]:
    from ..volume import ensure_finite, read_volume, require_same_grid

    truth = read_volume(truth_path)
    if not (truth.array > 0).any():
        raise InvalidVolumeError(f"The ground-truth mask '{truth_path}' is empty; every case needs a finding.")
    maps = {}
    for name, path in map_paths.items():
        volume = ensure_finite(read_volume(path), f"map '{path}'")
        require_same_grid(truth, volume, f"map '{path}'")
        maps[name] = volume.array
    organ = None
    if organ_path is not None:
        organ_volume = read_volume(organ_path)
        require_same_grid(truth, organ_volume, f"organ mask '{organ_path}'")
        organ = organ_volume.array
    return truth, maps, organ


def evaluate_files(truths: list[str], maps: dict[str, list[str]], organs: list[str] | None,
                   percentiles: list[float]) -> tuple[list[str], list[list[Any]]]:
    """The CSV header and rows for every case, percentile and method."""
    from ..metrics_localisation import compare_masks, masks_at_percentiles

    methods = list(maps)
    header = ["case", "ground_truth", "method", "percentile", "D_mm", "H_mm"] + (["A"] if organs else []) + \
        [f"O_{m}" for m in methods]
    rows: list[list[Any]] = []
    for case, truth_path in enumerate(truths):
        truth, arrays, organ = _read_case(truth_path, {m: maps[m][case] for m in methods},
                                          organs[case] if organs else None)
        for percentile, masks in masks_at_percentiles(arrays, percentiles, organ):
            scores = compare_masks(masks, truth.array, truth.spacing, organ)
            for method in methods:
                row = scores[method]
                rows.append([case, truth_path, method, "" if percentile is None else f"{percentile:g}",
                             *(_fmt(row[k]) for k in ("D", "H")), *([_fmt(row["A"])] if organs else []),
                             *(_fmt(row.get(f"O_{m}", 1.0)) for m in methods)])
    return header, rows


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.6g}"


def _evaluate(args: argparse.Namespace) -> int:
    from ..io import write_csv
    from ..outputs import check_not_an_input, check_writable_parent

    output = Path(args.output)
    inputs = list(args.ground_truth) + [e.partition("=")[2] for e in args.maps] + list(args.organ_mask or [])
    check_not_an_input(output, inputs, "output CSV")
    if output.suffix.lower() != ".csv":
        raise InvalidVolumeError(f"--output must be a .csv file, got '{output}'.")
    if output.exists() and not args.overwrite:
        from ..errors import OutputExistsError

        raise OutputExistsError(f"The output CSV '{output}' already exists; choose another name or pass --overwrite.")
    check_writable_parent(output, "output CSV")
    if args.organ_mask and len(args.organ_mask) != len(args.ground_truth):
        raise InvalidVolumeError(f"{len(args.organ_mask)} organ mask(s) for {len(args.ground_truth)} case(s); give "
                                 "one --organ-mask per --ground-truth file, in the same order.")
    for p in args.threshold_percentiles:
        if not 0 <= p < 100:
            raise InvalidVolumeError(f"Threshold percentiles must lie in [0, 100), got {p}.")
    maps = _parse_maps(args.maps, len(args.ground_truth))
    header, rows = evaluate_files(list(args.ground_truth), maps, args.organ_mask, list(args.threshold_percentiles))
    temporary = output.with_name(f".{output.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        write_csv(temporary, header, rows)
        os.replace(temporary, output)
    finally:
        temporary.unlink(missing_ok=True)
    print(f"wrote {output} ({len(rows)} rows: {len(args.ground_truth)} case(s) × {len(maps)} method(s))")
    return 0


def register(subparsers) -> None:
    """Add ``evaluate-localisation`` to the ``xai-explainer`` command."""
    p = subparsers.add_parser("evaluate-localisation",
                              help="D/H/A/O (Major et al.) of saliency maps or masks against ground-truth masks")
    p.add_argument("--maps", nargs="+", required=True, metavar="METHOD=FILE",
                   help="one map per method and case, cases in the --ground-truth order (0/1 maps are masks)")
    p.add_argument("--ground-truth", nargs="+", required=True, metavar="FILE", help="ground-truth masks, one per case")
    p.add_argument("--threshold-percentiles", nargs="+", type=float, default=[50.0, 75.0, 90.0], metavar="P",
                   help="continuous maps become masks of the voxels above these percentiles (default 50 75 90)")
    p.add_argument("--organ-mask", nargs="+", metavar="FILE",
                   help="organ (e.g. brain) masks, one per case: percentiles are taken inside it, and A is computed")
    p.add_argument("--output", required=True, help="CSV file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    p.set_defaults(func=_evaluate)
