"""Chest radiographs: postero-anterior projections of an upright torso phantom.

The phantom (:mod:`.phantom`, rendered upright so that fluid and gas layer along ``z``) is
sampled on a grid whose rows follow the beam (antero-posterior ``y``); the attenuation
``mu = max(0, 1 + HU / 1000)`` (relative to water) is integrated along the beam into a
water-equivalent thickness ``P`` (cm). The displayed value is ``1 - exp(-P / 15 cm)`` (a
logarithmic detector response with a soft shoulder, bone and mediastinum bright, lungs dark),
locally contrast-enhanced (unsharp mask, as clinical processing does), blurred by the detector
and given signal-dependent quantum noise.

Findings (chosen by the caller, see :mod:`.design`) give the multi-hot label
``[nodule, pneumothorax, effusion]``. Each is sized to be plainly visible at 128 x 128 pixels
(3.1 mm per pixel over the 400 mm field of view), the resolution models are trained at:

* nodule: 1-3 solid or calcified nodules of 28-48 mm (the shared lesion model, its diameter
  prior mapped linearly from 4-30 mm onto 28-48 mm, so that the smallest covers 9 pixels; ground-glass and part-solid nodules, which
  a radiograph barely shows, become solid), in lung that stays aerated and away from the
  heart, spine and diaphragm shadows;
* pneumothorax: one lung collapsed towards its hilum to 60-80% of its size, leaving an air rim
  without lung markings at the apex and lateral wall, bounded by a thin visceral pleural line;
* effusion: 250-800 ml of fluid (log-uniform) per affected side (one side, or both in a quarter
  of the cases) layering from that side's lowest point (costophrenic recess) with a meniscus
  climbing laterally: a blunted costophrenic angle and a veiled lung base, as on PA films with
  more than ~200 ml.

All findings are drawn for every radiograph, whether the label asks for them or not, and only
those in the label are rendered: the same patient with and without a finding differ only by the
finding (same anatomy, position, nodules and noise), which the tests use to measure visibility.

Images are displayed in the usual PA orientation: rows run head to feet and columns from the
patient's right to left (the patient's right is on the viewer's left).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter, zoom

from medmtl.data.synthetic.lesion import (
    Lesion,
    LesionFeatures,
    make_lesion,
    sample_nodule_features,
)
from medmtl.data.synthetic.phantom import (
    Anatomy,
    Findings,
    Grid,
    effusion_level,
    render,
    render_points,
    sample_anatomy,
    sample_lung_point,
)
from medmtl.data.synthetic.presets import Preset

__all__ = ["EFFUSION_ML", "FIELD_OF_VIEW_MM", "NODULE_DIAMETER_MM", "PNEUMOTHORAX_COLLAPSE", "CXRSample", "make_cxr"]

#: Width of the detector area kept in the image, in mm.
FIELD_OF_VIEW_MM = 400.0
#: Range of radiograph nodule diameters (mm).
# 28 mm, not the ~10 mm a clinical film shows: at 3.1 mm per pixel an 18 mm nodule covered 6
# pixels, and a single-task CXR model on the benchmark preset reached a nodule AUC of only
# 0.54-0.73 among the ribs and vessels while pneumothorax and effusion reached 1.0.
NODULE_DIAMETER_MM = (28.0, 48.0)
#: Range of the collapse factor of a pneumothorax (lung size relative to the cavity).
PNEUMOTHORAX_COLLAPSE = (0.6, 0.8)
#: Range of the fluid volume (ml) per affected side of an effusion (drawn log-uniformly).
EFFUSION_ML = (250.0, 800.0)
#: CT numbers of radiograph nodules by density, denser than real ones (CT nodules: 35 solid, 420
#: calcified) so that they stand out of the ribs and vessels at the 128-pixel training resolution.
_NODULE_HU = {"solid": 1000.0, "calcified": 1400.0}
_P0_CM = 15.0
# Nodule centres are kept where the beam crosses less than this water-equivalent thickness
# (lung fields are ~6-12 cm; behind the heart, spine or diaphragm it is 14 cm and more).
_MAX_NODULE_RAY_CM = 12.5


@dataclass
class CXRSample:
    """A rendered chest radiograph.

    Attributes:
        pixels: ``(rows, columns)`` float32 in [0, 1], MONOCHROME2 sense (bone bright).
        label: multi-hot ``[nodule, pneumothorax, effusion]``.
        pixel_spacing: mm per pixel.
        meta: findings in detail, JSON-ready.
        anatomy: the phantom patient (not serialised).
        origin: ``(x, z)`` in mm of the top-left corner of the image (left edge of column 0, top
            edge of row 0); see :meth:`pixel_of`.
    """

    pixels: np.ndarray
    label: list[int]
    pixel_spacing: float
    meta: dict[str, Any] = field(default_factory=dict)
    anatomy: Anatomy | None = None
    origin: tuple[float, float] = (0.0, 0.0)

    def pixel_of(self, x: float, z: float) -> tuple[float, float]:
        """``(row, column)`` (continuous, pixel centres at integers) where world ``(x, z)`` projects."""
        return (self.origin[1] - z) / self.pixel_spacing - 0.5, (x - self.origin[0]) / self.pixel_spacing - 0.5


def _visible_nodule_features(rng: np.random.Generator) -> LesionFeatures:
    """Nodule features of a radiograph: the shared prior, sized and made dense enough to be seen.

    The diameter prior (4-30 mm) is mapped linearly onto :data:`NODULE_DIAMETER_MM`, so the
    shapes (spiculation, lobulation) and the size ranking come from the same model as CT nodules;
    ground-glass and part-solid nodules become solid (a radiograph barely shows them).
    """
    f = sample_nodule_features(rng)
    lo, hi = NODULE_DIAMETER_MM
    diameter = lo + (hi - lo) * (float(np.clip(f.diameter, 4.0, 30.0)) - 4.0) / 26.0
    density = "calcified" if f.density == "calcified" else "solid"
    return LesionFeatures(diameter, f.spiculation, f.lobulation, density)


def _ray_thickness(anat: Anatomy, world: np.ndarray, findings: Findings, depth: float, samples: int) -> float:
    """Water-equivalent thickness (cm) the PA beam through world ``(x, z)`` crosses."""
    step = depth / samples
    y = (-depth / 2 + step * (np.arange(samples) + 0.5)).astype(np.float32)
    hu, _ = render_points(anat, np.float32(world[0]), y, np.float32(world[2]), findings, upright=True)
    return float(np.maximum(1.0 + hu / 1000.0, 0.0).sum() * step / 10.0)


def _place_nodules(
    rng: np.random.Generator, anat: Anatomy, around: Findings, depth: float
) -> tuple[list[Lesion], list[np.ndarray]]:
    """1-3 nodules in aerated lung (above any fluid, inside a collapsed lung) over the lung fields."""
    lesions, centres = [], []
    for _ in range(int(rng.integers(1, 4))):
        best: tuple[float, np.ndarray, np.ndarray] | None = None
        for _ in range(12):
            world, frame = sample_lung_point(anat, rng, findings=around, upright=True)
            thickness = _ray_thickness(anat, world, around, depth, 40)
            if best is None or thickness < best[0]:
                best = (thickness, world, frame)
            if thickness < _MAX_NODULE_RAY_CM:
                break
        assert best is not None
        _, world, frame = best
        lesion = make_lesion(rng, _visible_nodule_features(rng), frame)
        lesions.append(replace(lesion, hu=_NODULE_HU[lesion.features.density]))
        centres.append(world)
    return lesions, centres


def make_cxr(rng: np.random.Generator, preset: Preset, findings: Sequence[bool]) -> CXRSample:
    """A random PA chest radiograph.

    Args:
        rng: random generator of this sample.
        preset: image size.
        findings: whether to add ``[nodule, pneumothorax, effusion]`` (the label).
    """
    anat = sample_anatomy(rng)
    has_nodule, has_ptx, has_effusion = (bool(f) for f in findings)
    shift = rng.uniform(-15.0, 15.0)
    top = anat.lung_apex + rng.uniform(20.0, 50.0)
    depth = 2.0 * anat.b + 10.0
    # Every finding is drawn, in a fixed order, whatever the label: the label only decides which
    # are rendered, so a sample with and without a finding differ by that finding alone. Nodules
    # come from a stream of their own (their placement draws a varying number of points), and
    # are placed in lung that the drawn effusion and pneumothorax leave aerated.
    pneumothorax = {str(rng.choice(["R", "L"])): float(rng.uniform(*PNEUMOTHORAX_COLLAPSE))}
    sides = ["R", "L"] if rng.random() < 0.25 else [str(rng.choice(["R", "L"]))]
    lo, hi = np.log(EFFUSION_ML[0]), np.log(EFFUSION_ML[1])
    volumes = {s: float(np.exp(rng.uniform(lo, hi))) for s in sides}
    nodule_rng = np.random.default_rng(rng.integers(2**63))
    # (level mm, volume ml) per side; deterministic, so computed only where needed.
    levels = {s: effusion_level(anat, s, v) for s, v in volumes.items()} if has_nodule or has_effusion else {}
    effusion = {s: level for s, (level, _) in levels.items()}
    nodules: list[Lesion] = []
    centres: list[np.ndarray] = []
    if has_nodule:
        around = Findings(effusion=effusion, pneumothorax=pneumothorax)
        nodules, centres = _place_nodules(nodule_rng, anat, around, depth)
    if not has_ptx:
        pneumothorax = {}
    if not has_effusion:
        effusion = {}

    rows, cols = preset.cxr_size
    spacing = FIELD_OF_VIEW_MM / cols
    # Render at most ~3 mm per sample (the 128-pixel training resolution is 3.1 mm) and
    # upsample: the projection is smooth along the image plane except at edges that the detector
    # blur softens anyway, and it cuts the cost of the benchmark preset's 256-pixel images by 2.3x.
    render_cols = min(cols, int(np.ceil(FIELD_OF_VIEW_MM / 3.0)))
    render_rows = round(rows * render_cols / cols)
    step = FIELD_OF_VIEW_MM / render_cols
    ap_step = depth / preset.cxr_ap_samples
    left = -FIELD_OF_VIEW_MM / 2 + shift
    grid = Grid(
        origin=(left + step / 2, -depth / 2 + ap_step / 2, top - (render_rows - 0.5) * step),
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
    sample = CXRSample(pixels, label, spacing, anatomy=anat, origin=(left, top))
    nodule_meta = []
    for lesion, world in zip(nodules, centres):
        row, col = sample.pixel_of(float(world[0]), float(world[2]))
        nodule_meta.append(
            {
                "center_mm": [round(float(v), 2) for v in world],
                "center_px": [round(row, 1), round(col, 1)],
                **lesion.features.as_dict(),
            }
        )
    sample.meta = {
        "nodules": nodule_meta,
        "pneumothorax": {k: round(v, 3) for k, v in pneumothorax.items()},
        "effusion_ml": {k: round(levels[k][1], 1) for k in effusion},
        "effusion_level_mm": {k: round(v, 2) for k, v in effusion.items()},
    }
    return sample
