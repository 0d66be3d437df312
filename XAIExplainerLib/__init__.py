"""XAIExplainer library: explain 3D medical-imaging networks (pure Python; no Slicer, Qt or VTK imports).

Heavy dependencies (torch, MONAI) are imported lazily by the submodules that need them, so ``import
XAIExplainerLib`` is cheap inside Slicer.
"""
from ._version import __version__
from .errors import XAIExplainerError
from .volume import Volume, read_volume, write_volume

__all__ = ["Volume", "XAIExplainerError", "read_volume", "write_volume", "__version__"]
