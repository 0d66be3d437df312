"""Options and argument types shared by the command groups (kept apart so that ``main`` and ``explain`` do not
import each other)."""
from __future__ import annotations

import argparse


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Options every long-running command shares."""
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--progress-lines", action="store_true",
                        help="print 'PROGRESS <fraction> <message>' lines instead of a progress bar (for Slicer)")
    add_debug_option(parser)


def add_debug_option(parser: argparse.ArgumentParser) -> None:
    """``--debug`` after the command too; SUPPRESS keeps the subcommand from resetting a ``--debug`` given before it."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of unexpected errors")


def positive_int(text: str) -> int:
    """argparse type: counts (batch size, workers, top-k, scans) are refused when < 1 before anything loads."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def share(text: str) -> float:
    """argparse type: a share of the mass in (0, 1] (the graph threshold)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got '{text}'") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value
