"""Shared pytest setup: a deterministic, thread-limited torch and small fixtures used across test files."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch
    except ImportError:  # the static tests run without torch
        yield
        return
    # OMP_NUM_THREADS wins (set it to 1 on a machine that is busy with other work: oversubscribed threads make
    # small tensor operations far slower); otherwise at most 2, the size of the CI machine.
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 0)) or max(1, min(2, os.cpu_count() or 1)))
    yield


@pytest.fixture
def oblique_volume():
    """A float volume with non-trivial spacing, origin and an oblique direction (catches axis-order slips)."""
    from XAIExplainerLib.volume import Volume

    rng = np.random.default_rng(0)
    angle = np.deg2rad(20)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    return Volume(rng.normal(size=(7, 9, 11)).astype(np.float32), spacing=(0.8, 1.1, 2.5),
                  origin=(-12.5, 30.0, 4.25), direction=tuple(rot.ravel()))
