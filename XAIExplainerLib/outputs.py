"""Output paths checked before any computation, and this tool's stale temporary files swept away.

Why up front: a segmentation or an explanation can take minutes of GPU time, and the worst outcomes for a user are
(a) an output that replaces an input (the MRI overwritten by its label map) and (b) a run that fails only when it
finally writes. Every command therefore calls :func:`check_output_file` / :func:`check_output_folder` before it
reads the model, so that these failures cost nothing and leave nothing behind.

Temporary names: atomic writers put their work next to the final path under hidden names
(``.<name>.tmp-<8 hex>`` / ``.<name>.old-<8 hex>`` folders, ``.tmp_*`` files). A process killed with SIGKILL cannot
remove them, so :func:`sweep_stale_temporaries` removes those older than a day on the next run into the same
folder (younger ones may belong to a run still going), and :func:`is_temporary` lets readers refuse them.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterable

from .errors import OutputExistsError, OutputPathError, UnsupportedFormatError

#: Age after which a temporary file or folder of this tool is certainly abandoned.
STALE_AFTER_S = 24 * 3600.0
_TEMPORARY = re.compile(r"^(\..+\.(tmp|old)-[0-9a-f]{8}|\.tmp_.+)$")


def is_temporary(path: "str | os.PathLike[str]") -> bool:
    """True for the hidden names our atomic writers use while a result is incomplete."""
    return bool(_TEMPORARY.match(Path(path).name))


def _absolute(path: "str | os.PathLike[str]") -> Path:
    """The path with symlinks of its existing part resolved, so that two spellings of one file compare equal."""
    return Path(os.path.abspath(Path(path).expanduser())).resolve(strict=False)


def check_not_an_input(output: "str | os.PathLike[str]", inputs: Iterable["str | os.PathLike[str] | None"],
                       what: str = "output", holds_ok: bool = False) -> None:
    """Refuse an output that is an input, contains one (a folder around it) or lies inside one (a DICOM folder).

    ``holds_ok``: the output is a folder only ever *added to* (a cohort folder), so holding an input is harmless.
    """
    out = _absolute(output)
    for given in inputs:
        if given is None:
            continue
        source = _absolute(given)
        if out == source:
            relation = "is the input"
        elif out in source.parents and not holds_ok:
            relation = "is a folder that holds the input"
        elif source in out.parents:
            relation = "lies inside the input"
        else:
            continue
        raise OutputPathError(f"The {what} '{output}' {relation} '{given}'; writing there would destroy it. "
                              f"Choose an {what} path outside your input data.")


def check_writable_parent(path: "str | os.PathLike[str]", what: str = "output") -> None:
    """The folder that will hold ``path`` exists or can be created, and a file can really be created in it.

    A real probe file is created and removed because permission bits do not tell the whole story (read-only
    mounts, ACLs, a full quota, running as root).
    """
    target = _absolute(path)
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputPathError(f"Cannot write the {what} '{path}': '{ancestor}' is a file, not a folder.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".tmp_write_probe_", dir=ancestor)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputPathError(f"Cannot write the {what} '{path}': the folder '{ancestor}' is not writable "
                              f"({exc.strerror or type(exc).__name__}). Choose a folder you can write to.") from None


def check_output_file(path: "str | os.PathLike[str]", inputs: Iterable["str | os.PathLike[str] | None"] = (),
                      overwrite: bool = False, what: str = "output file") -> Path:
    """Everything that can be known about writing the volume file ``path`` before computing it."""
    from .volume import writable_extension

    p = Path(path)
    try:
        writable_extension(p)
    except UnsupportedFormatError as exc:
        raise OutputPathError(str(exc)) from None
    check_not_an_input(p, inputs, what)
    if p.is_dir():
        raise OutputPathError(f"The {what} '{p}' is an existing folder; give a file name such as "
                              f"'{p / 'labels.nii.gz'}'.")
    if p.exists() and not overwrite:
        raise OutputExistsError(f"The {what} '{p}' already exists; choose another name or pass --overwrite.")
    check_writable_parent(p, what)
    return p


def check_output_folder(path: "str | os.PathLike[str]", inputs: Iterable["str | os.PathLike[str] | None"] = (),
                        overwrite: bool = False, what: str = "output folder", exists_ok: bool = False) -> Path:
    """Everything that can be known about creating the folder ``path`` before computing its contents.

    An existing *file* is refused even with ``overwrite``: replacing a file by a folder is never what was meant.
    ``exists_ok`` is for folders that are filled incrementally (a cohort resumes into its own folder).
    """
    p = Path(path)
    check_not_an_input(p, inputs, what)
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"The {what} '{p}' is an existing file, not a folder; choose a new folder name.")
    if p.exists() and not (overwrite or exists_ok):
        raise OutputExistsError(f"The {what} '{p}' already exists; choose another folder or pass --overwrite.")
    check_writable_parent(p / "probe", what)
    return p


def sweep_stale_temporaries(folder: "str | os.PathLike[str]", max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove this tool's temporary files/folders in ``folder`` older than ``max_age_s``; returns what went.

    Only names matching our own temporary patterns are touched; failures to remove are ignored (another process
    may be sweeping the same folder).
    """
    base = Path(folder)
    if not base.is_dir():
        return []
    now, removed = time.time(), []
    for entry in base.iterdir():
        if not is_temporary(entry):
            continue
        try:
            if now - entry.lstat().st_mtime < max_age_s:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            continue
    return removed
