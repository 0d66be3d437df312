"""Explain a whole cohort: every scan through :func:`~XAIExplainerLib.pipelines.agg2exp.explain_volume`, then the global matrix.

One scan is one job, and every backend runs the same job function (:func:`explain_scan`):

* ``workers=1`` (default): in this process, loading the model once. On one CPU or GPU this is the fastest choice,
  because torch already uses every core for one scan.
* ``workers=N``: N local processes (``spawn``), each loading the model once and using ``cores // N`` torch
  threads; for machines with many cores or several GPUs (``devices=["cuda:0", "cuda:1"]`` round-robin).
* ``ray_address``: tasks on a Ray cluster (``"auto"`` joins a running one, ``"local"`` starts one in this
  process); the model file must be readable at the same path on the workers. Ray is optional
  (``pip install ray``).

Each scan's folder is written atomically under ``OUTPUT/scans/<scan id>``; a scan whose folder is already complete
is reused, so an interrupted cohort resumes where it stopped. A scan that fails (unreadable file, a class absent
from the model…) is reported with its error in ``OUTPUT/cohort_summary.json`` and left out of the aggregate; the
aggregate (:func:`~XAIExplainerLib.cohort.aggregate.run_cohort`) goes to ``OUTPUT/cohort`` once every job has ended.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import CohortError, OutputExistsError, XAIExplainerError

from ..progress import ProgressCallback as Progress  # noqa: E402 (declared once)


@dataclass(frozen=True)
class ScanJob:
    """Everything one worker needs to explain one scan (plain data: it travels to processes and Ray tasks)."""

    scan_id: str
    input_path: str
    model_path: str
    output_dir: str
    method: str = "smoothgrad"
    classes: tuple | None = None
    method_params: dict = field(default_factory=dict)
    variant: str = "absolute"
    seed: int = 0
    batch_size: int | None = None
    metrics: bool = False
    device: str = "auto"


@dataclass
class ScanOutcome:
    scan_id: str
    folder: str
    seconds: float
    reused: bool = False
    error: str | None = None


def scan_ids(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Readable, unique folder names from input paths (``sub-01_T1w.nii.gz`` → ``sub-01_T1w``)."""
    ids: list[str] = []
    for path in paths:
        name = Path(path).name or str(path)
        name = re.sub(r"\.(nii\.gz|nii|nrrd|nhdr|mha|mhd)$", "", name, flags=re.IGNORECASE)
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "scan"
        candidate, n = name, 2
        while candidate in ids:
            candidate, n = f"{name}_{n}", n + 1
        ids.append(candidate)
    return ids


_MODEL_CACHE: dict[tuple[str, str], Any] = {}


def _model(path: str, device: str):
    """The SegmentationModel for (path, device), loaded once per process (local workers and Ray workers alike)."""
    from ..models import SegmentationModel

    key = (str(Path(path).resolve()), device)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = SegmentationModel.load(path, device=device)
    return _MODEL_CACHE[key]


def explain_scan(job: ScanJob) -> ScanOutcome:
    """Explain one scan into ``job.output_dir`` (atomically); errors become the outcome, not an exception."""
    from ..pipelines.agg2exp import explain_volume, save_explanation
    from ..volume import read_volume

    started = time.perf_counter()
    folder = Path(job.output_dir)
    if (folder / "matrix.json").is_file():
        done_with = _saved_method(folder)
        if done_with != job.method:
            return ScanOutcome(job.scan_id, str(folder), 0.0, error=(
                f"'{folder}' already holds a {done_with} explanation, not {job.method}; use another output folder."))
        return ScanOutcome(job.scan_id, str(folder), 0.0, reused=True)
    try:
        explanation = explain_volume(
            read_volume(job.input_path), _model(job.model_path, job.device), method=job.method,
            classes=list(job.classes) if job.classes else None, method_params=dict(job.method_params),
            metrics=job.metrics, variant=job.variant, seed=job.seed, batch_size=job.batch_size,
        )
        save_explanation(explanation, folder)
    except XAIExplainerError as error:  # a bad scan is reported; anything else is a bug and propagates
        return ScanOutcome(job.scan_id, str(folder), time.perf_counter() - started, error=str(error))
    return ScanOutcome(job.scan_id, str(folder), time.perf_counter() - started)


def _saved_method(folder: Path) -> str | None:
    try:
        return json.loads((folder / "provenance.json").read_text()).get("method")
    except (OSError, ValueError):
        return None


def _init_local_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def _run_local(jobs: list[ScanJob], workers: int, report) -> list[ScanOutcome]:
    if workers <= 1:
        outcomes = []
        for job in jobs:
            outcomes.append(explain_scan(job))
            report(outcomes[-1], len(outcomes))
        return outcomes
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_local_worker, initargs=(threads,)) as pool:
        futures = [pool.submit(explain_scan, job) for job in jobs]
        by_id = {}
        for future in as_completed(futures):
            outcome = future.result()
            by_id[outcome.scan_id] = outcome
            report(outcome, len(by_id))
    return [by_id[job.scan_id] for job in jobs]


def _run_ray(jobs: list[ScanJob], address: str, cpus_per_scan: float, gpus_per_scan: float,
             report) -> list[ScanOutcome]:
    try:
        import ray
    except ImportError:
        raise CohortError("ray_address needs Ray: pip install 'ray>=2.9' (or run without --ray-address).") from None
    started_here = not ray.is_initialized()
    if started_here:
        if address == "local":  # a throw-away cluster in this process (tests, one big machine)
            ray.init(address="local", include_dashboard=False, log_to_driver=False)
        else:  # "auto", "host:port" or "ray://host:port": join it as it is configured
            ray.init(address=address)
    try:
        task = ray.remote(num_cpus=cpus_per_scan, num_gpus=gpus_per_scan)(explain_scan)
        pending = {task.remote(job): job for job in jobs}
        by_id: dict[str, ScanOutcome] = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            outcome = ray.get(done[0])
            pending.pop(done[0])
            by_id[outcome.scan_id] = outcome
            report(outcome, len(by_id))
    finally:
        if started_here:
            ray.shutdown()
    return [by_id[job.scan_id] for job in jobs]


def explain_cohort(
    inputs: Sequence[str | os.PathLike[str]],
    model_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    method: str = "smoothgrad",
    classes: Sequence[int | str] | None = None,
    method_params: dict | None = None,
    variant: str = "absolute",
    seed: int = 0,
    batch_size: int | None = None,
    metrics: bool = False,
    device: str = "auto",
    devices: Sequence[str] | None = None,
    workers: int = 1,
    ray_address: str | None = None,
    cpus_per_scan: float = 1.0,
    gpus_per_scan: float = 0.0,
    reference: Sequence[str | os.PathLike[str]] | None = None,
    min_scans: int = 5,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Explain every scan of ``inputs`` with the same model and settings, then aggregate (global matrix, outliers).

    Returns ``{"scans": [ScanOutcome...], "global": GlobalImportance, "outliers": OutlierReport, "output": Path}``.
    ``devices`` spreads scans round-robin over several devices (e.g. one per GPU, with ``workers`` = their number).
    """
    from .aggregate import run_cohort
    from ..attribution.registry import get_method

    if not inputs:
        raise CohortError("No input scans were given.")
    missing = [str(p) for p in inputs if not Path(p).exists()]
    if missing:
        raise CohortError(f"These input scans do not exist: {', '.join(missing)}.")
    if not Path(model_path).exists():
        raise CohortError(f"The model '{model_path}' does not exist.")
    get_method(method).validate(method_params)  # an unknown method or option fails before any scan starts
    if int(workers) < 1:
        raise CohortError(f"workers must be at least 1, got {workers}.")
    out = Path(output).absolute()
    aggregate = out / "cohort"
    if aggregate.exists():
        raise OutputExistsError(f"'{aggregate}' already exists: this cohort was aggregated before. Choose another "
                                "output folder (completed scan folders under scans/ are reused when you rerun).")
    (out / "scans").mkdir(parents=True, exist_ok=True)
    ids = scan_ids(inputs)
    device_cycle = list(devices) if devices else [device]
    jobs = [
        ScanJob(scan_id=sid, input_path=str(Path(path).absolute()), model_path=str(Path(model_path).absolute()),
                output_dir=str(out / "scans" / sid), method=method, classes=tuple(classes) if classes else None,
                method_params=dict(method_params or {}), variant=variant, seed=seed, batch_size=batch_size,
                metrics=metrics, device=device_cycle[i % len(device_cycle)])
        for i, (sid, path) in enumerate(zip(ids, inputs))
    ]
    started = time.perf_counter()

    def report(outcome: ScanOutcome, n_done: int) -> None:
        if progress is not None:
            state = "failed" if outcome.error else ("reused" if outcome.reused else "done")
            progress(0.95 * n_done / len(jobs), f"scan {outcome.scan_id} {state} ({n_done}/{len(jobs)})")

    if ray_address:
        outcomes = _run_ray(jobs, ray_address, cpus_per_scan, gpus_per_scan, report)
    else:
        outcomes = _run_local(jobs, int(workers), report)
    succeeded = [o for o in outcomes if o.error is None]
    summary = {
        "method": method, "method_params": dict(method_params or {}), "seed": seed,
        "backend": f"ray:{ray_address}" if ray_address else f"local:{int(workers)}",
        "seconds": time.perf_counter() - started, "scans": [asdict(o) for o in outcomes],
    }
    (out / "cohort_summary.json").write_text(json.dumps(summary, indent=2))
    if not succeeded:
        raise CohortError("Every scan failed; see the errors in " + str(out / "cohort_summary.json") + ": "
                          + "; ".join(f"{o.scan_id}: {o.error}" for o in outcomes[:3]))
    result = run_cohort([o.folder for o in succeeded], aggregate, reference=reference, seed=seed,
                        min_scans=min_scans)
    if progress is not None:
        progress(1.0, "done")
    return dict(result, scans=outcomes)
