"""Mammograms: compressed-breast projections with masses and ground-truth boxes.

Orientation follows the DICOM / hanging-protocol convention of clinical mammograms (the
``PatientOrientation`` values ``A\\R``, ``P\\L``, ``A\\FR``, ``P\\FL`` of real MG files): a **left**
breast is attached to the **left** edge of the image (chest wall at column 0, nipple pointing to
the right) and a **right** breast to the **right** edge, so that the R and L views hang back to
back. Rows run from the top (cranial / axillary side) downwards. Pipelines that want one
canonical side flip the images of one laterality.

Model, in mm (pixel size = 240 mm / rows):

* breast: a half-ellipse against the chest wall with a wavy outline; its compressed thickness
  falls off over the outer 15% of the radius (the darker periphery of real mammograms) and a
  thin skin line bounds it;
* parenchyma: fibroglandular tissue where smooth two-scale noise (~8 mm and ~1.5 mm) exceeds a
  per-patient density threshold (fatty to extremely dense), denser centrally;
* MLO views add the pectoral muscle, a bright triangle in the upper chest-wall corner;
* masses (none, one or two per image): the shared lesion model of :mod:`.lesion` in 2D (round, oval,
  lobulated or spiculated), drawn with a projected-thickness profile; their boxes bound the mass
  body (occupancy > 0.5 without spicules; pixel edges, ``xyxy``, ``x`` = column);
* distractors: clusters of small bright calcifications, which are not masses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from medmtl.data.synthetic.lesion import make_lesion, sample_mass_features
from medmtl.data.synthetic.presets import Preset
from medmtl.data.synthetic.procedural import PlaneWaveNoise

__all__ = ["IMAGE_HEIGHT_MM", "PATIENT_ORIENTATION", "MammoSample", "make_mammogram"]

#: Physical height of the image (rows direction), in mm.
IMAGE_HEIGHT_MM = 240.0

#: DICOM PatientOrientation (row direction, column direction) per (laterality, view).
PATIENT_ORIENTATION: dict[tuple[str, str], list[str]] = {
    ("L", "CC"): ["A", "R"],
    ("R", "CC"): ["P", "L"],
    ("L", "MLO"): ["A", "FR"],
    ("R", "MLO"): ["P", "FL"],
}


@dataclass
class MammoSample:
    """A rendered mammogram.

    Attributes:
        pixels: ``(rows, columns)`` float32 in [0, 1], MONOCHROME2 sense (dense tissue bright).
        boxes: mass boxes ``[x1, y1, x2, y2]`` in pixels (``x`` = column), possibly empty.
        pixel_spacing: mm per pixel.
        laterality: ``"L"`` or ``"R"``.
        view: ``"CC"`` or ``"MLO"``.
        meta: masses in detail, JSON-ready.
    """

    pixels: np.ndarray
    boxes: list[list[float]]
    pixel_spacing: float
    laterality: str
    view: str
    meta: dict[str, Any] = field(default_factory=dict)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Unit-variance Gaussian-filtered white noise (mammograms are 2D only: no need for the
    resolution-independent plane-wave fields, whose few waves would show as a plaid pattern)."""
    noise = gaussian_filter(rng.normal(size=shape).astype(np.float32), max(sigma_px, 0.5))
    return noise / np.float32(max(float(noise.std()), 1e-6))


def make_mammogram(rng: np.random.Generator, preset: Preset, laterality: str, view: str, has_mass: bool) -> MammoSample:
    """A random mammogram.

    Args:
        rng: random generator of this sample.
        preset: image size.
        laterality: ``"L"`` or ``"R"``.
        view: ``"CC"`` or ``"MLO"``.
        has_mass: add one or two masses (otherwise a negative image, possibly with calcifications).
    """
    rows, cols = preset.mammo_size
    spacing = IMAGE_HEIGHT_MM / rows
    # Canonical frame: u = distance from the chest wall, v = distance from the top edge (mm).
    u = (np.arange(cols, dtype=np.float32) + 0.5) * np.float32(spacing)
    v = (np.arange(rows, dtype=np.float32)[:, None] + 0.5) * np.float32(spacing)
    width_mm = cols * spacing

    depth = rng.uniform(0.6, 0.88) * width_mm
    half_height = rng.uniform(0.33, 0.45) * IMAGE_HEIGHT_MM
    v_center = IMAGE_HEIGHT_MM * (0.5 + rng.uniform(-0.05, 0.05) + (0.08 if view == "MLO" else 0.0))
    if view == "MLO":
        half_height *= 1.15
    angle = np.arctan2((v - np.float32(v_center)) / np.float32(half_height), u / np.float32(depth))
    outline = PlaneWaveNoise(rng, 1, 4, (1.5, 4.0))  # wavelengths in radians of polar angle
    radius = np.float32(1.0) + np.float32(0.03) * outline(angle)
    rho = np.sqrt((u / np.float32(depth)) ** 2 + ((v - np.float32(v_center)) / np.float32(half_height)) ** 2) / radius
    breast = rho <= 1.0
    thickness = np.sqrt(np.clip((1.0 - rho) / 0.15, 0.0, 1.0))

    coarse, fine = (_smooth_noise(rng, (rows, cols), scale / spacing) for scale in (8.0, 1.5))
    density = rng.uniform(-0.6, 1.0)  # fatty (low) .. extremely dense (high)
    texture = coarse + 0.35 * fine + np.float32(1.5) * (1.0 - rho**2) - np.float32(1.2 - density)
    gland = 1.0 / (1.0 + np.exp(-texture / np.float32(0.6)))

    signal = thickness * (np.float32(0.28) + np.float32(0.3) * gland)
    if view == "MLO":
        pect_width, pect_height = rng.uniform(0.15, 0.3) * width_mm, rng.uniform(0.4, 0.7) * IMAGE_HEIGHT_MM
        pectoral = u < np.float32(pect_width) * (1.0 - v / np.float32(pect_height))
        signal = np.where(pectoral & breast, np.float32(0.75) + np.float32(0.05) * fine, signal)
    else:
        pectoral = np.zeros_like(breast)
    skin = breast & (rho > 0.985)
    signal = np.where(skin, signal + np.float32(0.12), signal)

    # Masses: inside the breast's full-thickness zone, outside the pectoral muscle.
    boxes: list[list[float]] = []
    masses_meta = []
    n_masses = (1 + int(rng.random() < 0.25)) if has_mass else 0
    candidates = np.argwhere(breast & (rho < 0.75) & ~pectoral)
    for _ in range(n_masses):
        r, c = candidates[int(rng.integers(len(candidates)))]
        lesion = make_lesion(rng, sample_mass_features(rng), np.array([u[c], v[r, 0]]))
        # The box frames the mass body; spicules may reach beyond it, as in most annotations.
        mask = lesion.occupancy(u[None, :], v, spicules=False) > 0.5
        if not mask.any():
            continue
        signal = signal + np.float32(rng.uniform(0.32, 0.45)) * lesion.projected_thickness(u[None, :], v) * breast
        rr, cc = np.nonzero(mask)
        boxes.append([float(cc.min()), float(rr.min()), float(cc.max() + 1), float(rr.max() + 1)])
        masses_meta.append({"center_px": [int(c), int(r)], **lesion.features.as_dict()})

    # Calcification clusters: bright specks a detector must not call masses.
    for _ in range(int(rng.integers(0, 3))):
        r, c = candidates[int(rng.integers(len(candidates)))]
        for _ in range(int(rng.integers(3, 10))):
            dr, dc = rng.normal(0.0, 4.0 / spacing, size=2)
            rr, cc = int(np.clip(r + dr, 0, rows - 1)), int(np.clip(c + dc, 0, cols - 1))
            signal[rr, cc] += np.float32(0.25)

    signal = gaussian_filter(signal * breast, 0.5)
    signal = signal + rng.normal(size=signal.shape).astype(np.float32) * np.float32(0.01)
    pixels = np.clip(signal, 0.0, 1.0).astype(np.float32)
    if laterality == "R":
        pixels = pixels[:, ::-1].copy()
        boxes = [[cols - x2, y1, cols - x1, y2] for x1, y1, x2, y2 in boxes]
        for mass in masses_meta:
            mass["center_px"][0] = cols - 1 - mass["center_px"][0]
    meta = {"masses": masses_meta, "breast_density": round(float(density), 3)}
    return MammoSample(pixels, boxes, spacing, laterality, view, meta)
