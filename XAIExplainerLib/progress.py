"""Progress and cancellation callbacks: the two type aliases every long-running function takes, a tqdm bar for
people, and ``PROGRESS <fraction> <message>`` lines for the Slicer module, which reads the CLI's stdout from a
background process.

The aliases are declared here once; models, attribution methods, pipelines and the cohort runner import them.
"""
from __future__ import annotations

import sys
from typing import Callable

#: ``report(fraction, message)`` with ``fraction`` in [0, 1].
ProgressCallback = Callable[[float, str], None]
#: ``cancel() -> bool``: polled between batches; ``True`` makes the work stop with a ``CancelledError``.
CancelCallback = Callable[[], bool]


def silent(fraction: float, message: str) -> None:
    """The progress callback of a caller that passed none."""


def sub_progress(report: ProgressCallback, start: float, end: float) -> ProgressCallback:
    """A callback that maps a step's own 0..1 onto ``start..end`` of the caller's bar (one step of several)."""
    def scaled(fraction: float, message: str) -> None:
        report(start + (end - start) * float(fraction), message)

    return scaled


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
