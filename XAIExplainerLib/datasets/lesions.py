"""Synthetic lesions in real brains: patches with a known answer for counterfactual saliency (issue 14).

The paper (Major et al.) used DDSM mammograms with mass annotations, which we cannot ship. Instead, three real
T1 brains read at run time (Colin27, MNI152 2009a and ITK's k-means T1, see :mod:`.samples`) are reoriented to
RAS, resampled to one isotropic spacing and scaled so that the median of their brain tissue is 1. Cubic patches
are cut where the brain is; half of them receive one synthetic lesion: an ellipsoid of random size, orientation,
contrast (darker or brighter) and texture, clipped to brain tissue. Its mask is the ground truth, and it is
exactly the set of voxels the lesion changed (the change is multiplicative and tissue is never 0), so a saliency
mask can be scored against it without any doubt about what "the lesion" is. The brain mask of each patch is the
organ mask of the paper's area measure A.

Tissue is the part of the brain mask above the Otsu threshold of the brain's intensities (CSF is darker on T1),
so a lesion never lands in a ventricle or a sulcus. Brain masks: Colin27's skull-stripped ``ch2bet`` (> 0),
MNI152's intracranial mask from :mod:`.tissue`, and the k-means T1's grey/white-matter classes (5, 6), closed
and hole-filled. Everything is deterministic for a seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ..volume import Volume, reorient, resample_to_reference, resample_to_spacing
from . import samples

SUBJECTS: tuple[str, ...] = ("colin27", "mni152", "kmeans")
#: LPS direction matrix of a RAS-oriented grid (voxel axes x→R, y→A, z→S), as every patch has.
RAS_DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class BrainSubject:
    """One real brain on an isotropic RAS grid: T1 scaled to tissue median 1, brain and tissue masks (uint8)."""

    name: str
    t1: Volume
    brain: np.ndarray
    tissue: np.ndarray


@dataclass(frozen=True)
class LesionSpec:
    """Ranges the lesion parameters are drawn from (uniformly); sizes in mm, contrast as a relative change."""

    semi_axis_mm: tuple[float, float] = (4.0, 12.0)
    contrast: tuple[float, float] = (0.3, 0.7)
    texture: tuple[float, float] = (0.0, 0.5)
    min_voxels: int = 20
    max_voxels: int = 1500
    bright_fraction: float = 0.5  # the rest are darker than tissue, as most T1 lesions


@dataclass
class PatchSet:
    """N patches: images (N, 1, s, s, s) float32, lesion and brain masks (N, s, s, s) uint8, labels 1 = lesion."""

    images: np.ndarray
    lesion_masks: np.ndarray
    brain_masks: np.ndarray
    labels: np.ndarray
    subjects: list[str]
    corners: np.ndarray  # (N, 3) z, y, x on the subject grid
    origins: np.ndarray  # (N, 3) LPS position (mm) of each patch's first voxel centre
    spacing_mm: float
    lesion_parameters: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def volume(self, index: int, which: str = "image") -> Volume:
        """Patch ``index`` as a Volume (RAS-oriented, isotropic) for the CLI and the pipelines."""
        array = {"image": lambda: self.images[index, 0], "lesion": lambda: self.lesion_masks[index],
                 "brain": lambda: self.brain_masks[index]}[which]()
        s = self.spacing_mm
        origin = tuple(float(o) for o in self.origins[index])
        return Volume(np.array(array), (s, s, s), origin, RAS_DIRECTION,
                      {"subject": self.subjects[index], "description": f"lesion patch {index} ({which})"})


# ---- subjects ----------------------------------------------------------------------------------------------------
def _closed_filled(mask: np.ndarray, spacing: Sequence[float], radius_mm: float = 3.0) -> np.ndarray:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing))
    radius = [max(1, int(round(radius_mm / s))) for s in spacing]
    closed = sitk.BinaryMorphologicalClosing(image, radius, sitk.sitkBall)
    components = sitk.RelabelComponent(sitk.ConnectedComponent(sitk.BinaryFillhole(closed)), sortByObjectSize=True)
    return (sitk.GetArrayFromImage(components) == 1).astype(np.uint8)


def _raw_subject(name: str, spacing_mm: float) -> tuple[Volume, Volume]:
    """(T1 float32, brain mask before cleaning, uint8) on the subject's own grid (MNI152: already at spacing_mm)."""
    if name == "colin27":
        t1, brain = samples.colin27_t1(), samples.colin27_t1_brain()
        return t1.with_array(t1.array.astype(np.float32)), brain.with_array((brain.array > 0).astype(np.uint8))
    if name == "mni152":
        from .tissue import mni152_tissues

        maps = mni152_tissues(spacing_mm)
        return maps.t1, maps.intracranial
    if name == "kmeans":
        t1, classes = samples.kmeans_t1()
        return t1.with_array(t1.array.astype(np.float32)), classes.with_array(np.isin(classes.array, (5, 6)).astype(
            np.uint8))
    raise ValueError(f"Unknown subject {name!r}; use one of {SUBJECTS}.")


def load_subject(name: str, spacing_mm: float = 2.0) -> BrainSubject:
    """One of :data:`SUBJECTS` on a ``spacing_mm`` isotropic RAS grid, intensities scaled to tissue median 1."""
    return _load_subject(str(name), float(spacing_mm))


@lru_cache(maxsize=8)
def _load_subject(name: str, spacing_mm: float) -> BrainSubject:
    t1, brain = _raw_subject(name, spacing_mm)
    t1 = resample_to_spacing(reorient(t1, "RAS"), (spacing_mm,) * 3, "linear", default_value=0.0)
    brain = resample_to_reference(brain.with_array(brain.array.astype(np.float32)), t1, "nearest")
    brain_mask = _closed_filled(brain.array > 0.5, (spacing_mm,) * 3)
    values = t1.array[brain_mask > 0]
    threshold = _otsu(values)
    tissue = ((t1.array > threshold) & (brain_mask > 0)).astype(np.uint8)
    scale = float(np.median(t1.array[tissue > 0]))
    array = np.clip(t1.array / scale, 0.0, None).astype(np.float32)
    return BrainSubject(name, t1.with_array(array, description=f"{name} T1 / tissue median"), brain_mask, tissue)


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D sample (between-class variance maximised over a histogram)."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist).astype(float)
    weight_above = weight[-1] - weight
    mean_below = np.cumsum(hist * centres) / np.maximum(weight, 1)
    mean_above = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(weight_above, 1)
    between = weight * weight_above * (mean_below - mean_above) ** 2
    return float(centres[int(np.argmax(between))])


# ---- patches and lesions -------------------------------------------------------------------------------------------
def candidate_corners(subject: BrainSubject, size: int, stride: int = 4, min_brain: float = 0.5,
                      min_tissue: float = 0.25) -> np.ndarray:
    """Patch corners (z, y, x) whose cube holds at least ``min_brain`` brain and ``min_tissue`` tissue."""
    nz, ny, nx = subject.brain.shape
    starts = [np.arange(0, n - size + 1, stride) for n in (nz, ny, nx)]
    zz, yy, xx = np.meshgrid(*starts, indexing="ij")
    brain = _box_means(subject.brain, size)[zz, yy, xx]
    tissue = _box_means(subject.tissue, size)[zz, yy, xx]
    keep = (brain >= min_brain) & (tissue >= min_tissue)
    corners = np.stack([zz[keep], yy[keep], xx[keep]], axis=1)
    if not len(corners):
        raise ValueError(f"No {size}³ patch of subject {subject.name} holds enough brain; use a smaller size.")
    return corners.astype(np.int64)


def _box_means(mask: np.ndarray, size: int) -> np.ndarray:
    """Mean of ``mask`` over every size³ box, indexed by the box's first corner (a summed-volume table)."""
    table = np.zeros(tuple(n + 1 for n in mask.shape))
    table[1:, 1:, 1:] = mask.astype(np.float64).cumsum(0).cumsum(1).cumsum(2)
    s = size
    total = (table[s:, s:, s:] - table[:-s, s:, s:] - table[s:, :-s, s:] - table[s:, s:, :-s]
             + table[:-s, :-s, s:] + table[:-s, s:, :-s] + table[s:, :-s, :-s] - table[:-s, :-s, :-s])
    return total / size ** 3


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def _smooth_noise(shape: tuple[int, ...], rng: np.random.Generator, sigma: float = 1.0) -> np.ndarray:
    """Gaussian-smoothed white noise scaled into [-1, 1]: the lesion's texture."""
    image = sitk.GetImageFromArray(rng.normal(size=shape).astype(np.float32))
    smooth = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image, sigma))
    return smooth / max(float(np.abs(smooth).max()), 1e-6)


def add_lesion(image: np.ndarray, tissue: np.ndarray, spacing_mm: float, rng: np.random.Generator,
               spec: LesionSpec = LesionSpec(), max_tries: int = 50) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """A copy of ``image`` with one ellipsoidal lesion in ``tissue``, its mask and parameters; None if none fits.

    intensity' = intensity · (1 ± c · (1 − r²/2) · (1 + t · noise)), r the ellipsoid radius (0 at the centre,
    1 at the rim), c the contrast, t the texture, noise smooth in [−1, 1]. The factor's deviation from 1 is at
    least c/2 · (1 − t) > 0 inside the mask, so every mask voxel changes and no other voxel does.
    """
    inside = np.argwhere(tissue > 0)
    if inside.size == 0:
        return None
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in image.shape], indexing="ij"), -1).astype(np.float64)
    for _ in range(max_tries):
        centre = inside[rng.integers(len(inside))] + rng.uniform(-0.5, 0.5, 3)
        axes_mm = rng.uniform(*spec.semi_axis_mm, 3)
        rotation = _rotation(rng)
        local = ((grid - centre) * spacing_mm) @ rotation / axes_mm
        radius2 = np.sum(local ** 2, axis=-1)
        mask = (radius2 <= 1.0) & (tissue > 0)
        count = int(mask.sum())
        if not spec.min_voxels <= count <= spec.max_voxels:
            continue
        contrast = float(rng.uniform(*spec.contrast))
        texture = float(rng.uniform(*spec.texture))
        sign = 1.0 if rng.uniform() < spec.bright_fraction else -1.0
        noise = _smooth_noise(image.shape, rng)
        factor = 1.0 + sign * contrast * (1.0 - radius2 / 2.0) * (1.0 + texture * noise)
        out = image.copy()
        out[mask] = (image[mask] * factor[mask]).astype(image.dtype)
        parameters = {"centre_zyx": [float(c) for c in centre], "semi_axes_mm": [float(a) for a in axes_mm],
                      "contrast": sign * contrast, "texture": texture, "voxels": count}
        return out, mask.astype(np.uint8), parameters
    return None


def make_patches(subjects: Sequence[str], count: int, size: int = 32, seed: int = 0, spacing_mm: float = 2.0,
                 lesion_fraction: float = 0.5, spec: LesionSpec = LesionSpec(), stride: int = 4) -> PatchSet:
    """``count`` patches drawn round-robin from ``subjects``; the first ``round(lesion_fraction·count)`` of a
    random permutation get a lesion. Healthy patches are exact copies of the subject's voxels."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}.")
    rng = np.random.default_rng(seed)
    loaded = [load_subject(name, spacing_mm) for name in subjects]
    corner_sets = [candidate_corners(s, size, stride) for s in loaded]
    with_lesion = np.zeros(count, dtype=bool)
    with_lesion[rng.permutation(count)[: int(round(lesion_fraction * count))]] = True
    images, lesions, brains, labels, names, corners, origins, parameters = [], [], [], [], [], [], [], []
    for i in range(count):
        k = i % len(loaded)
        subject = loaded[k]
        while True:
            z, y, x = corner_sets[k][rng.integers(len(corner_sets[k]))]
            box = (slice(z, z + size), slice(y, y + size), slice(x, x + size))
            image = subject.t1.array[box].copy()
            lesion = np.zeros(image.shape, np.uint8)
            info: dict = {}
            if with_lesion[i]:
                made = add_lesion(image, subject.tissue[box], spacing_mm, rng, spec)
                if made is None:
                    continue
                image, lesion, info = made
            break
        images.append(image[None])
        lesions.append(lesion)
        brains.append(subject.brain[box].copy())
        labels.append(int(with_lesion[i]))
        names.append(subject.name)
        corners.append((z, y, x))
        origins.append((subject.t1.ijk_to_lps() @ np.array([x, y, z, 1.0]))[:3])
        parameters.append(info)
    return PatchSet(np.stack(images).astype(np.float32), np.stack(lesions), np.stack(brains),
                    np.asarray(labels, np.int64), names, np.asarray(corners, np.int64), np.asarray(origins),
                    spacing_mm, parameters)


# ---- holes for the inpainter ---------------------------------------------------------------------------------------
def random_holes(size: int, rng: np.random.Generator, max_fraction: float = 0.25, edge: int | None = None
                 ) -> np.ndarray:
    """A (size, size, size) uint8 hole mask (1 = hole) as the paper trains its inpainter with, scaled to 3D.

    The paper drops up to 400 squares of 8² pixels on 576×448 mammograms (≤ 10 % of the image), "both single
    small holes and larger clusters". Here: cubes of edge ``edge//2 .. edge`` voxels (default size/8, i.e. 4 for
    32³), as many as cover at most ``max_fraction`` of the patch if they did not overlap, centred uniformly
    (single holes) or around 1–3 cluster centres (clusters), one or the other with equal chance.
    """
    edge = edge or max(2, size // 8)
    most = max(1, int(max_fraction * size ** 3 / edge ** 3))
    count = int(rng.integers(1, most + 1))
    if rng.uniform() < 0.5:
        centres = rng.uniform(0, size, (count, 3))
    else:
        clusters = rng.uniform(size / 8, size - size / 8, (int(rng.integers(1, 4)), 3))
        centres = clusters[rng.integers(len(clusters), size=count)] + rng.normal(0, size / 8, (count, 3))
    holes = np.zeros((size,) * 3, np.uint8)
    for centre, side in zip(centres, rng.integers(max(1, edge // 2), edge + 1, count)):
        lo = np.clip(np.round(centre - side / 2).astype(int), 0, size)
        hi = np.clip(lo + side, 0, size)
        holes[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = 1
    return holes
