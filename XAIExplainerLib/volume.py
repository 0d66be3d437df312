"""3D scalar volumes with their physical geometry, read and written with SimpleITK.

A :class:`Volume` is a numpy array in (z, y, x) order plus SimpleITK geometry (spacing, origin and direction in
LPS, each in (x, y, z) order). Keeping SimpleITK's conventions means every resampling and orientation step is
one SimpleITK call, and one conversion to MRML (which uses RAS) lives in the Slicer bridge.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from .file_integrity import check_voxel_data
from .errors import (
    GeometryMismatchError,
    InvalidVolumeError,
    UnsupportedFormatError,
    VolumeReadError,
)

#: Extensions that SimpleITK reads and writes as single files.
FILE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

_IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Volume:
    """A 3D image: ``array[z, y, x]`` and its LPS geometry in SimpleITK order.

    ``metadata`` carries free-form provenance (source file, modality, ...) and is written to NRRD headers.
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = _IDENTITY_DIRECTION
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.array, np.ndarray):
            raise InvalidVolumeError(f"Volume.array must be a numpy array, got {type(self.array).__name__}.")
        if self.array.ndim != 3:
            raise InvalidVolumeError(
                f"Expected a 3D volume (z, y, x), got an array with {self.array.ndim} dimension(s) and shape "
                f"{self.array.shape}. Pass a single 3D scalar image (for 4D series pick one time point or channel)."
            )
        if min(self.array.shape) < 1:
            raise InvalidVolumeError(f"The volume is empty (shape {self.array.shape}).")
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        object.__setattr__(self, "direction", tuple(float(d) for d in self.direction))
        if len(self.spacing) != 3 or len(self.origin) != 3 or len(self.direction) != 9:
            raise InvalidVolumeError("spacing and origin need 3 values and direction 9 (a row-major 3x3 matrix).")
        if any(s <= 0 or not np.isfinite(s) for s in self.spacing):
            raise InvalidVolumeError(f"Voxel spacing must be positive and finite, got {self.spacing}.")

    # ---- geometry -------------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def size_xyz(self) -> tuple[int, int, int]:
        """Size in SimpleITK's (x, y, z) order."""
        return tuple(reversed(self.array.shape))  # type: ignore[return-value]

    def ijk_to_lps(self) -> np.ndarray:
        """4x4 matrix taking voxel indices (i=x, j=y, k=z) to LPS millimetres."""
        m = np.eye(4)
        m[:3, :3] = np.asarray(self.direction).reshape(3, 3) @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    def ijk_to_ras(self) -> np.ndarray:
        """4x4 matrix taking voxel indices (i=x, j=y, k=z) to RAS millimetres (Slicer's world frame)."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.ijk_to_lps()

    def same_grid(self, other: "Volume", tol: float = 1e-4) -> bool:
        """True when both volumes share shape, spacing, origin and direction (within ``tol`` mm)."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=tol)
            and np.allclose(self.origin, other.origin, atol=tol)
            and np.allclose(self.direction, other.direction, atol=tol)
        )

    def with_array(self, array: np.ndarray, **metadata: Any) -> "Volume":
        """Same geometry, new voxels (shape must match)."""
        if array.shape != self.array.shape:
            raise GeometryMismatchError(f"New array shape {array.shape} differs from the volume's {self.shape}.")
        return replace(self, array=array, metadata={**self.metadata, **metadata})

    # ---- SimpleITK ------------------------------------------------------------------------------------------
    def to_sitk(self) -> sitk.Image:
        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image, metadata: Mapping[str, Any] | None = None) -> "Volume":
        if image.GetDimension() != 3:
            raise InvalidVolumeError(
                f"Expected a 3D image, got a {image.GetDimension()}D one of size {image.GetSize()}. "
                "Pass a single 3D scalar image."
            )
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise InvalidVolumeError(
                f"Expected a scalar image, got {image.GetNumberOfComponentsPerPixel()} components per voxel "
                "(RGB or vector image). Convert it to a single-channel volume first."
            )
        return cls(
            array=sitk.GetArrayFromImage(image),
            spacing=image.GetSpacing(),
            origin=image.GetOrigin(),
            direction=image.GetDirection(),
            metadata=dict(metadata or {}),
        )


# ---- validation -----------------------------------------------------------------------------------------------
#: Metadata key: NaN/Inf voxels stored in the file that the reader replaced (SimpleITK's NIfTI reader writes 0).
NONFINITE_IN_FILE = "nonfinite_voxels_in_file"


def ensure_finite(volume: Volume, name: str = "input volume") -> Volume:
    """Raise :class:`InvalidVolumeError` when the volume holds NaN or Inf voxels (or its file did)."""
    hidden = int(volume.metadata.get(NONFINITE_IN_FILE, 0) or 0)
    if hidden:
        raise InvalidVolumeError(
            f"The {name} file '{volume.metadata.get('source', '')}' stores {hidden} NaN/Inf voxel(s), which the "
            "NIfTI reader silently turns into 0. Replace them (e.g. with the background value) before running "
            "the model."
        )
    if np.issubdtype(volume.array.dtype, np.floating):
        bad = ~np.isfinite(volume.array)
        if bad.any():
            raise InvalidVolumeError(
                f"The {name} contains {int(bad.sum())} NaN/Inf voxel(s) (first at z,y,x={tuple(int(i) for i in np.argwhere(bad)[0])}). "
                "Replace them (e.g. with the background value) before running the model."
            )
    return volume


def as_volume(data: "Volume | np.ndarray", name: str = "input") -> Volume:
    """Accept a :class:`Volume` or a bare 3D array (unit spacing) and validate it."""
    if isinstance(data, Volume):
        return data
    array = np.asarray(data)
    if array.ndim != 3:
        raise InvalidVolumeError(
            f"The {name} must be 3D (z, y, x); got shape {array.shape}. "
            + ("Add a slice axis or use a 2D tool." if array.ndim == 2 else "Select one 3D channel or time point.")
        )
    return Volume(array)


# ---- reading ---------------------------------------------------------------------------------------------------
def _extension(path: Path) -> str:
    name = path.name.lower()
    for ext in FILE_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return path.suffix.lower()


def read_volume(path: str | os.PathLike[str]) -> Volume:
    """Read a NIfTI / NRRD / MetaImage file or a DICOM series folder into a :class:`Volume`."""
    p = Path(path)
    if not p.exists():
        raise VolumeReadError(f"No file or folder at '{p}'. Check the path.")
    if p.is_dir():
        return _read_dicom_series(p)
    if p.stat().st_size == 0:
        raise VolumeReadError(f"'{p}' is an empty file (0 bytes); it holds no image. Re-export the volume.")
    ext = _extension(p)
    if ext not in FILE_EXTENSIONS and ext != ".dcm":
        raise UnsupportedFormatError(
            f"Cannot read '{p.name}': unknown format '{ext or '(no extension)'}'. Supported: "
            f"{', '.join(FILE_EXTENSIONS)}, or a folder holding one DICOM series."
        )
    hidden = check_voxel_data(p)  # ITK fills short reads of some formats with garbage instead of failing
    try:
        image = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        raise VolumeReadError(
            f"'{p}' could not be read as an image ({_first_line(exc)}). The file may be truncated or not a "
            f"{ext} image."
        ) from None
    metadata: dict[str, Any] = {"source": str(p)}
    if hidden:  # NaN/Inf the reader turned into numbers: ensure_finite refuses the volume all the same
        metadata[NONFINITE_IN_FILE] = hidden
    return _validated(Volume.from_sitk(image, metadata), p)


def _read_dicom_series(folder: Path) -> Volume:
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise VolumeReadError(f"The folder '{folder}' holds no DICOM series. Point to a folder of .dcm slices.")
    if len(series) > 1:
        # The largest series is what a user means by "the scan" (localisers are single slices).
        series = sorted(series, key=lambda s: len(reader.GetGDCMSeriesFileNames(str(folder), s)), reverse=True)
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise VolumeReadError(f"The DICOM series in '{folder}' could not be read ({_first_line(exc)}).") from None
    return _validated(Volume.from_sitk(image, {"source": str(folder), "dicom_series": series[0]}), folder)


def _validated(volume: Volume, source: Path) -> Volume:
    if volume.array.size == 0:
        raise InvalidVolumeError(f"'{source}' holds an empty image.")
    return volume


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # SimpleITK messages put the useful sentence last ("... Unable to determine ImageIO reader ...").
    return lines[-1] if lines else type(exc).__name__


# ---- writing ---------------------------------------------------------------------------------------------------
def writable_extension(path: str | os.PathLike[str]) -> str:
    """The extension of ``path`` when :func:`write_volume` can write it atomically, else UnsupportedFormatError."""
    p = Path(path)
    ext = _extension(p)
    if ext not in FILE_EXTENSIONS:
        raise UnsupportedFormatError(
            f"Cannot write '{p.name}': unknown format '{ext or '(no extension)'}'. Use one of {', '.join(FILE_EXTENSIONS)}."
        )
    if ext in (".nhdr", ".mhd"):
        raise UnsupportedFormatError(f"'{ext}' writes a separate data file; use .nrrd or .mha for atomic output.")
    return ext


def _umask() -> int:
    """The process umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_volume(volume: Volume, path: str | os.PathLike[str], compress: bool = True) -> Path:
    """Write atomically: the image goes to a temporary file that is renamed into place only when complete.

    So a failure never leaves a half-written output, and an existing file is replaced only by a whole one. The file
    gets the permissions of a plain ``open()`` under the user's umask (``mkstemp`` alone would make it 0600).
    """
    p = Path(path)
    ext = writable_extension(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    image = volume.to_sitk()
    for key, value in volume.metadata.items():
        if isinstance(value, (str, int, float)):
            image.SetMetaData(f"xai_{key}", str(value))
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=ext, dir=p.parent)
    os.close(fd)
    try:
        sitk.WriteImage(image, tmp, useCompression=compress)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


# ---- resampling ------------------------------------------------------------------------------------------------
_INTERPOLATORS = {
    "linear": sitk.sitkLinear,
    "nearest": sitk.sitkNearestNeighbor,
    "bspline": sitk.sitkBSpline,
    "label": sitk.sitkLabelGaussian,
}


def _interpolator(name: str) -> int:
    try:
        return _INTERPOLATORS[name]
    except KeyError:
        raise ValueError(f"Unknown interpolator '{name}'; choose one of {sorted(_INTERPOLATORS)}.") from None


def resample_to_spacing(
    volume: Volume, spacing: Sequence[float], interpolator: str = "linear", default_value: float = 0.0
) -> Volume:
    """Resample onto a grid of the given (x, y, z) spacing covering the same physical extent."""
    image = volume.to_sitk()
    old_size = np.array(image.GetSize())
    old_spacing = np.array(image.GetSpacing())
    new_spacing = np.array([float(s) for s in spacing])
    new_size = np.maximum(1, np.round(old_size * old_spacing / new_spacing)).astype(int)
    out = sitk.Resample(
        image,
        [int(s) for s in new_size],
        sitk.Transform(),
        _interpolator(interpolator),
        image.GetOrigin(),
        tuple(new_spacing),
        image.GetDirection(),
        default_value,
        image.GetPixelID(),
    )
    return Volume.from_sitk(out, volume.metadata)


def resample_to_reference(
    volume: Volume, reference: Volume, interpolator: str = "linear", default_value: float = 0.0
) -> Volume:
    """Resample ``volume`` onto ``reference``'s grid through physical (LPS) coordinates."""
    if volume.same_grid(reference):
        return volume
    out = sitk.Resample(
        volume.to_sitk(),
        reference.to_sitk(),
        sitk.Transform(),
        _interpolator(interpolator),
        default_value,
        sitk.sitkFloat32 if interpolator not in ("nearest", "label") else sitk.sitkUnknown,
    )
    return Volume.from_sitk(out, volume.metadata)


def label_dtype(n_labels: int) -> type:
    """The smallest unsigned type that holds label values 0..n_labels-1 (uint8 up to 256 classes, then uint16), so a
    model with many classes never wraps its labels around."""
    return np.uint8 if n_labels <= 256 else np.uint16


def labels_on_grid(probabilities: np.ndarray, source: Volume, reference: Volume,
                   keep_probabilities: bool = False) -> tuple[Volume, np.ndarray | None]:
    """THE rule for a label map on another grid: argmax of the linearly resampled class probabilities.

    ``segment`` and ``explain`` both call this, so that the label maps they write agree voxel for voxel, and a label
    map written next to probability maps is exactly their argmax. Resampling probabilities rather than labels
    (nearest neighbour) gives smooth borders on finer or oblique input grids. ``probabilities`` is (C, z, y, x) on
    ``source``'s grid; ties go to the lower label. Returns the label volume (uint8, uint16 beyond 256 classes) on ``reference``'s grid and,
    with ``keep_probabilities``, the (C, z, y, x) float32 probabilities there.
    """
    best = np.full(reference.shape, -np.inf, dtype=np.float32)
    labels = np.zeros(reference.shape, dtype=label_dtype(probabilities.shape[0]))
    kept = np.empty((probabilities.shape[0], *reference.shape), np.float32) if keep_probabilities else None
    for c in range(probabilities.shape[0]):
        channel = resample_to_reference(source.with_array(np.asarray(probabilities[c], np.float32)), reference,
                                        "linear").array
        better = channel > best
        labels[better] = c
        best[better] = channel[better]
        if kept is not None:
            kept[c] = channel
    return reference.with_array(labels, kind="labels"), kept


def reorient(volume: Volume, orientation: str = "RAS") -> Volume:
    """Permute/flip axes so that voxel axes run along ``orientation`` (DICOM letters, e.g. 'RAS' as in MONAI)."""
    return Volume.from_sitk(sitk.DICOMOrient(volume.to_sitk(), orientation), volume.metadata)


def require_same_grid(a: Volume, b: Volume, what: str = "RoI map") -> None:
    """Raise :class:`GeometryMismatchError` naming both geometries when ``b`` is not on ``a``'s grid."""
    if not a.same_grid(b):
        raise GeometryMismatchError(
            f"The {what} is not on the image's voxel grid: image shape {a.shape}, spacing {a.spacing}, origin "
            f"{a.origin}; {what} shape {b.shape}, spacing {b.spacing}, origin {b.origin}. Resample it onto the image "
            "first (e.g. resample_to_reference(roi, image, 'nearest'))."
        )
