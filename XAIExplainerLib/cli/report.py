"""``xai-explainer report``: explanation folders of any product → one self-contained, offline HTML comparison page.

Parses arguments and calls :func:`XAIExplainerLib.pipelines.report.build_report`, which checks the output path and
every folder before it renders anything and writes the page atomically.
"""
from __future__ import annotations

import argparse


def _report(args: argparse.Namespace) -> int:
    from ..pipelines.report import build_report

    out = build_report(args.inputs, args.output, ground_truth=args.ground_truth, title=args.title,
                       overwrite=args.overwrite, one_case=args.one_case)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {len(args.inputs)} folder(s))")
    return 0


def register(subparsers) -> None:
    """Add ``report`` to the ``xai-explainer`` command."""
    p = subparsers.add_parser("report", help="compare explanation folders (cases x methods x targets) in one "
                                             "self-contained HTML page")
    p.add_argument("--inputs", nargs="*", default=[], metavar="DIR",
                   help="explanation folders written by lime, explain, ibix (any mix; grouped by input content)")
    p.add_argument("--ground-truth", metavar="CSV", help="CSV with columns case,target,value (case = the input's "
                                                         "file name without extension, its path or its sha256)")
    p.add_argument("--one-case", action="store_true",
                   help="the folders must all explain one input (compare methods on one scan); else an error")
    p.add_argument("--title", default="XAIExplainer comparison report", help="page title")
    p.add_argument("--output", required=True, help="the .html file to write (its folder must exist)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.set_defaults(func=_report)
