"""A seeded synthetic thorax CT with a label map, for fast and exactly reproducible tests of explainers.

The anatomy is drawn in millimetres in SimpleITK's LPS frame (x → patient left, y → posterior, z → superior):
an elliptical body with subcutaneous fat and chest-wall muscle, two lungs, the heart (anterior, left of the
midline), the descending aorta, the trachea, vertebral bodies with discs and a posterior arch around the
spinal cord, ribs, the sternum and, in the lowest slices, the liver on the right under the diaphragm. Each
tissue gets a realistic Hounsfield value, a smooth texture and white acquisition noise. When the field of view
is smaller than an adult thorax, the in-plane anatomy shrinks to fit, so any (shape, spacing) gives a
complete body; the craniocaudal extent always spans the field of view (abdomen at the bottom, lung apices at
the top).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import InvalidVolumeError
from ..volume import Volume

__all__ = ["LABEL_NAMES", "TISSUE_HU", "PhantomAnatomy", "thorax_phantom"]

#: Label index → structure name (index 0 is background air outside the body).
LABEL_NAMES: list[str] = [
    "background",
    "fat",
    "muscle",
    "soft_tissue",
    "lung_left",
    "lung_right",
    "heart",
    "aorta",
    "trachea",
    "vertebrae",
    "intervertebral_disc",
    "spinal_cord",
    "ribs",
    "sternum",
    "liver",
]
_L = {name: i for i, name in enumerate(LABEL_NAMES)}

#: Mean Hounsfield value and texture standard deviation of each structure (unenhanced adult CT).
#: Vertebrae mix cancellous (450 HU) and cortical (950 HU) bone, so their mean lies between the two.
TISSUE_HU: dict[str, tuple[float, float]] = {
    "background": (-1000.0, 0.0),
    "fat": (-100.0, 8.0),
    "muscle": (50.0, 6.0),
    "soft_tissue": (30.0, 8.0),
    "lung_left": (-850.0, 25.0),
    "lung_right": (-850.0, 25.0),
    "heart": (40.0, 5.0),
    "aorta": (45.0, 4.0),
    "trachea": (-1000.0, 0.0),
    "vertebrae": (450.0, 40.0),
    "intervertebral_disc": (80.0, 6.0),
    "spinal_cord": (35.0, 4.0),
    "ribs": (700.0, 50.0),
    "sternum": (500.0, 40.0),
    "liver": (60.0, 6.0),
}
_CORTICAL_HU = 950.0
#: Blood in the heart and aorta after an iodinated contrast bolus (arterial phase).
_CONTRAST_BLOOD_HU = 300.0
_HU_CLIP = (-1024.0, 3071.0)


@dataclass(frozen=True)
class PhantomAnatomy:
    """Adult sizes in mm (before the in-plane fit to the field of view) and craniocaudal levels as fractions.

    ``diaphragm`` is the fraction of the z extent (0 = bottom slice, 1 = top) where the lung bases sit.
    """

    body_half_width: float = 165.0
    body_half_depth: float = 115.0
    fat_thickness: float = 14.0
    muscle_thickness: float = 16.0
    lung_half_width: float = 62.0
    lung_half_depth: float = 88.0
    lung_offset_x: float = 78.0
    heart_radii: tuple[float, float, float] = (58.0, 48.0, 55.0)
    heart_center: tuple[float, float] = (22.0, -28.0)
    aorta_radius: float = 12.0
    aorta_center: tuple[float, float] = (24.0, 42.0)
    trachea_radius: float = 9.0
    vertebra_radii: tuple[float, float] = (22.0, 17.0)
    vertebra_center_y: float = 62.0
    canal_radius: float = 8.0
    arch_thickness: float = 6.0
    vertebra_period: float = 28.0
    disc_fraction: float = 0.25
    rib_thickness: float = 9.0
    rib_period: float = 26.0
    sternum_radii: tuple[float, float] = (16.0, 7.0)
    liver_radii: tuple[float, float, float] = (95.0, 80.0, 80.0)
    liver_center: tuple[float, float] = (-55.0, 5.0)
    diaphragm: float = 0.33


def _as_triple(value: "float | Sequence[float]", name: str, cast: type) -> tuple:
    values = (value,) * 3 if np.isscalar(value) else tuple(value)  # type: ignore[arg-type]
    if len(values) != 3:
        raise InvalidVolumeError(f"The phantom {name} needs 1 or 3 values, got {values}.")
    return tuple(cast(v) for v in values)


def thorax_phantom(
    shape: "int | Sequence[int]" = (64, 64, 64),
    spacing: "float | Sequence[float]" = 3.0,
    seed: int = 0,
    noise_hu: float = 15.0,
    contrast: bool = False,
    anatomy: PhantomAnatomy | None = None,
) -> tuple[Volume, Volume, list[str]]:
    """Build a thorax CT and its label map; the same arguments always give bit-identical volumes.

    Args:
        shape: voxels as (z, y, x) (numpy order), or one int for a cube. At least 16 per axis.
        spacing: voxel size in mm as (x, y, z) (SimpleITK order), or one value.
        seed: drives the anatomical variation (sizes and positions ±5 %), the texture and the noise.
        noise_hu: standard deviation of the white acquisition noise in HU.
        contrast: arterial-phase blood (300 HU) in the heart and aorta instead of unenhanced blood.
        anatomy: sizes and levels; the defaults describe an adult.

    Returns:
        ``(ct, labels, label_names)``: ``ct`` int16 HU, ``labels`` uint8 on the same grid, and the names of
        the label indices. The volumes are centred on the physical origin with identity (LPS) direction.
    """
    from scipy import ndimage

    shape_zyx = _as_triple(shape, "shape", int)
    spacing_xyz = _as_triple(spacing, "spacing", float)
    if min(shape_zyx) < 16:
        raise InvalidVolumeError(f"The phantom needs at least 16 voxels per axis to draw its organs, got {shape_zyx}.")
    if any(not np.isfinite(s) or s <= 0 for s in spacing_xyz):
        raise InvalidVolumeError(f"Phantom spacing must be positive and finite, got {spacing_xyz}.")
    if not np.isfinite(noise_hu) or noise_hu < 0:
        raise InvalidVolumeError(f"noise_hu must be a finite value ≥ 0, got {noise_hu}.")
    a = anatomy or PhantomAnatomy()
    rng = np.random.default_rng(seed)

    def jitter(v: float) -> float:
        """Patient-to-patient variation: ±5 % (1 SD), clipped at ±10 %."""
        return float(v * (1.0 + np.clip(rng.normal(0.0, 0.05), -0.1, 0.1)))

    nz, ny, nx = shape_zyx
    sx, sy, sz = spacing_xyz
    fov_x, fov_y = nx * sx, ny * sy
    # Shrink the in-plane anatomy (not the field of view) when an adult thorax would not fit.
    scale = min(1.0, 0.92 * fov_x / (2 * a.body_half_width), 0.92 * fov_y / (2 * a.body_half_depth))

    def mm(v: float) -> float:
        return jitter(v) * scale

    # Voxel-centre coordinates in mm, centred on the field of view; z as a fraction t of its extent.
    x = ((np.arange(nx) - (nx - 1) / 2) * sx).astype(np.float32)[None, None, :]
    y = ((np.arange(ny) - (ny - 1) / 2) * sy).astype(np.float32)[None, :, None]
    zmm = ((np.arange(nz) - (nz - 1) / 2) * sz).astype(np.float32)[:, None, None]
    t = (np.arange(nz) / (nz - 1)).astype(np.float32)[:, None, None]
    fov_z = nz * sz

    labels = np.zeros(shape_zyx, dtype=np.uint8)
    cortical = np.zeros(shape_zyx, dtype=bool)

    def paint(mask: np.ndarray, name: str) -> None:
        labels[np.broadcast_to(mask, shape_zyx)] = _L[name]

    def ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2

    # Body wall: fat outside, muscle inside it, then the cavity (mediastinal fat above the diaphragm,
    # abdominal soft tissue below).
    bw, bd = mm(a.body_half_width), mm(a.body_half_depth)
    fat_t, mus_t = mm(a.fat_thickness), mm(a.muscle_thickness)
    paint(ellipse(0, 0, bw, bd) <= 1, "fat")
    muscle = ellipse(0, 0, bw - fat_t, bd - fat_t) <= 1
    paint(muscle, "muscle")
    cavity = ellipse(0, 0, bw - fat_t - mus_t, bd - fat_t - mus_t) <= 1
    diaphragm = float(np.clip(jitter(a.diaphragm), 0.2, 0.5))
    paint(cavity & (t >= diaphragm), "fat")
    paint(cavity & (t < diaphragm), "soft_tissue")

    # Liver: right side (LPS x < 0), bottom slices, under the right lung base.
    lr = [mm(r) for r in a.liver_radii[:2]] + [jitter(a.liver_radii[2]) * min(1.0, fov_z / 300.0)]
    lc = (mm(a.liver_center[0]), mm(a.liver_center[1]))
    liver_z0 = (diaphragm - 0.08 - 0.5) * fov_z
    paint(cavity & (ellipse(*lc, lr[0], lr[1]) + ((zmm - liver_z0) / lr[2]) ** 2 <= 1), "liver")

    # Lungs: half-ellipsoids from the (domed) base at the diaphragm up to the apex near the top slice.
    lung_w, lung_d, lung_dx = mm(a.lung_half_width), mm(a.lung_half_depth), mm(a.lung_offset_x)
    for side, name in ((+1, "lung_left"), (-1, "lung_right")):
        base = diaphragm + (0.03 if side < 0 else 0.0)  # the right dome sits higher, over the liver
        height = 1.02 - base
        tz = (t - base) / height  # 0 at the base, 1 at the apex
        radial = ellipse(side * lung_dx, mm(5.0), lung_w, lung_d)
        # The cross-section shrinks towards the apex, and the base is domed (higher in the middle).
        taper = np.clip(1.0 - np.clip(tz - 0.6, 0, None) ** 2 / 0.18, 0.05, 1.0)
        dome = 0.06 * (1.0 - np.clip(radial, 0, 1))
        paint(cavity & (radial <= taper) & (tz >= dome) & (tz <= 1.0), name)

    # Heart: ellipsoid anterior and left of the midline, just above the diaphragm.
    hr = [mm(a.heart_radii[0]), mm(a.heart_radii[1]), jitter(a.heart_radii[2]) * min(1.0, fov_z / 300.0)]
    hc = (mm(a.heart_center[0]), mm(a.heart_center[1]), (diaphragm + 0.17 - 0.5) * fov_z)
    paint(cavity & (ellipse(hc[0], hc[1], hr[0], hr[1]) + ((zmm - hc[2]) / hr[2]) ** 2 <= 1), "heart")

    # Descending aorta (full length, left-anterior of the spine) and trachea (upper third, midline).
    ac = (mm(a.aorta_center[0]), mm(a.aorta_center[1]))
    ar = mm(a.aorta_radius)
    paint(ellipse(ac[0], ac[1], ar, ar) <= 1, "aorta")
    tr = mm(a.trachea_radius)
    paint((ellipse(0, mm(20.0), tr, tr) <= 1) & (t >= 0.7), "trachea")

    # Spine: vertebral bodies (cortical rim) separated by discs, posterior arch with spinous process,
    # spinal cord in the canal. Period and disc height in mm, at least 3 slices per vertebra.
    vr = (mm(a.vertebra_radii[0]), mm(a.vertebra_radii[1]))
    vy = mm(a.vertebra_center_y)
    period = max(a.vertebra_period * scale, 3 * sz)
    phase = rng.uniform(0, period)
    in_disc = ((zmm - phase) % period) < a.disc_fraction * period
    body_r = ellipse(0, vy, *vr)
    paint((body_r <= 1) & ~in_disc, "vertebrae")
    paint((body_r <= 1) & in_disc, "intervertebral_disc")
    rim = (body_r <= 1) & (body_r >= 0.6) & ~in_disc
    canal_r = mm(a.canal_radius)
    canal_y = vy + vr[1] + canal_r
    arch = ellipse(0, canal_y, canal_r + mm(a.arch_thickness), canal_r + mm(a.arch_thickness)) <= 1
    spinous = ellipse(0, canal_y + canal_r + mm(12.0), mm(5.0), mm(12.0)) <= 1
    posterior = np.broadcast_to((arch | spinous) & (y > vy), shape_zyx)
    paint(posterior, "vertebrae")
    cortical |= np.broadcast_to(rim, shape_zyx) | posterior
    paint(ellipse(0, canal_y, canal_r, canal_r) <= 1, "spinal_cord")

    # Ribs: bands in the muscle wall above the diaphragm, sloping down towards the front, with gaps at the
    # sternum and the spine.
    rib_mid = ellipse(0, 0, bw - fat_t - mus_t / 2, bd - fat_t - mus_t / 2)
    rib_half = mm(a.rib_thickness) / 2 / min(bw, bd)
    wall = np.abs(np.sqrt(rib_mid) - 1.0) <= rib_half
    rib_period = max(a.rib_period * scale, 3 * sz)
    slope = 0.8 * rib_period * (-y / bd)  # anterior ends lower than posterior
    rib_phase = rng.uniform(0, rib_period)
    band = ((zmm - slope - rib_phase) % rib_period) < max(0.35 * rib_period, sz)
    gaps = ((np.abs(x) < mm(28.0)) & (y < 0)) | ((np.abs(x) < mm(35.0)) & (y > 0))
    paint(wall & band & ~gaps & (t >= diaphragm - 0.05), "ribs")

    # Sternum: anterior midline, mid-thorax.
    sr = (mm(a.sternum_radii[0]), mm(a.sternum_radii[1]))
    st = ellipse(0, -(bd - fat_t - mus_t / 2), *sr) <= 1
    paint(st & (t >= diaphragm + 0.05) & (t <= 0.95), "sternum")

    # Intensities: tissue mean + smooth texture (one field, scaled per tissue) + white noise.
    mean_hu = np.array([TISSUE_HU[n][0] for n in LABEL_NAMES], dtype=np.float32)
    texture_sd = np.array([TISSUE_HU[n][1] for n in LABEL_NAMES], dtype=np.float32)
    if contrast:
        mean_hu[[_L["heart"], _L["aorta"]]] = _CONTRAST_BLOOD_HU
    ct = mean_hu[labels]
    ct[cortical & (labels == _L["vertebrae"])] = _CORTICAL_HU
    field = ndimage.gaussian_filter(rng.standard_normal(shape_zyx).astype(np.float32), sigma=1.5)
    field /= max(float(field.std()), 1e-6)
    ct += texture_sd[labels] * field
    if noise_hu > 0:
        ct += rng.normal(0.0, noise_hu, shape_zyx).astype(np.float32)
    ct = np.clip(np.rint(ct), *_HU_CLIP).astype(np.int16)

    origin = tuple(-(n - 1) / 2 * s for n, s in zip(shape_zyx[::-1], spacing_xyz))
    meta = {"modality": "CT", "description": "synthetic thorax phantom", "seed": int(seed)}
    ct_volume = Volume(ct, spacing=spacing_xyz, origin=origin, metadata=meta)
    label_volume = Volume(labels, spacing=spacing_xyz, origin=origin, metadata={**meta, "modality": "labels"})
    return ct_volume, label_volume, list(LABEL_NAMES)
