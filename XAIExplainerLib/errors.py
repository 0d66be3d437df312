"""Named exceptions: every user-facing failure says what was wrong and how to fix it.

All derive from :class:`XAIExplainerError` so that the CLI and the Slicer module can show the message
to the user instead of a stack trace from deep inside torch or SimpleITK.
"""
from __future__ import annotations


class XAIExplainerError(Exception):
    """Base class of all errors that XAIExplainer raises on purpose."""


class InvalidVolumeError(XAIExplainerError, ValueError):
    """The image is not a finite 3D scalar volume (2D/4D array, NaN/Inf voxels, empty file...)."""


class UnsupportedFormatError(XAIExplainerError, ValueError):
    """The file extension names no format that XAIExplainer reads or writes."""


class VolumeReadError(XAIExplainerError, OSError):
    """The file exists but could not be read as an image (corrupt, empty, wrong content)."""


class WeightsError(XAIExplainerError, ValueError):
    """A weights file could not be loaded into the configured network (wrong architecture, bad file)."""


class ModelConfigError(XAIExplainerError, ValueError):
    """The model configuration JSON / bundle metadata is missing or inconsistent."""


class MissingDataPackageError(XAIExplainerError, FileNotFoundError):
    """Sample data is read from a Debian/PyPI package that is not installed."""


class UnknownClassError(XAIExplainerError, ValueError):
    """A requested class name or index is not one of the model's labels."""


class GeometryMismatchError(XAIExplainerError, ValueError):
    """Two volumes that must share a voxel grid (image and RoI map, say) do not."""


class DeviceError(XAIExplainerError, RuntimeError):
    """The requested compute device does not exist or ran out of memory even at batch size 1."""


class ModelCapabilityError(XAIExplainerError, TypeError):
    """The model cannot do what the method needs (e.g. forward hooks on a TorchScript module)."""


class CancelledError(XAIExplainerError):
    """The user cancelled a long-running job."""


class UnknownMethodError(XAIExplainerError, ValueError):
    """The requested attribution method name is not in the registry."""


class OutputExistsError(XAIExplainerError, FileExistsError):
    """The output folder already exists and overwriting was not asked for."""


class CohortError(XAIExplainerError, ValueError):
    """Explanations of a cohort cannot be combined (different classes or RoIs, too few scans)."""


class MethodParameterError(XAIExplainerError, ValueError):
    """An option was passed to an attribution method that does not take it."""


class SceneInputError(XAIExplainerError, ValueError):
    """Results handed to the Slicer bridge do not fit together (matrix shape vs names, unknown RoI ids...)."""


class OutputPathError(XAIExplainerError, ValueError):
    """An output cannot be written where asked: it is (or holds, or lies inside) an input, a file stands where a
    folder is needed, its folder is not writable, or its format cannot be written. Raised before any computation."""


class ResumeMismatchError(OutputExistsError):
    """An existing result was made with other settings than the rerun asks for; reusing it would be silently wrong."""


class DependencyError(XAIExplainerError, RuntimeError):
    """A run-time dependency is missing or too old and cannot be installed here (e.g. torch below the minimum)."""


class InstallDeclinedError(DependencyError):
    """The user declined installing the Python packages the computation needs; nothing was changed."""


class NonFiniteLossError(XAIExplainerError, ArithmeticError):
    """An optimisation (the counterfactual mask) produced a NaN/Inf loss; the message names the step and the term."""
