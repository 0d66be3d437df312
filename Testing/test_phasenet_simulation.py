"""PhaseNet's bead simulation (datasets/phasenet.py) against known answers: Noll indexing, orthonormal Zernike modes,
symmetries of the aberration-free PSF, astigmatism's focal lines on the side optics predicts, the sign-flip
mirror PhaseNet relies on, noise level, jitter range, determinism, and a bead written with its µm spacing."""
from __future__ import annotations

import json

import numpy as np
import pytest

from XAIExplainerLib.datasets.phasenet import (NOLL_MODES, Optics, PsfSimulator, bead_volume, main, noll_to_nm,
                                               normalize_percentiles, zernike)
from XAIExplainerLib.volume import read_volume

#: Noll (1976), Table 1: j -> (n, m); m > 0 is cos(mθ), m < 0 is sin(|m|θ).
NOLL_TABLE = {1: (0, 0), 2: (1, 1), 3: (1, -1), 4: (2, 0), 5: (2, -2), 6: (2, 2), 7: (3, -1), 8: (3, 1),
              9: (3, -3), 10: (3, 3), 11: (4, 0), 12: (4, 2), 13: (4, -2), 14: (4, 4), 15: (4, -4)}
EVEN_MODES = [j for j in NOLL_MODES if noll_to_nm(j)[1] % 2 == 0]  # symmetric under k -> -k
CENTRE = 32


@pytest.fixture(scope="module")
def simulator() -> PsfSimulator:
    return PsfSimulator()


def _amplitudes(**by_noll: float) -> np.ndarray:
    a = np.zeros((1, len(NOLL_MODES)))
    for key, value in by_noll.items():
        a[0, NOLL_MODES.index(int(key[1:]))] = value
    return a


def _mirror_lateral(psf: np.ndarray) -> np.ndarray:
    """(…, y, x) -> (…, −y, −x) on the fftshifted grid (index i ↔ N − i, index 0 stays)."""
    return np.roll(psf[..., ::-1, ::-1], (1, 1), axis=(-2, -1))


def _mirror_z(psf: np.ndarray) -> np.ndarray:
    """Planes z and −z paired (index i ↔ 64 − i); plane 0 (z = −3.2 µm) has no partner and is dropped."""
    return psf[..., 1:, :, :][..., ::-1, :, :]


def test_noll_indices_match_nolls_table_and_phasenet_names():
    assert {j: noll_to_nm(j) for j in NOLL_TABLE} == NOLL_TABLE
    assert noll_to_nm(5) == (2, -2)  # oblique astigmatism is Noll 5 (sin 2θ), vertical is Noll 6 (cos 2θ)
    with pytest.raises(ValueError):
        noll_to_nm(0)


def test_zernike_modes_are_orthonormal_on_the_unit_pupil():
    """Gauss–Legendre in ρ (weight ρ dρ) and a uniform θ grid integrate these polynomials exactly."""
    nodes, weights = np.polynomial.legendre.leggauss(12)
    rho, w_rho = (nodes + 1) / 2, weights / 2
    theta = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    R, T = np.meshgrid(rho, theta, indexing="ij")
    area_weights = (w_rho * rho)[:, None] * np.full(theta.size, 2 * np.pi / theta.size)[None] / np.pi
    modes = range(1, 16)
    Z = np.stack([zernike(j, R, T) for j in modes])
    gram = np.einsum("irt,jrt,rt->ij", Z, Z, area_weights)
    np.testing.assert_allclose(gram, np.eye(len(modes)), atol=1e-12)
    assert zernike(5, np.array([1.0]), np.array([np.pi / 4]))[0] == pytest.approx(np.sqrt(6))  # √6 ρ² sin 2θ


def test_pupil_basis_on_the_simulation_grid_is_nearly_orthonormal(simulator):
    """The 12-pixel-radius discrete pupil (as PhaseNet's): mean of Z_j Z_k over its pixels is δ up to the
    pixelation error (≤ 8 % on the diagonal, ≤ 0.05 between modes of equal azimuthal frequency)."""
    basis = simulator.basis[:, simulator.pupil].astype(np.float64)
    gram = basis @ basis.T / basis.shape[1]
    np.testing.assert_allclose(np.diag(gram), 1.0, atol=0.1)
    assert np.abs(gram - np.diag(np.diag(gram))).max() < 0.05


def test_aberration_free_psf_is_z_symmetric_and_peaked_at_the_centre(simulator):
    psf = simulator.psf(np.zeros((1, 11)))[0]
    assert psf.shape == (64, 64, 64)
    np.testing.assert_allclose(psf.sum((1, 2)), 1.0, rtol=1e-5)  # PhaseNet: each plane sums to 1
    assert np.unravel_index(psf.argmax(), psf.shape) == (CENTRE, CENTRE, CENTRE)
    np.testing.assert_allclose(_mirror_z(psf), psf[1:], rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(_mirror_lateral(psf), psf, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(psf.transpose(0, 2, 1), psf, rtol=1e-3, atol=1e-8)  # x ↔ y (same lateral pitch)


def _moments(plane: np.ndarray) -> tuple[float, float, float]:
    """var_x, var_y, cov_xy (pixels²) of one plane."""
    y, x = np.mgrid[:plane.shape[0], :plane.shape[1]] - CENTRE
    p = plane / plane.sum()
    mx, my = (p * x).sum(), (p * y).sum()
    return (p * (x - mx) ** 2).sum(), (p * (y - my) ** 2).sum(), (p * (x - mx) * (y - my)).sum()


@pytest.mark.parametrize("plane", [CENTRE + 5, CENTRE + 8])
def test_astigmatism_makes_focal_lines_on_the_sides_optics_predicts(simulator, plane):
    """Defocus phase πzλk²/n plus a·√6(k_x² − k_y²)/k_c²·2π/λ (vertical astigmatism, a > 0): the y focal line
    lies at z > 0, so planes above focus are wide in x and narrow in y, and the planes below the reverse. Oblique
    astigmatism (sin 2θ ∝ k_x k_y) is the same turned by 45°: a positive x–y covariance above focus."""
    below = 2 * CENTRE - plane
    free = simulator.psf(np.zeros((1, 11)))[0]
    vx, vy, _ = _moments(free[plane])
    assert vx == pytest.approx(vy, rel=1e-3)
    vertical = simulator.psf(_amplitudes(Z6=0.1))[0]
    vx_up, vy_up, c_up = _moments(vertical[plane])
    vx_dn, vy_dn, _ = _moments(vertical[below])
    assert vx_up > 1.2 * vy_up and vy_dn > 1.2 * vx_dn and abs(c_up) < 1e-3 * vx_up
    oblique = simulator.psf(_amplitudes(Z5=0.1))[0]
    vx_up, vy_up, c_up = _moments(oblique[plane])
    _, _, c_dn = _moments(oblique[below])
    assert c_up > 0.2 * vx_up and c_dn < -0.2 * vx_up and vx_up == pytest.approx(vy_up, rel=1e-3)
    assert not np.allclose(_mirror_z(oblique), oblique[1:], rtol=1e-2)  # z-symmetry broken


def test_amplitude_sign_flip_mirrors_the_psf_along_z_for_even_modes_and_laterally_for_odd_ones(simulator):
    """conj of the field: PSF_a(z, r) = PSF_a'(−z, r) with a' = a on odd modes and −a on even modes
    (m even: astigmatisms, spherical, quadrafoils). So flipping an even mode's sign mirrors the PSF along z,
    while an odd mode (coma, trefoil) gives a z-symmetric PSF whose sign flip mirrors it laterally instead."""
    rng = np.random.default_rng(3)
    a = simulator.random_amplitudes(rng, 2)
    even = np.array([j in EVEN_MODES for j in NOLL_MODES])
    psf, psf_flipped = simulator.psf(a), simulator.psf(np.where(even, -a, a))
    np.testing.assert_allclose(_mirror_z(psf_flipped), psf[:, 1:], rtol=2e-3, atol=1e-7)
    for j in EVEN_MODES:
        single = _amplitudes(**{f"Z{j}": 0.12})
        np.testing.assert_allclose(_mirror_z(simulator.psf(-single)), simulator.psf(single)[:, 1:],
                                   rtol=2e-3, atol=1e-7)
    coma = simulator.psf(_amplitudes(Z7=0.12))
    np.testing.assert_allclose(_mirror_z(coma), coma[:, 1:], rtol=2e-3, atol=1e-7)
    np.testing.assert_allclose(_mirror_lateral(simulator.psf(_amplitudes(Z7=-0.12))), coma, rtol=2e-3, atol=1e-7)
    assert not np.allclose(simulator.psf(_amplitudes(Z7=-0.12)), coma, rtol=1e-2)


def test_noise_level_jitter_range_and_determinism(simulator):
    clean = simulator.scale(simulator.psf(np.zeros((1, 11))))
    crops = simulator.crop(np.repeat(clean, 400, 0), np.random.default_rng(0))
    offsets = np.array([np.unravel_index(c.argmax(), c.shape) for c in crops]) - 16
    assert offsets.min() == -4 and offsets.max() == 4  # PhaseNet's default max_jitter for 64 -> 32
    assert np.array_equal(simulator.crop(clean, None, jitter=False)[0], clean[0, 16:48, 16:48, 16:48])
    noisy = simulator.add_noise(clean, np.random.default_rng(0), snr=3.0)[0]
    corners = noisy[:8, :8, :8]  # background: N(100, 3.5) + Poisson(1)
    assert corners.mean() == pytest.approx(101.0, abs=0.6) and corners.std() == pytest.approx(np.hypot(3.5, 1), rel=0.1)
    assert noisy[CENTRE, CENTRE, CENTRE] == pytest.approx(100 + 300 + 4, abs=20)  # mean + mean·snr + Poisson(4)
    x1, y1 = simulator.batch(np.random.default_rng(7), 3)
    x2, y2 = simulator.batch(np.random.default_rng(7), 3)
    x3, _ = simulator.batch(np.random.default_rng(8), 3)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2) and not np.array_equal(x1, x3)
    assert x1.shape == (3, 32, 32, 32) and np.abs(y1).max() <= Optics().amplitude


def test_normalisation_is_csbdeeps_percentile_scaling():
    x = np.random.default_rng(0).gamma(2.0, 10.0, (2, 8, 8, 8)).astype(np.float32)
    out = normalize_percentiles(x)
    for b in range(2):
        lo, hi = np.percentile(x[b], [3, 99.8])
        np.testing.assert_allclose(out[b], (x[b] - lo) / (hi - lo), rtol=1e-5, atol=1e-6)


def test_bead_is_written_as_nifti_with_micrometre_spacing(tmp_path):
    amplitudes = [0.093] + [0.0] * 10
    volume, amps = bead_volume(amplitudes, seed=1)
    assert volume.shape == (32, 32, 32) and volume.spacing == (0.086, 0.086, 0.1)
    np.testing.assert_array_equal(amps, amplitudes)
    assert main(["--output", str(tmp_path / "bead.nii.gz"), "--seed", "1", "--amplitudes",
                 *map(str, amplitudes)]) == 0
    back = read_volume(tmp_path / "bead.nii.gz")
    np.testing.assert_allclose(back.spacing, (0.086, 0.086, 0.1), rtol=1e-6)
    np.testing.assert_allclose(back.array, volume.array, rtol=1e-6)
    record = json.loads((tmp_path / "bead_amplitudes.json").read_text())
    assert record["amplitudes"]["oblique_astigmatism"] == 0.093
