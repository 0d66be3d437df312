"""What a cohort result was made from, so that a rerun reuses only what matches the request exactly.

Why: reusing every finished scan folder whatever the settings (only the method was compared) silently mixed
results of other classes, seeds, sample counts or even another model into an aggregate labelled with the new
settings. Each scan folder now records its *request* (input file hash, model hash, method, every parameter,
classes, seed, library version, ...) in ``provenance.json``; a folder is reused only when the saved request equals
the new one field for field, and recomputed otherwise. The cohort folder records the same request minus the
per-scan input hash in ``cohort_summary.json``; an existing aggregate made with other settings is refused with
the differing fields named, because two aggregates in one folder cannot both be right.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

from ..errors import ResumeMismatchError

#: Key of the request inside a scan folder's provenance.json and inside cohort_summary.json.
REQUEST_KEY = "request"


def sha256_path(path: "str | os.PathLike[str]") -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, sorted: a DICOM series)."""
    p = Path(path)
    digest = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for file in files:
        if p.is_dir():
            digest.update(str(file.relative_to(p)).encode() + b"\0")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _canonical(value: Any) -> Any:
    """JSON round trip: tuples become lists and keys strings, so a saved request compares equal to a new one."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def model_identity(model_path: "str | os.PathLike[str]") -> dict[str, str]:
    """Hash of the model file (or bundle folder) and of the JSON configuration beside it: both change results.

    Taken from the files rather than a loaded network so that a cohort is checked before any model is loaded.
    """
    from ..models.config import config_path_for

    path = Path(model_path)
    config = config_path_for(path) if path.is_file() else None
    return {"model_sha256": sha256_path(path), "model_config_sha256": sha256_path(config) if config else ""}


def cohort_request(model_path: "str | os.PathLike[str]", *, method: str, method_params: Mapping[str, Any], classes: Any, variant: str,
                   seed: int, batch_size: int | None, metrics: bool) -> dict[str, Any]:
    """The settings every scan of a cohort shares (everything that changes a scan's result but its input)."""
    from .._version import __version__

    return _canonical({
        **model_identity(model_path), "method": method, "method_params": dict(method_params),
        "classes": list(classes) if classes else None, "variant": variant, "seed": int(seed),
        "batch_size": batch_size, "metrics": bool(metrics), "library_version": __version__,
    })


def scan_request(settings: Mapping[str, Any], input_path: "str | os.PathLike[str]") -> dict[str, Any]:
    """One scan's request: the cohort settings plus the hash of its input file (or DICOM folder)."""
    return {**settings, "input_sha256": sha256_path(input_path)}


def differing_fields(saved: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> list[str]:
    """Names of the fields whose saved value differs from the wanted one (all of them when nothing was saved)."""
    if not saved:
        return sorted(wanted)
    return sorted(k for k in set(saved) | set(wanted) if _canonical(saved.get(k)) != _canonical(wanted.get(k)))


def saved_scan_request(folder: Path) -> dict[str, Any] | None:
    """The request stored in a finished scan folder, or None (older folders, damaged JSON)."""
    try:
        return json.loads((folder / "provenance.json").read_text()).get(REQUEST_KEY)
    except (OSError, ValueError, AttributeError):
        return None


def check_aggregate_matches(output: Path, settings: Mapping[str, Any]) -> bool:
    """True when ``output/cohort`` exists and was made with ``settings`` (then it is rebuilt); False when absent.

    Raises :class:`ResumeMismatchError` naming the differing fields when it was made with other settings.
    """
    if not (output / "cohort").exists():
        return False
    try:
        saved = json.loads((output / "cohort_summary.json").read_text()).get(REQUEST_KEY)
    except (OSError, ValueError, AttributeError):
        saved = None
    differ = differing_fields(saved, settings)
    if differ:
        detail = ", ".join(f"{k} (saved {_short(saved, k)}, now {_short(settings, k)})" for k in differ) \
            if saved else "no record of its settings (made by an older version)"
        raise ResumeMismatchError(
            f"'{output / 'cohort'}' was aggregated with other settings: {detail}. Rerun into a new output folder, "
            "or delete that aggregate to recompute the scans that differ."
        )
    return True


def _short(values: Mapping[str, Any] | None, key: str) -> str:
    text = json.dumps((values or {}).get(key), default=str)
    return text if len(text) <= 40 else text[:12] + "…"
