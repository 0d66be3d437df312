"""Real sample volumes read at run time from installed Debian/PyPI packages (see DATA.md).

Nothing here is downloaded and nothing is copied into the repository: the Colin27 MRI and AAL atlas come from
Debian's ``mricron-data``, the head CT from ``invesalius-examples`` (GPL-2, so it must stay outside the repo),
the MNI152 2009a templates from the ``nilearn`` wheel and the k-means T1 from ``insighttoolkit5-examples``.
Each loader returns :class:`~XAIExplainerLib.volume.Volume` objects with the file's own geometry; a missing
package raises :class:`~XAIExplainerLib.errors.MissingDataPackageError` with the command that installs it.
"""
from __future__ import annotations

import importlib.util
import plistlib
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

from ..errors import MissingDataPackageError, VolumeReadError
from ..volume import Volume

__all__ = [
    "DATA_PACKAGES",
    "DataPackage",
    "aal_atlas",
    "available_datasets",
    "colin27_t1",
    "colin27_t1_brain",
    "colin27_t1_hires",
    "head_ct",
    "kmeans_t1",
    "mni152_t1",
    "mni152_tissue_maps",
]


def _nilearn_data_folders() -> tuple[Path, ...]:
    # find_spec locates the installed package without importing it (importing nilearn pulls in sklearn, pandas...).
    try:
        spec = importlib.util.find_spec("nilearn")
    except (ImportError, ValueError):
        return ()
    if spec is None or not spec.submodule_search_locations:
        return ()
    return tuple(Path(p) / "datasets" / "data" for p in spec.submodule_search_locations)


@dataclass(frozen=True)
class DataPackage:
    """Where one data package puts its files, and how a user installs it."""

    name: str
    install_command: str
    folders: Callable[[], tuple[Path, ...]]
    note: str = ""

    def folder(self) -> Path:
        """The first existing candidate folder, or :class:`MissingDataPackageError` naming the install command."""
        candidates = self.folders()
        for folder in candidates:
            if folder.is_dir():
                return folder
        where = ", ".join(str(c) for c in candidates) or "(no candidate location)"
        raise MissingDataPackageError(
            f"The sample data package '{self.name}' is not installed (looked in {where}). "
            f"Install it with: {self.install_command}{self.note}"
        )

    def file(self, name: str) -> Path:
        """A file inside the package, with a clear error when the package is absent or incomplete."""
        path = self.folder() / name
        if not path.is_file():
            raise MissingDataPackageError(
                f"'{path}' is missing although the folder of package '{self.name}' exists; the package is incomplete. "
                f"Reinstall it with: {self.install_command}{self.note}"
            )
        return path


_DOC_NOTE = (
    " (if the package is installed but its files are absent, this system drops /usr/share/doc at install time: "
    "see /etc/dpkg/dpkg.cfg.d/ for a path-exclude rule)"
)

#: The packages the loaders read from. Tests replace entries to simulate a missing package.
DATA_PACKAGES: dict[str, DataPackage] = {
    "mricron-data": DataPackage(
        "mricron-data",
        "sudo apt-get install mricron-data",
        lambda: (Path("/usr/share/mricron/templates"),),
    ),
    "invesalius-examples": DataPackage(
        "invesalius-examples",
        "sudo apt-get install invesalius-examples",
        lambda: (Path("/usr/share/doc/invesalius-examples/examples"),),
        _DOC_NOTE,
    ),
    "insighttoolkit5-examples": DataPackage(
        "insighttoolkit5-examples",
        "sudo apt-get install insighttoolkit5-examples",
        lambda: (Path("/usr/share/doc/insighttoolkit5-examples/examples/Data"),),
        _DOC_NOTE,
    ),
    "nilearn": DataPackage("nilearn", "pip install nilearn", _nilearn_data_folders),
}


def _read(package: str, name: str, modality: str, description: str) -> Volume:
    path = DATA_PACKAGES[package].file(name)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise VolumeReadError(f"'{path}' from package '{package}' could not be read ({exc}).") from None
    return Volume.from_sitk(
        image, {"source": str(path), "package": package, "modality": modality, "description": description}
    )


# ---- Colin27 (mricron-data) ----------------------------------------------------------------------------------
def colin27_t1() -> Volume:
    """Colin27 T1 MRI (``ch2.nii.gz``): 181×217×181 voxels of 1 mm in MNI space, uint8."""
    return _read("mricron-data", "ch2.nii.gz", "MRI", "Colin27 T1 (ch2)")


def colin27_t1_brain() -> Volume:
    """Skull-stripped Colin27 T1 (``ch2bet.nii.gz``), same grid as :func:`colin27_t1`."""
    return _read("mricron-data", "ch2bet.nii.gz", "MRI", "Colin27 T1 brain (ch2bet)")


def colin27_t1_hires() -> Volume:
    """Colin27 T1 at 0.5 mm (``ch2better.nii.gz``, 301×370×316): an independent test image for brain models."""
    return _read("mricron-data", "ch2better.nii.gz", "MRI", "Colin27 T1 0.5 mm (ch2better)")


def _parse_label_table(path: Path) -> dict[int, str]:
    """Parse MRIcron's ``.nii.txt`` label table: one ``<index> <name> [<code>]`` line per label."""
    names: dict[int, str] = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2 or not fields[0].isdigit():
            raise VolumeReadError(f"{path}:{line_no}: expected '<index> <name>', got {line!r}.")
        names[int(fields[0])] = fields[1]
    return names


def aal_atlas() -> tuple[Volume, dict[int, str]]:
    """The AAL atlas on the Colin27 grid and its label names (116 regions, 0 = background, not in the dict).

    The atlas array is uint8 with values 0..116; ``names[i]`` is the AAL name (e.g. ``'Precentral_L'``).
    """
    atlas = _read("mricron-data", "aal.nii.gz", "labels", "AAL atlas")
    names = _parse_label_table(DATA_PACKAGES["mricron-data"].file("aal.nii.txt"))
    present = set(np.unique(atlas.array).tolist()) - {0}
    unnamed = sorted(present - set(names))
    if unnamed:
        raise VolumeReadError(f"AAL label values {unnamed} have no name in aal.nii.txt; the package is inconsistent.")
    return atlas.with_array(atlas.array, n_labels=len(names)), names


# ---- MNI152 2009a (nilearn wheel) ----------------------------------------------------------------------------
_MNI = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"


def mni152_t1() -> Volume:
    """MNI152 2009a symmetric T1 template shipped inside nilearn: 197×233×189, 1 mm, uint8."""
    return _read("nilearn", _MNI.format("t1"), "MRI", "MNI152 2009a T1")


def mni152_tissue_maps() -> tuple[Volume, Volume]:
    """Grey- and white-matter probability maps (0..255) on the :func:`mni152_t1` grid, as ``(gm, wm)``."""
    gm = _read("nilearn", _MNI.format("gm"), "probability", "MNI152 2009a grey matter")
    wm = _read("nilearn", _MNI.format("wm"), "probability", "MNI152 2009a white matter")
    return gm, wm


# ---- k-means T1 (insighttoolkit5-examples) ---------------------------------------------------------------------
def kmeans_t1() -> tuple[Volume, Volume]:
    """ITK's small T1 (128×128×62, 2×2×3 mm) and its preliminary k-means class map (0..6), as ``(t1, classes)``."""
    t1 = _read("insighttoolkit5-examples", "KmeansTest_T1UCharRaw.nii.gz", "MRI", "ITK KmeansTest T1")
    classes = _read(
        "insighttoolkit5-examples", "KmeansTest_T1KmeansPrelimSegmentation.nii.gz", "labels", "ITK k-means classes"
    )
    return t1, classes


# ---- head CT (invesalius-examples) -----------------------------------------------------------------------------
#: InVesalius 3 stores rows bottom-up (VTK's lower-left origin), so array y runs posterior→anterior; columns keep
#: DICOM's right→left order and slices run inferior→superior: voxel axes point to L, A, S. In SimpleITK's LPS
#: frame that is the direction matrix diag(1, -1, 1). Anterior/superior are checked by a test (teeth are
#: anterior-inferior); left/right cannot be checked on a symmetric head and follows the DICOM column convention.
HEAD_CT_DIRECTION = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
_HU_RANGE = (-2048, 4095)


def head_ct() -> Volume:
    """Real head CT from InVesalius' ``Cranium.inv3``: int16 HU, 108×256×256 (z,y,x), 0.957×0.957×1.5 mm.

    The ``.inv3`` project is a gzipped tar with ``main.plist`` (shape, dtype, spacing) and ``matrix.dat`` (the
    raw voxels). InVesalius keeps no origin, so the volume is centred on the physical origin.
    """
    path = DATA_PACKAGES["invesalius-examples"].file("Cranium.inv3")
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            if "main.plist" not in members:
                raise VolumeReadError(f"'{path}' holds no main.plist; it is not an InVesalius 3 project.")
            header = plistlib.loads(_extract(tar, members["main.plist"]))
            matrix = header.get("matrix", {})
            raw_name = matrix.get("filename", "matrix.dat")
            if raw_name not in members:
                raise VolumeReadError(f"'{path}' lacks its voxel file '{raw_name}'.")
            raw = _extract(tar, members[raw_name])
    except (tarfile.TarError, OSError, plistlib.InvalidFileException, EOFError) as exc:
        raise VolumeReadError(f"'{path}' could not be read as an InVesalius project ({exc}). Reinstall "
                              f"invesalius-examples.") from None
    shape = tuple(int(s) for s in matrix.get("shape", ()))
    try:
        # InVesalius writes numpy memmaps on x86, i.e. little-endian; the HU range check below catches a mismatch.
        dtype = np.dtype(str(matrix.get("dtype"))).newbyteorder("<")
    except TypeError:
        raise VolumeReadError(f"'{path}': main.plist names an unknown voxel type {matrix.get('dtype')!r}.") from None
    spacing = tuple(float(s) for s in header.get("spacing", ()))
    if len(shape) != 3 or len(spacing) != 3:
        raise VolumeReadError(f"'{path}': main.plist gives shape {shape} and spacing {spacing}; expected 3 values each.")
    if len(raw) != int(np.prod(shape)) * dtype.itemsize:
        raise VolumeReadError(
            f"'{path}': {raw_name} has {len(raw)} bytes but shape {shape} of {dtype} needs "
            f"{int(np.prod(shape)) * dtype.itemsize}; the file is truncated."
        )
    array = np.frombuffer(raw, dtype=dtype).reshape(shape).astype(np.int16)  # astype copies: a writable array
    lo, hi = int(array.min()), int(array.max())
    if lo < _HU_RANGE[0] or hi > _HU_RANGE[1]:
        raise VolumeReadError(
            f"'{path}': voxel values span {lo}..{hi}, outside the Hounsfield range {_HU_RANGE}; the byte order "
            "or dtype in main.plist does not match the data."
        )
    direction = np.asarray(HEAD_CT_DIRECTION).reshape(3, 3)
    size_xyz = np.array(shape[::-1], dtype=float)
    origin = -direction @ (np.asarray(spacing) * (size_xyz - 1) / 2.0)
    return Volume(
        array,
        spacing=spacing,
        origin=tuple(origin),
        direction=HEAD_CT_DIRECTION,
        metadata={
            "source": str(path),
            "package": "invesalius-examples",
            "modality": str(header.get("modality", "CT")),
            "description": f"InVesalius example head CT ({header.get('name', 'Cranium')})",
        },
    )


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    if handle is None:
        raise VolumeReadError(f"Cannot extract '{member.name}' from the InVesalius project.")
    with handle:
        return handle.read()


# ---- overview --------------------------------------------------------------------------------------------------
_DATASET_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "colin27_t1": ("mricron-data", ("ch2.nii.gz",)),
    "colin27_t1_brain": ("mricron-data", ("ch2bet.nii.gz",)),
    "colin27_t1_hires": ("mricron-data", ("ch2better.nii.gz",)),
    "aal_atlas": ("mricron-data", ("aal.nii.gz", "aal.nii.txt")),
    "mni152_t1": ("nilearn", (_MNI.format("t1"),)),
    "mni152_tissue_maps": ("nilearn", (_MNI.format("gm"), _MNI.format("wm"))),
    "head_ct": ("invesalius-examples", ("Cranium.inv3",)),
    "kmeans_t1": (
        "insighttoolkit5-examples",
        ("KmeansTest_T1UCharRaw.nii.gz", "KmeansTest_T1KmeansPrelimSegmentation.nii.gz"),
    ),
}


def available_datasets() -> dict[str, bool]:
    """Which loaders can run here: ``{loader name: all its files are present}`` (reads no voxels)."""
    result: dict[str, bool] = {}
    for name, (package, files) in _DATASET_FILES.items():
        try:
            for f in files:
                DATA_PACKAGES[package].file(f)
            result[name] = True
        except MissingDataPackageError:
            result[name] = False
    return result
