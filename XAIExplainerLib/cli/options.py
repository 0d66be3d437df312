"""Options and argument types shared by the command groups (kept apart so that ``main`` and ``explain`` do not
import each other)."""
from __future__ import annotations

import argparse
from typing import Any


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


def add_result_json_option(parser: argparse.ArgumentParser) -> None:
    """``--result-json PATH``: a machine-readable record of the outputs (written last, only on success)."""
    parser.add_argument("--result-json", metavar="PATH",
                        help="also write a JSON record of what was written (files, label/class names)")


def write_result_json(path: str | None, record: dict) -> None:
    """Hand what a command wrote back to a caller (the Slicer module) as JSON, not as prose it would have to parse.

    Written last and atomically (temporary file + rename), so the file exists only when the command succeeded.
    """
    if not path:
        return
    import os
    from pathlib import Path

    from ..io import write_json

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(write_json(target.with_name(target.name + ".partial"), record), target)


def add_registry_flags(parser: argparse.ArgumentParser, spec: Any, dest_prefix: str, title: str,
                       skip: tuple[str, ...] = ()) -> None:
    """One flag per registered option of ``spec`` (a MethodSpec), with its default and range in the help.

    Read from the registry when the parser is built, so a command's flags never drift from its method.
    ``skip``: options the command sets through flags of its own.
    """
    group = parser.add_argument_group(title)
    for option in spec.options:
        if option.name in skip:
            continue
        group.add_argument(option.flag, dest=dest_prefix + option.name, metavar="VALUE",
                           help=f"{option.help} (default {option.default!r}; {option.allowed()})")


def given_registry_flags(args: argparse.Namespace, spec: Any, dest_prefix: str) -> dict[str, Any]:
    """The registry flags the user gave (flags left out are absent, so a model's JSON or a default can decide)."""
    return {o.name: getattr(args, dest_prefix + o.name) for o in spec.options
            if getattr(args, dest_prefix + o.name, None) is not None}
