"""``xai-explainer``: segment and explain from the command line (also what the Slicer module runs in the background).

Errors that XAIExplainer raises on purpose are printed as one line (``error: ...``) with exit code 2; any other
exception is printed as one line with a hint and exit code 1 (``--debug`` before the command shows its traceback).
SIGTERM is handled like Ctrl-C, so temporary output folders are removed either way.
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import XAIExplainerError
from .options import add_common_options, add_result_json_option, write_result_json


def _segment(args: argparse.Namespace) -> int:
    from ..models import SegmentationModel
    from ..outputs import check_output_file, check_output_folder, sweep_stale_temporaries
    from ..progress import cli_progress
    from ..volume import ensure_finite, read_volume, write_volume

    # Everything that can fail without the model fails first: outputs, then the input (read, size, NaN/Inf).
    output = check_output_file(args.output, [args.input, args.model], overwrite=args.overwrite, what="output")
    if args.probabilities is not None:
        check_output_folder(args.probabilities, [args.input, args.model], overwrite=args.overwrite,
                            what="probabilities folder", exists_ok=_empty_folder(args.probabilities))
    volume = ensure_finite(read_volume(args.input))
    model = SegmentationModel.load(args.model, device=args.device)
    sweep_stale_temporaries(output.absolute().parent)
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
        for name, file, channel in zip(result.label_names, probability_files(result.label_names),
                                       result.probabilities):
            written.append(write_volume(result.labels.with_array(channel, kind="probability", label=name),
                                        folder / file))
    present = sorted({int(v) for v in result.labels.array.ravel()[:: max(1, result.labels.array.size // 200000)]})
    print(f"wrote {output} (labels: " + ", ".join(f"{i}={result.label_names[i]}" for i in present) + ")")
    if len(written) > 1:
        print(f"wrote {len(written) - 1} probability maps to {args.probabilities}")
    write_result_json(args.result_json, {"command": "segment", "labels": str(output),
                                         "label_names": [str(n) for n in result.label_names],
                                         "probabilities": [str(w) for w in written[1:]]})
    return 0


def probability_files(label_names: Sequence[str]) -> list[str]:
    """One distinct, safe file name per class: a label such as '../x' or 'a/b' must not leave the folder, and two
    labels that read the same must not overwrite each other's map (the later one gets its index appended)."""
    from ..io import safe_name

    files: list[str] = []
    for index, name in enumerate(label_names):
        file = f"probability_{safe_name(name)}.nii.gz"
        if file in files:
            file = f"probability_{safe_name(name)}_{index}.nii.gz"
        files.append(file)
    return files


def _empty_folder(path: str) -> bool:
    """An existing but empty folder may receive the probability maps without --overwrite (nothing is replaced)."""
    p = Path(path)
    return p.is_dir() and not any(p.iterdir())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xai-explainer", description="Explain 3D medical-imaging networks.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of unexpected errors")
    commands = parser.add_subparsers(dest="command", required=True)

    segment = commands.add_parser("segment", help="segment a volume with a Swin UNETR / bundle / TorchScript model")
    segment.add_argument("--input", required=True, help="NIfTI/NRRD file or DICOM folder")
    segment.add_argument("--model", required=True, help="weights (.pt + JSON), MONAI bundle folder or TorchScript")
    segment.add_argument("--output", required=True, help="label map to write (.nii.gz / .nrrd)")
    segment.add_argument("--probabilities", metavar="DIR", help="also write one probability map per class here")
    segment.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    add_result_json_option(segment)
    add_common_options(segment)
    segment.set_defaults(func=_segment)

    from ..extras import benchmark
    from . import cam, counterfactual, explain, ibix, lime, localisation, report

    for module in (explain, lime, cam, ibix, counterfactual, localisation, report, benchmark):
        module.register(commands)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (what Slicer's Cancel and most schedulers send), raised like Ctrl-C so the same cleanup runs."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While a command runs, SIGTERM unwinds the stack (removing temporary folders) instead of killing at once."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread (e.g. main() called from a worker thread)
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (0 ok, 1 scans failed or unexpected error, 2 bad input, 130/143)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _sigterm_as_interrupt():
            return int(args.func(args) or 0)
    except XAIExplainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("cancelled", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except Exception as exc:  # noqa: BLE001 - the one place where anything else becomes a readable line
        if args.debug:
            traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"error: unexpected {type(exc).__name__}: {first or '(no message)'}. This is a bug or an input the "
              "tool does not recognise; rerun with --debug for the traceback and report it.", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
