"""Progress reporting for the command line: a tqdm bar for people, ``PROGRESS <fraction> <message>`` lines for
the Slicer module, which reads the CLI's stdout from a background process."""
from __future__ import annotations

import sys
from typing import Callable

ProgressCallback = Callable[[float, str], None]


def cli_progress(machine_readable: bool, description: str = "") -> tuple[ProgressCallback, Callable[[], None]]:
    """Return ``(report, close)``; ``report(fraction, message)`` with fraction in [0, 1]."""
    if machine_readable:
        def report(fraction: float, message: str) -> None:
            print(f"PROGRESS {min(max(fraction, 0.0), 1.0):.4f} {message}", flush=True)

        return report, lambda: None

    from tqdm import tqdm

    bar = tqdm(total=1000, desc=description, unit="‰", file=sys.stderr, leave=False,
               bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")

    def report(fraction: float, message: str) -> None:
        bar.n = int(1000 * min(max(fraction, 0.0), 1.0))
        bar.set_postfix_str(message, refresh=True)

    return report, bar.close


PROGRESS_PREFIX = "PROGRESS "


def parse_progress_line(line: str) -> tuple[float, str] | None:
    """Inverse of the machine-readable ``report``: ``(fraction, message)`` for a ``PROGRESS`` line, else ``None``.

    The Slicer module reads the CLI's stdout line by line; any other line (results, warnings) is log text.
    """
    text = line.rstrip("\r\n")
    if not text.startswith(PROGRESS_PREFIX):
        return None
    number, _, message = text[len(PROGRESS_PREFIX):].partition(" ")
    try:
        fraction = float(number)
    except ValueError:
        return None
    if fraction != fraction:  # NaN is not a position on a progress bar
        return None
    return min(max(fraction, 0.0), 1.0), message
