"""CT samples: torso volumes with organ masks and 1 mm nodule patches.

A CT "scanner" samples the phantom (:mod:`.phantom`) on an anisotropic grid (pixels finer than
slices, as in clinical chest-abdomen CT), blurs it with a small point-spread function and adds
slightly correlated Gaussian noise. Volume size, spacing and field-of-view position vary a little
per case, so pipelines meet differently sized volumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from medmtl.data.synthetic.lesion import (
    Lesion,
    make_lesion,
    malignancy_logit,
    sample_nodule_features,
)
from medmtl.data.synthetic.phantom import (
    Anatomy,
    Findings,
    Grid,
    render,
    sample_anatomy,
    sample_lung_point,
)
from medmtl.data.synthetic.presets import Preset

__all__ = ["CTCase", "NodulePatch", "make_ct_case", "make_nodule_patch"]


@dataclass
class CTCase:
    """A rendered CT volume.

    Attributes:
        hu: ``(nx, ny, nz)`` int16 HU values.
        label: ``(nx, ny, nz)`` uint8 organ labels.
        grid: geometry (LPS origin, spacing, shape).
        meta: ground truth beyond the mask (nodules), JSON-ready.
    """

    hu: np.ndarray
    label: np.ndarray
    grid: Grid
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class NodulePatch:
    """A 1 mm isotropic CT patch centred (up to a small jitter) on one nodule.

    Attributes:
        hu: ``(n, n, n)`` int16 HU values.
        grid: geometry of the patch in the patient's frame.
        label: clean label (``logit > 0``); the generator publishes it with the seeded label
            noise of :func:`~.generate.generate` (``label_noise``), never drawn here.
        meta: features, clean label and logit, JSON-ready.
    """

    hu: np.ndarray
    grid: Grid
    label: int
    meta: dict[str, Any] = field(default_factory=dict)


def _sixteenth(value: float) -> float:
    """Round to a multiple of 1/16 mm (exact in float32 and in DICOM decimal strings)."""
    return round(value * 16.0) / 16.0


def _scan(rng: np.random.Generator, hu: np.ndarray, blur: tuple[float, float, float], noise: float) -> np.ndarray:
    """Scanner model: PSF blur, correlated noise, HU rounding and clipping to the 12-bit range."""
    image = gaussian_filter(hu, blur, mode="nearest")
    grain = gaussian_filter(rng.normal(size=hu.shape).astype(np.float32), 0.6)
    grain *= np.float32(noise) / max(float(grain.std()), 1e-6)
    return np.clip(np.rint(image + grain), -1024, 3071).astype(np.int16)


def _nodules(rng: np.random.Generator, anat: Anatomy, count: int) -> tuple[list[Lesion], list[dict[str, Any]]]:
    lesions, meta = [], []
    for _ in range(count):
        world, frame = sample_lung_point(anat, rng)
        lesion = make_lesion(rng, sample_nodule_features(rng), frame)
        lesions.append(lesion)
        meta.append({"center_mm": [round(float(v), 2) for v in world], **lesion.features.as_dict()})
    return lesions, meta


def make_ct_case(rng: np.random.Generator, preset: Preset) -> CTCase:
    """A random torso CT (chest and upper abdomen, apex to kidneys) with 0-2 lung nodules."""
    anat = sample_anatomy(rng)
    base = np.asarray(preset.ct_spacing)
    spacing = (_sixteenth(base[0] * rng.uniform(0.94, 1.06)),) * 2 + (float(base[2]),)
    nx, ny, nz = preset.ct_shape
    jitter = max(1, nx // 24)
    shape = (
        nx + int(rng.integers(-jitter, jitter + 1)),
        ny + int(rng.integers(-jitter, jitter + 1)),
        nz + int(rng.integers(-jitter, jitter + 1)),
    )
    # Field of view: centred on the body (up to a table / centring offset), top slice just above
    # the lung apices so that every case holds the lungs, liver, spleen and kidneys.
    top = anat.lung_apex + rng.uniform(0.0, 20.0)
    origin = (
        _sixteenth(-(shape[0] - 1) * spacing[0] / 2 + rng.uniform(-10.0, 10.0)),
        _sixteenth(-(shape[1] - 1) * spacing[1] / 2 + rng.uniform(-10.0, 10.0)),
        _sixteenth(top - (shape[2] - 1) * spacing[2]),
    )
    grid = Grid(origin, spacing, shape)
    lesions, nodule_meta = _nodules(rng, anat, int(rng.choice(3, p=(0.4, 0.4, 0.2))))
    hu, label = render(anat, grid, Findings(nodules=tuple(lesions)))
    image = _scan(rng, hu, (0.6, 0.6, 0.4), rng.uniform(8.0, 20.0))
    return CTCase(image, label, grid, {"nodules": nodule_meta})


def make_nodule_patch(rng: np.random.Generator, preset: Preset) -> NodulePatch:
    """A nodule patch: a fresh patient, one nodule in the lung, rendered at 1 mm around it."""
    anat = sample_anatomy(rng)
    world, frame = sample_lung_point(anat, rng)
    features = sample_nodule_features(rng)
    lesion = make_lesion(rng, features, frame)
    logit = malignancy_logit(features)
    clean = int(logit > 0)
    n = preset.nodule_patch
    # Whole-mm origin with a +-2 mm offset: nodules are near, not exactly at, the patch centre,
    # as with detector-proposed candidates.
    origin = tuple(float(np.round(c - (n - 1) / 2 + rng.uniform(-2.0, 2.0))) for c in world)
    grid = Grid(origin, (1.0, 1.0, 1.0), (n, n, n))
    hu, _ = render(anat, grid, Findings(nodules=(lesion,)))
    image = _scan(rng, hu, (0.5, 0.5, 0.5), rng.uniform(10.0, 25.0))
    meta = {**features.as_dict(), "logit": round(float(logit), 3), "clean_label": clean}
    return NodulePatch(image, grid, clean, meta)
