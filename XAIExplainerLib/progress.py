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
