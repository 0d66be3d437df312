"""XAIExplainer library: explain 3D medical-imaging networks (pure Python; no Slicer, Qt or VTK imports).

Heavy dependencies (torch, MONAI, SimpleITK) are imported lazily by the submodules that need them, so ``import
XAIExplainerLib`` is cheap inside Slicer: Slicer imports it at start, and loading SimpleITK there would slow every
Slicer start. ``Volume``, ``read_volume`` and ``write_volume`` are resolved on first access (PEP 562).
"""
from ._version import __version__
from .errors import XAIExplainerError

__all__ = ["Volume", "XAIExplainerError", "read_volume", "write_volume", "__version__"]

_LAZY = {"Volume", "read_volume", "write_volume"}


def __getattr__(name: str):
    if name in _LAZY:
        from . import volume

        return getattr(volume, name)
    raise AttributeError(f"module 'XAIExplainerLib' has no attribute {name!r}")
