"""Chest radiographs: postero-anterior projections of an upright torso phantom.

The phantom (:mod:`.phantom`, rendered upright so that fluid and gas layer along ``z``) is
sampled on a grid whose rows follow the beam (antero-posterior ``y``); the attenuation
``mu = max(0, 1 + HU / 1000)`` (relative to water) is integrated along the beam into a
water-equivalent thickness ``P`` (cm). The displayed value is ``1 - exp(-P / 15 cm)`` (a
logarithmic detector response with a soft shoulder, bone and mediastinum bright, lungs dark),
locally contrast-enhanced (unsharp mask, as clinical processing does), blurred by the detector
and given signal-dependent quantum noise.

Findings (chosen by the caller, see :mod:`.design`) give the multi-hot label
``[nodule, pneumothorax, effusion]``:

* nodule: 1-3 solid, part-solid or calcified nodules of 8-30 mm (the shared lesion model);
* pneumothorax: one lung collapsed towards its hilum to 70-90% of its size, leaving an air rim
  without lung markings at the apex and lateral wall, bounded by a thin visceral pleural line;
* effusion: 20-70 mm of fluid at one or both lung bases with a meniscus climbing laterally,
  blunting the costophrenic angle.

Images are displayed in the usual PA orientation: rows run head to feet and columns from the
patient's right to left (the patient's right is on the viewer's left).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter, zoom

from medmtl.data.synthetic.lesion import (
    LesionFeatures,
    make_lesion,
    sample_nodule_features,
)
from medmtl.data.synthetic.phantom import (
    Findings,
    Grid,
    render,
    sample_anatomy,
    sample_lung_point,
)
from medmtl.data.synthetic.presets import Preset

__all__ = ["FIELD_OF_VIEW_MM", "CXRSample", "make_cxr"]

#: Width of the detector area kept in the image, in mm.
FIELD_OF_VIEW_MM = 400.0
_P0_CM = 15.0


@dataclass
class CXRSample:
    """A rendered chest radiograph.

    Attributes:
        pixels: ``(rows, columns)`` float32 in [0, 1], MONOCHROME2 sense (bone bright).
        label: multi-hot ``[nodule, pneumothorax, effusion]``.
        pixel_spacing: mm per pixel.
        meta: findings in detail, JSON-ready.
    """

    pixels: np.ndarray
    label: list[int]
    pixel_spacing: float
    meta: dict[str, Any] = field(default_factory=dict)


def _visible_nodule_features(rng: np.random.Generator) -> LesionFeatures:
    """Nodule features restricted to what a radiograph shows (no ground-glass, >= 8 mm)."""
    f = sample_nodule_features(rng)
    density = "solid" if f.density == "ground_glass" else f.density
    return LesionFeatures(max(f.diameter, 8.0) * 1.2, f.spiculation, f.lobulation, density)


def make_cxr(rng: np.random.Generator, preset: Preset, findings: Sequence[bool]) -> CXRSample:
    """A random PA chest radiograph.

    Args:
        rng: random generator of this sample.
        preset: image size.
        findings: whether to add ``[nodule, pneumothorax, effusion]`` (the label).
    """
    anat = sample_anatomy(rng)
    has_nodule, has_ptx, has_effusion = (bool(f) for f in findings)
    nodules, nodule_meta = [], []
    if has_nodule:
        for _ in range(int(rng.integers(1, 4))):
            world, frame = sample_lung_point(anat, rng)
            lesion = make_lesion(rng, _visible_nodule_features(rng), frame)
            nodules.append(lesion)
            nodule_meta.append({"center_mm": [round(float(v), 2) for v in world], **lesion.features.as_dict()})
    pneumothorax = {str(rng.choice(["R", "L"])): float(rng.uniform(0.7, 0.9))} if has_ptx else {}
    effusion: dict[str, float] = {}
    if has_effusion:
        sides = ["R", "L"] if rng.random() < 0.25 else [str(rng.choice(["R", "L"]))]
        effusion = {s: float(rng.uniform(20.0, 70.0)) for s in sides}

    rows, cols = preset.cxr_size
    spacing = FIELD_OF_VIEW_MM / cols
    # Render at most ~2 mm per sample and upsample: the projection is smooth along the image
    # plane except at edges that the detector blur softens anyway, and it halves the cost of
    # the large preset.
    render_cols = min(cols, int(np.ceil(FIELD_OF_VIEW_MM / 2.0)))
    render_rows = round(rows * render_cols / cols)
    step = FIELD_OF_VIEW_MM / render_cols
    top = anat.lung_apex + rng.uniform(20.0, 50.0)
    depth = 2.0 * anat.b + 10.0
    ap_step = depth / preset.cxr_ap_samples
    grid = Grid(
        origin=(
            -FIELD_OF_VIEW_MM / 2 + step / 2 + rng.uniform(-15.0, 15.0),
            -depth / 2 + ap_step / 2,
            top - (render_rows - 0.5) * step,
        ),
        spacing=(step, ap_step, step),
        shape=(render_cols, preset.cxr_ap_samples, render_rows),
    )
    hu, _ = render(
        anat, grid, Findings(nodules=tuple(nodules), effusion=effusion, pneumothorax=pneumothorax), upright=True
    )
    thickness_cm = np.maximum(1.0 + hu / 1000.0, 0.0).sum(axis=1) * np.float32(ap_step / 10.0)
    # (x, z) -> (rows = head to feet, columns = patient's right to left).
    image = thickness_cm[:, ::-1].T
    if render_cols != cols:
        image = zoom(image, (rows / image.shape[0], cols / image.shape[1]), order=3, mode="nearest", grid_mode=True)
    value = 1.0 - np.exp(-np.maximum(image, 0.0) / _P0_CM)
    # Local contrast enhancement (unsharp mask over ~15 mm), as clinical radiograph processing
    # does, then the detector blur.
    value = value + 0.8 * (value - gaussian_filter(value, 15.0 / spacing))
    value = gaussian_filter(value, 0.6)
    # Fewer photons reach the detector behind dense tissue: noisier there.
    value = value + rng.normal(size=value.shape).astype(np.float32) * (0.006 + 0.012 * value)
    pixels = np.clip(value, 0.0, 1.0).astype(np.float32)
    label = [int(has_nodule), int(has_ptx), int(has_effusion)]
    meta = {
        "nodules": nodule_meta,
        "pneumothorax": {k: round(v, 3) for k, v in pneumothorax.items()},
        "effusion_mm": {k: round(v, 1) for k, v in effusion.items()},
    }
    return CXRSample(pixels, label, spacing, meta)
