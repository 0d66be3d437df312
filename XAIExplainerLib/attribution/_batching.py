"""Choosing how many samples go through the model at once, and recovering from out-of-memory.

The batch size is derived from *measured* memory: the first batch holds one sample, and while it runs we
record how many bytes the autograd graph keeps (CPU: sizes of the tensors saved for backward; CUDA: the
allocator's peak). That figure times a safety factor, divided into half of the currently free memory, gives
the batch size for the rest of the run. A CUDA out-of-memory error halves the batch and retries, down to one
sample; only then is a :class:`DeviceError` raised. :func:`run_batches` is that loop, shared by the gradient and
the perturbation engines.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    import torch

MAX_BATCH = 64
MEMORY_FRACTION = 0.5  # of the free memory; the rest stays for the OS, other jobs and allocator slack
SAFETY_FACTOR = 3.0  # saved activations + their gradients during backward + output/score buffers


def available_memory_bytes(device: "torch.device") -> int:
    """Free memory on ``device``: CUDA free bytes, or the OS's available RAM for the CPU."""
    import torch

    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        # memory cached by PyTorch's allocator is reusable by us although the driver counts it as used
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        import psutil  # optional; more portable than /proc

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 * 1024**3  # unknown platform: assume a modest 4 GiB


class MemoryProbe:
    """Measures the memory one batch needs: bytes saved for backward (CPU) or allocator peak (CUDA)."""

    def __init__(self, device: "torch.device") -> None:
        self.device = device
        self.bytes = 0
        self._seen: set = set()

    @contextlib.contextmanager
    def measure(self) -> Iterator["MemoryProbe"]:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            start = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            yield self
            torch.cuda.synchronize(self.device)
            self.bytes = max(0, torch.cuda.max_memory_allocated(self.device) - start)
            return

        def pack(tensor):
            try:
                key = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
                if key not in self._seen:
                    self._seen.add(key)
                    self.bytes += key[1]
            except (RuntimeError, NotImplementedError):  # tensors without storage (sparse, meta ...)
                pass
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            yield self


def batch_size_from_memory(
    device: "torch.device", bytes_per_sample: int, remaining: int, backward_copies: int = 1
) -> int:
    """Largest batch that fits into :data:`MEMORY_FRACTION` of free memory, capped by ``remaining``."""
    if bytes_per_sample <= 0:
        return max(1, min(MAX_BATCH, remaining))
    factor = SAFETY_FACTOR if device.type != "cuda" else 1.25  # the CUDA peak already includes backward
    need = bytes_per_sample * factor * max(1, backward_copies)
    fits = int(available_memory_bytes(device) * MEMORY_FRACTION // need)
    return max(1, min(MAX_BATCH, remaining, fits))


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA OOM and for the CPU allocator's "can't allocate memory" errors."""
    import torch

    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and (
        "out of memory" in message or "can't allocate memory" in message or "not enough memory" in message
    )


def release_cached_memory(device: "torch.device") -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclass
class BatchRun:
    """How a :func:`run_batches` loop went (for provenance): the largest batch and the probed bytes per item."""

    largest_batch: int = 0
    probe_bytes: int | None = None


def run_batches(
    n_items: int,
    compute: Callable[[int, int], Any],
    commit: Callable[[int, int, Any], None],
    *,
    device: "torch.device",
    method: str,
    batch_size: int | None = None,
    first_batch: int = 1,
    probe: bool = True,
    backward_copies: int = 1,
    what: str = "model evaluations",
    item: str = "item",
    oom_hint: str = "",
    progress: Callable[[float, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    on_first_failure: Callable[[Exception], Exception] | None = None,
) -> BatchRun:
    """Run items ``[start, stop)`` through ``compute`` batch by batch and hand each result to ``commit``.

    ``compute`` may fail with out-of-memory (the batch is halved and retried, nothing was committed);
    ``commit`` only runs on success. Without ``batch_size`` the first batch holds ``first_batch`` items, measured
    by a :class:`MemoryProbe` when ``probe`` is set, which sizes the remaining batches from free memory.
    ``on_first_failure`` turns a non-memory error of the very first batch into a clear one (the model rejects
    the input). ``cancel()`` is checked before every batch.
    """
    from ..errors import CancelledError, DeviceError, XAIExplainerError

    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
        from ..errors import MethodParameterError

        raise MethodParameterError(f"batch_size must be a positive integer or None (automatic), got {batch_size}.")
    meter = MemoryProbe(device) if batch_size is None and probe else None
    size = int(batch_size) if batch_size is not None else max(1, int(first_batch))
    run, done, first = BatchRun(), 0, True
    while done < n_items:
        if cancel is not None and cancel():
            raise CancelledError(f"{method} was cancelled after {done} of {n_items} {what}.")
        size = min(size, n_items - done)
        try:
            if first and meter is not None:
                with meter.measure():
                    result = compute(done, done + size)
            else:
                result = compute(done, done + size)
        except Exception as error:  # noqa: BLE001 — out-of-memory is handled, the rest re-raised (or explained)
            if not is_out_of_memory(error):
                ours = isinstance(error, XAIExplainerError) or not isinstance(error, RuntimeError)
                if first and on_first_failure is not None and not ours:
                    raise on_first_failure(error) from error
                raise
            release_cached_memory(device)
            if size > 1:
                size = max(1, size // 2)
                continue
            raise DeviceError(f"{method} ran out of memory on {device} even with one {item} per batch. {oom_hint}") \
                from None
        commit(done, done + size, result)
        del result
        done += size
        run.largest_batch = max(run.largest_batch, size)
        if first and meter is not None:
            run.probe_bytes = int(meter.bytes)
            size = batch_size_from_memory(device, meter.bytes, n_items - done, backward_copies) if done < n_items \
                else 1
        first = False
        if progress is not None:
            progress(done / n_items, f"{method}: {done}/{n_items} {what}")
    return run
