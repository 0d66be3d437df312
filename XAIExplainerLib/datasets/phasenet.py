"""PhaseNet's bead simulation (Saha et al. 2020, mpicbg-csbd/phasenet, BSD-3), vectorised: the seed problem of
Image-Reg-LIME (aberrated 3D images of a sub-resolution fluorescent bead, 11 Zernike amplitudes to regress).

What is replicated from ``phasenet/psf.py``, ``zernike.py``, ``noise.py``, ``utils.py`` and ``model.py``:

- Zernike modes by Noll index, normalised as PhaseNet's ``normed=True``: ``mean over the unit pupil of Z_j Z_k =
  δ_jk`` (so an amplitude is the RMS wavefront error in µm); θ = atan2(k_y, k_x);
- the 11 modes Noll 5–15 (2nd order without defocus, 3rd, 4th), amplitudes uniform in ±0.15 µm;
- detection NA 1.1, refractive index 1.33, wavelength 0.5 µm, voxel 0.1 µm axial × 0.086 µm lateral;
- PSF: for each defocus plane z, ``|IFFT2(pupil · exp(−2πi z/λ · sqrt(n² − λ²k²)) · exp(2πi φ/λ))|²``, each plane
  normalised to sum 1, simulated on 64³ (z, y, x), centre at index 32 along every axis;
- the bead is PhaseNet's default phantom (one point at the centre), so the image is the PSF itself;
- noise as ``phasenet.noise.add_random_noise``: the PSF scaled by ``(p − min)/(max + min)``, then
  ``N(mean, σ) + p·mean·snr + Poisson(int(max(1, p·snr + 1)))`` with mean 100, σ 3.5, snr ~ U(1, 5), clipped at 0;
- a 32³ crop whose centre jitters by up to ±4 voxels per axis (``cropper3D``'s default ``max_jitter``);
- the network input is the crop scaled between its 3rd and 99.8th percentiles (csbdeep's ``normalize``).

Differences (all deliberate): everything is drawn from one ``numpy.random.Generator`` (PhaseNet mixes
``np.random`` and ``random``), so a seed fixes a data set; PSFs are computed in complex64 for a whole batch at
once. Sign flip of an amplitude (what PhaseNet's ambiguity analysis rests on): for the modes even under
k → −k (m even: astigmatisms, spherical, quadrafoils) the PSF is mirrored along z; for the odd modes (comas,
trefoils, m odd) the PSF is z-symmetric for either sign and the flip mirrors it laterally (x, y → −x, −y).
Both follow from the Fourier transform of a conjugated pupil and are tested.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..volume import Volume

NOLL_MODES: tuple[int, ...] = tuple(range(5, 16))
#: PhaseNet's names (its ANSI-ordered list), keyed by Noll index.
MODE_NAMES: dict[int, str] = {
    5: "oblique_astigmatism", 6: "vertical_astigmatism", 7: "vertical_coma", 8: "horizontal_coma",
    9: "vertical_trefoil", 10: "oblique_trefoil", 11: "primary_spherical", 12: "vertical_secondary_astigmatism",
    13: "oblique_secondary_astigmatism", 14: "vertical_quadrafoil", 15: "oblique_quadrafoil",
}
TARGET_NAMES: list[str] = [MODE_NAMES[j] for j in NOLL_MODES]


@dataclass(frozen=True)
class Optics:
    """PhaseNet's microscope and data settings (lengths in µm; shapes and spacing in (z, y, x) order)."""

    na: float = 1.1
    refractive_index: float = 1.33
    wavelength: float = 0.5
    spacing_zyx: tuple[float, float, float] = (0.1, 0.086, 0.086)
    psf_shape: tuple[int, int, int] = (64, 64, 64)
    crop_shape: tuple[int, int, int] = (32, 32, 32)
    max_jitter: int = 4
    amplitude: float = 0.15
    snr: tuple[float, float] = (1.0, 5.0)
    noise_mean: float = 100.0
    noise_sigma: float = 3.5


# --------------------------------------------------------------------------------------------- Zernike modes
def noll_to_nm(j: int) -> tuple[int, int]:
    """Radial order n and signed azimuthal frequency m of Noll index j (PhaseNet's ``nm_to_noll`` inverted)."""
    if isinstance(j, bool) or not isinstance(j, (int, np.integer)) or j < 1:
        raise ValueError(f"Noll index must be an integer >= 1, got {j!r}.")
    n = 0
    while (n + 1) * (n + 2) // 2 < j:
        n += 1
    for m in range(-n, n + 1, 2):
        base = n * (n + 1) // 2 + abs(m)
        if m > 0 and n % 4 in (0, 1) or m < 0 and n % 4 in (2, 3):
            noll = base
        elif m >= 0 and n % 4 in (2, 3) or m <= 0 and n % 4 in (0, 1):
            noll = base + 1
        if noll == j:
            return n, m
    raise AssertionError(f"no (n, m) for Noll index {j}")  # unreachable: every j >= 1 has one


def zernike(j: int, rho: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Noll mode j on polar coordinates, orthonormal on the unit disc (mean of Z² over the disc = 1), 0 outside."""
    n, m = noll_to_nm(j)
    radial = np.zeros_like(rho, dtype=np.float64)
    for k in range((n - abs(m)) // 2 + 1):
        radial += ((-1.0) ** k * math.comb(n - k, k) * math.comb(n - 2 * k, (n - abs(m)) // 2 - k)
                   * rho ** (n - 2 * k))
    radial *= rho <= 1.0
    norm = math.sqrt((2.0 * n + 2.0) / (1.0 + (m == 0)))
    return norm * radial * (np.cos(m * theta) if m >= 0 else np.sin(-m * theta))


# --------------------------------------------------------------------------------------------- PSF
class PsfSimulator:
    """PhaseNet's ``PsfGenerator3D`` + ``Data``, batched: PSFs, noisy jittered crops and their amplitudes."""

    def __init__(self, optics: Optics = Optics(), modes: Sequence[int] = NOLL_MODES) -> None:
        self.optics = optics
        self.modes = tuple(int(j) for j in modes)
        nz, ny, nx = optics.psf_shape
        dz, dy, dx = optics.spacing_zyx
        ky, kx = np.meshgrid(np.fft.fftfreq(ny, dy), np.fft.fftfreq(nx, dx), indexing="ij")
        kr = np.hypot(kx, ky)
        kcut = optics.na / optics.wavelength
        self.pupil = kr <= kcut
        z = dz * (np.arange(nz) - nz // 2)
        h = np.sqrt(np.clip(optics.refractive_index ** 2 - (kr * optics.wavelength) ** 2, 0.0, None))
        prop = np.exp(-2j * np.pi * z[:, None, None] / optics.wavelength * h[None])
        self.kbase = (prop * self.pupil[None]).astype(np.complex64)  # (z, ky, kx)
        rho, theta = kr / kcut, np.arctan2(ky, kx)
        self.basis = np.stack([zernike(j, rho, theta) * self.pupil for j in self.modes]).astype(np.float32)

    def phase(self, amplitudes: np.ndarray) -> np.ndarray:
        """Wavefront φ (µm) on the pupil grid, (B, ky, kx), for amplitudes (B, modes)."""
        return np.tensordot(np.atleast_2d(amplitudes).astype(np.float32), self.basis, axes=1)

    def psf(self, amplitudes: np.ndarray) -> np.ndarray:
        """Incoherent PSFs (B, z, y, x) float32 on ``psf_shape``, each z-plane summing to 1, centre at N//2."""
        amplitudes = np.atleast_2d(np.asarray(amplitudes, dtype=np.float64))
        if amplitudes.shape[1] != len(self.modes):
            raise ValueError(f"amplitudes must have {len(self.modes)} columns (Noll {self.modes}), got "
                             f"shape {amplitudes.shape}.")
        aberration = np.exp(2j * np.pi / self.optics.wavelength * self.phase(amplitudes)).astype(np.complex64)
        field = np.fft.ifft2(self.kbase[None] * aberration[:, None], axes=(2, 3))
        intensity = (field.real ** 2 + field.imag ** 2).astype(np.float32)
        intensity /= intensity.sum(axis=(2, 3), keepdims=True)
        return np.fft.fftshift(intensity, axes=(2, 3))

    def random_amplitudes(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        """Amplitudes uniform in ±``optics.amplitude`` µm, (batch, modes)."""
        a = self.optics.amplitude
        return rng.uniform(-a, a, size=(batch, len(self.modes)))

    def scale(self, psf: np.ndarray) -> np.ndarray:
        """PhaseNet's pre-noise scaling of each PSF (B, z, y, x): ``(p − min) / (max + min)`` over the whole PSF."""
        low = psf.min(axis=(1, 2, 3), keepdims=True)
        return (psf - low) / (psf.max(axis=(1, 2, 3), keepdims=True) + low)

    def add_noise(self, image: np.ndarray, rng: np.random.Generator, snr: np.ndarray | float | None = None
                  ) -> np.ndarray:
        """PhaseNet's Gaussian + Poisson camera noise on scaled PSFs (B, ...); snr ~ U(1, 5) when None.

        The noise is independent per voxel, so it is added after cropping (8× fewer draws, same distribution).
        """
        o = self.optics
        batch = image.shape[0]
        snr = rng.uniform(*o.snr, size=batch) if snr is None else np.broadcast_to(np.asarray(snr, float), (batch,))
        snr = snr.reshape((-1,) + (1,) * (image.ndim - 1)).astype(np.float32)
        gaussian = o.noise_mean + o.noise_sigma * rng.standard_normal(image.shape, dtype=np.float32)
        signal = image * np.float32(o.noise_mean) * snr
        poisson = rng.poisson(np.maximum(1, image * snr + 1).astype(np.int64)).astype(np.float32)
        return np.maximum(0.0, gaussian + signal + poisson).astype(np.float32)

    def crop(self, volumes: np.ndarray, rng: np.random.Generator | None, jitter: bool = True) -> np.ndarray:
        """``crop_shape`` windows around the centre of each volume, moved by up to ±max_jitter voxels per axis."""
        if jitter and rng is None:
            raise ValueError("crop: jitter needs a numpy Generator (rng); pass one or jitter=False.")
        half = [c // 2 for c in self.optics.crop_shape]
        centre = [s // 2 for s in volumes.shape[1:]]
        out = np.empty((volumes.shape[0], *self.optics.crop_shape), np.float32)
        for b in range(volumes.shape[0]):
            shift = rng.integers(-self.optics.max_jitter, self.optics.max_jitter + 1, 3) if jitter else (0, 0, 0)
            lo = [c - int(s) - h for c, s, h in zip(centre, shift, half)]
            out[b] = volumes[b, lo[0]:lo[0] + 2 * half[0], lo[1]:lo[1] + 2 * half[1], lo[2]:lo[2] + 2 * half[2]]
        return out

    def batch(self, rng: np.random.Generator, batch: int, amplitudes: np.ndarray | None = None,
              snr: np.ndarray | float | None = None, jitter: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Raw noisy bead crops (B, 32, 32, 32) and their amplitudes (B, 11), as PhaseNet's ``Data`` makes them."""
        amplitudes = self.random_amplitudes(rng, batch) if amplitudes is None else np.atleast_2d(amplitudes)
        crops = self.crop(self.scale(self.psf(amplitudes)), rng, jitter)
        return self.add_noise(crops, rng, snr), np.asarray(amplitudes, dtype=np.float64)


def normalize_percentiles(x: np.ndarray, low: float = 3.0, high: float = 99.8) -> np.ndarray:
    """csbdeep's ``normalize`` per volume (B, ...): scaled between its ``low`` and ``high`` percentiles."""
    x = np.asarray(x, dtype=np.float32)
    axes = tuple(range(1, x.ndim))
    lo = np.percentile(x, low, axis=axes, keepdims=True)
    hi = np.percentile(x, high, axis=axes, keepdims=True)
    return ((x - lo) / np.maximum(hi - lo, 1e-20)).astype(np.float32)


def bead_volume(amplitudes: Sequence[float] | None = None, seed: int = 0, snr: float | None = None,
                jitter: bool = True, optics: Optics = Optics()) -> tuple[Volume, np.ndarray]:
    """One simulated 32³ bead as a :class:`Volume` (spacing in µm: x, y 0.086, z 0.1) and its amplitudes.

    The volume holds the raw noisy counts; the shipped PhaseNet config normalises them as in training.
    """
    simulator = PsfSimulator(optics)
    rng = np.random.default_rng(seed)
    given = None if amplitudes is None else np.asarray(amplitudes, dtype=np.float64).reshape(1, -1)
    image, amps = simulator.batch(rng, 1, given, snr, jitter)
    dz, dy, dx = optics.spacing_zyx
    meta = {"modality": "fluorescence microscopy (simulated bead)", "unit": "µm",
            "description": "PhaseNet-simulated bead", "seed": int(seed),
            "amplitudes_um": {name: float(a) for name, a in zip(TARGET_NAMES, amps[0])}}
    return Volume(image[0], spacing=(dx, dy, dz), metadata=meta), amps[0]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m XAIExplainerLib.datasets.phasenet --output bead.nii.gz``: write one simulated bead."""
    from ..io import write_json
    from ..volume import write_volume

    p = argparse.ArgumentParser(description="Write one PhaseNet-simulated bead (NIfTI, spacing in µm) and its "
                                            "ground-truth amplitudes (JSON beside it).")
    p.add_argument("--output", required=True, help="bead file (.nii.gz / .nrrd)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--amplitudes", type=float, nargs=len(NOLL_MODES), metavar="A",
                   help=f"the 11 amplitudes (µm) of Noll {NOLL_MODES[0]}-{NOLL_MODES[-1]} (default: random)")
    p.add_argument("--snr", type=float, help="signal-to-noise factor (default: uniform in 1-5)")
    args = p.parse_args(argv)
    volume, amps = bead_volume(args.amplitudes, args.seed, args.snr)
    out = write_volume(volume, args.output)
    stem = out.name.split(".")[0]
    write_json(out.with_name(stem + "_amplitudes.json"),
               {"unit": "µm", "seed": args.seed, "amplitudes": dict(zip(TARGET_NAMES, map(float, amps)))})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["MODE_NAMES", "NOLL_MODES", "Optics", "PsfSimulator", "TARGET_NAMES", "bead_volume", "noll_to_nm",
           "normalize_percentiles", "zernike"]
