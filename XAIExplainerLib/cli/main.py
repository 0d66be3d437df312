"""``xai-explainer``: segment and explain from the command line (also what the Slicer module runs in the background).

Errors that XAIExplainer raises on purpose are printed as one line (``error: ...``) with exit code 2; anything else
is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from ..errors import XAIExplainerError


def _segment(args: argparse.Namespace) -> int:
    from ..models import SegmentationModel
    from ..progress import cli_progress
    from ..volume import ensure_finite, read_volume, write_volume

    output = Path(args.output)
    volume = ensure_finite(read_volume(args.input))  # fail before the model loads and the progress bar starts
    model = SegmentationModel.load(args.model, device=args.device)
    report, close = cli_progress(args.progress_lines, "segment")
    try:
        result = model.segment(volume, progress=report, return_probabilities=args.probabilities is not None)
    finally:
        close()
    # All outputs are rendered in memory first; files are written (atomically) only once everything succeeded.
    write_volume(result.labels, output)
    written = [output]
    if args.probabilities is not None:
        folder = Path(args.probabilities)
        for name, channel in zip(result.label_names, result.probabilities):
            written.append(write_volume(result.labels.with_array(channel, kind="probability", label=name),
                                        folder / f"probability_{name}.nii.gz"))
    present = sorted({int(v) for v in result.labels.array.ravel()[:: max(1, result.labels.array.size // 200000)]})
    print(f"wrote {output} (labels: " + ", ".join(f"{i}={result.label_names[i]}" for i in present) + ")")
    if len(written) > 1:
        print(f"wrote {len(written) - 1} probability maps to {args.probabilities}")
    write_result_json(args.result_json, {"command": "segment", "labels": str(output),
                                         "label_names": [str(n) for n in result.label_names],
                                         "probabilities": [str(w) for w in written[1:]]})
    return 0


def write_result_json(path: str | None, record: dict) -> None:
    """Hand what a command wrote back to a caller (the Slicer module) as JSON, not as prose it would have to parse.

    Written last and atomically (temporary file + rename), so the file exists only when the command succeeded.
    """
    if not path:
        return
    import json
    import os

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(json.dumps(record, indent=2, sort_keys=True))
    os.replace(partial, target)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xai-explainer", description="Explain 3D medical-imaging networks.")
    commands = parser.add_subparsers(dest="command", required=True)

    segment = commands.add_parser("segment", help="segment a volume with a Swin UNETR / bundle / TorchScript model")
    segment.add_argument("--input", required=True, help="NIfTI/NRRD file or DICOM folder")
    segment.add_argument("--model", required=True, help="weights (.pt + JSON), MONAI bundle folder or TorchScript")
    segment.add_argument("--output", required=True, help="label map to write (.nii.gz / .nrrd)")
    segment.add_argument("--probabilities", metavar="DIR", help="also write one probability map per class here")
    add_result_json_option(segment)
    add_common_options(segment)
    segment.set_defaults(func=_segment)

    from ..extras import benchmark
    from . import explain

    for module in (explain, benchmark):
        module.register(commands)
    return parser


def add_result_json_option(parser: argparse.ArgumentParser) -> None:
    """``--result-json PATH``: a machine-readable record of the outputs (written last, only on success)."""
    parser.add_argument("--result-json", metavar="PATH",
                        help="also write a JSON record of what was written (files, label/class names)")


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Options every long-running command shares."""
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--progress-lines", action="store_true",
                        help="print 'PROGRESS <fraction> <message>' lines instead of a progress bar (for Slicer)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except XAIExplainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
