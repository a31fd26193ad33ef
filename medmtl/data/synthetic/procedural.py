"""Resolution-independent random fields: smooth noise and smooth warps.

The phantoms are functions of physical position (mm), not arrays, so that one sampled anatomy can
be rendered on any grid: an anisotropic CT volume, a 1 mm nodule patch or the sampling volume of
a radiograph projection. Band-limited noise is therefore built as a sum of random plane waves
(random-phase Fourier synthesis), which can be evaluated at arbitrary points, instead of filtering
white noise on one particular grid.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PlaneWaveNoise", "SmoothWarp", "random_unit_vectors"]


def random_unit_vectors(rng: np.random.Generator, n: int, dims: int) -> np.ndarray:
    """``n`` directions uniformly distributed on the unit sphere (circle for ``dims == 2``).

    Returns:
        array of shape ``(n, dims)``.
    """
    v = rng.normal(size=(n, dims))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class PlaneWaveNoise:
    """Zero-mean, unit-variance band-limited noise ``n(p) = sum_k a_k cos(2 pi f_k . p + phi_k)``.

    Args:
        rng: random generator (consumed at construction; evaluation is deterministic).
        dims: number of spatial dimensions of the points.
        n_waves: number of plane waves; more waves give a more isotropic, Gaussian-looking field.
        wavelength: ``(min, max)`` wavelength in mm, sampled log-uniformly.
    """

    def __init__(self, rng: np.random.Generator, dims: int, n_waves: int, wavelength: tuple[float, float]) -> None:
        lam = np.exp(rng.uniform(np.log(wavelength[0]), np.log(wavelength[1]), size=n_waves))
        self.freqs = (random_unit_vectors(rng, n_waves, dims) / lam[:, None]).astype(np.float32)
        self.phases = rng.uniform(0.0, 2.0 * np.pi, size=n_waves).astype(np.float32)
        # sqrt(2 / n) makes the variance 1 whatever the number of waves.
        self.scale = np.float32(np.sqrt(2.0 / n_waves))

    def __call__(self, *coords: np.ndarray) -> np.ndarray:
        """Evaluate at points given as broadcastable coordinate arrays (one per dimension, in mm).

        Returns:
            float32 array of the broadcast shape of ``coords``.
        """
        out = None
        two_pi = np.float32(2.0 * np.pi)
        for f, phi in zip(self.freqs, self.phases):
            arg = sum(two_pi * fi * c for fi, c in zip(f, coords)) + phi
            wave = np.cos(arg, dtype=np.float32)
            out = wave if out is None else out + wave
        return out * self.scale


class SmoothWarp:
    """A smooth random displacement ``p -> p + d(p)`` that deforms organs (anatomical variability).

    Args:
        rng: random generator.
        dims: number of spatial dimensions.
        amplitude: standard deviation of each displacement component in mm.
        wavelength: ``(min, max)`` wavelength of the displacement field in mm; long wavelengths
            bend organs as a whole rather than roughen their surface.
    """

    def __init__(self, rng: np.random.Generator, dims: int, amplitude: float, wavelength: tuple[float, float]) -> None:
        self.fields = [PlaneWaveNoise(rng, dims, 6, wavelength) for _ in range(dims)]
        self.amplitude = np.float32(amplitude)

    def __call__(self, *coords: np.ndarray) -> tuple[np.ndarray, ...]:
        """Warped coordinates, each of the broadcast shape of ``coords``."""
        return tuple(c + self.amplitude * f(*coords) for c, f in zip(coords, self.fields))
