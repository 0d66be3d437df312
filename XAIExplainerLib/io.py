"""Result files: atomic output folders, file-safe names, CSV and JSON writing, and reading them back with clear errors.

Every product (one scan's explanation, a cohort aggregate, the Slicer module's background runs) writes through
:func:`atomic_output_folder`, so a folder on disk is either absent, untouched or complete — never half written —
and reads back through :func:`read_json` / :func:`read_result_volume`, so a damaged folder is a named
:class:`~XAIExplainerLib.errors.VolumeReadError` saying which file is wrong, not a ``KeyError`` later.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .errors import OutputExistsError, VolumeReadError
from .volume import Volume, read_volume

__all__ = ["atomic_output_folder", "read_json", "read_result_volume", "safe_name", "write_csv", "write_json",
           "write_matrix_csv"]

#: What to tell a user whose folder is missing a file (callers with other folders pass their own hint).
RESULT_FOLDER_HINT = "pass a folder written by `xai-explainer explain` (or save_explanation)"


def safe_name(name: str) -> str:
    """A file-name-safe version of a class or RoI name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "unnamed"


@contextlib.contextmanager
def atomic_output_folder(out_dir: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; rename it to ``out_dir`` only when the block finishes without error.

    A failure removes the temporary folder, so ``out_dir`` is either absent, untouched, or complete.
    """
    out = Path(out_dir).absolute()
    if out.exists() and not overwrite:
        raise OutputExistsError(f"The output folder '{out}' already exists. Choose another folder or pass overwrite.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            if not overwrite:
                raise OutputExistsError(f"The output folder '{out}' appeared while writing; nothing was replaced.")
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_csv(path: str | os.PathLike[str], header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """A CSV file with one header row (the ``csv`` module quotes names holding commas)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(header))
        writer.writerows(list(row) for row in rows)
    return Path(path)


def write_matrix_csv(path: str | os.PathLike[str], matrix: np.ndarray, rows: Sequence[str],
                     cols: Sequence[str]) -> Path:
    """Classes × RoIs as CSV with a header row of RoI names and a first column of class names."""
    return write_csv(path, ["class"] + list(cols),
                     ([name] + [f"{v:.8g}" for v in row] for name, row in zip(rows, np.asarray(matrix))))


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Indented JSON; values JSON cannot hold (paths, devices, numpy scalars) are written as their ``str``."""
    Path(path).write_text(json.dumps(data, indent=2, default=str))
    return Path(path)


def read_json(path: str | os.PathLike[str], hint: str = RESULT_FOLDER_HINT) -> Any:
    """A JSON file of a result folder; a missing or damaged file is a :class:`VolumeReadError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise VolumeReadError(f"'{path.parent}' has no {path.name}; {hint}.") from None
    except json.JSONDecodeError as exc:
        raise VolumeReadError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); the folder is damaged.") \
            from None


def read_result_volume(path: str | os.PathLike[str]) -> Volume:
    """A volume file of a result folder; a missing file is a :class:`VolumeReadError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise VolumeReadError(f"'{path.parent}' has no {path.name}; pass a complete explanation folder.")
    return read_volume(path)
