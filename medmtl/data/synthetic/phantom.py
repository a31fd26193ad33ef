"""A random 3D torso phantom in Hounsfield units, defined in physical space.

Coordinates are DICOM patient coordinates (LPS, mm): ``x`` grows towards the patient's left,
``y`` towards the back, ``z`` towards the head. A phantom is a set of sampled parameters
(:class:`Anatomy`) plus a function that returns HU values and organ labels at any points, so the
same patient can be rendered as an anisotropic CT volume, as a 1 mm nodule patch or as the
sampling volume of a radiograph.

Model (each shape in coordinates bent by a smooth random warp, so organs differ in shape as
well as in size and position):

* body: elliptic cylinder narrowing into the neck above the lung apices; subcutaneous fat
  (-100 HU) around muscle / soft tissue (~45 HU); abdominal cavity with visceral fat and a few
  bowel-gas pockets;
* lungs: two ellipsoids cut from below by the diaphragm domes (lower laterally: costophrenic
  recesses) and medially by the heart and mediastinum; parenchyma ~-860 HU with fine texture
  and a vessel tree (curves where two random fields both cross zero; thicker near the hila);
  trachea and main bronchi filled with air;
* bones (cortical ~+750, cancellous ~+250 HU): vertebral bodies with discs, spinal canal and
  posterior elements, ribs (oblique, periodic along z), sternum, clavicles;
* heart (~+110), descending aorta (contrast, ~+160);
* labelled organs (label = index of the class in the ``ct_organ_seg`` registry entry):
  lung, liver (under the right dome, left lobe across the midline), spleen (left, posterior),
  kidneys (cortex ~+180 and medulla ~+120 HU, tilted), plus an unlabelled stomach with a gas cap.

Per-patient contrast differs (each organ's HU is jittered), so intensity alone does not label
the organs. Findings (:class:`Findings`) add lung nodules (:mod:`.lesion`), pleural effusion
and pneumothorax (lung collapsed towards its hilum, air without lung markings between lung and
chest wall, a thin visceral pleural line at the lung edge).

Effusion layers by gravity. Upright, the fluid surface is flat in world ``z`` and is measured
from the floor of its own side's cavity (:meth:`Anatomy.cavity_floor`, the lowest point of that
pleural cavity: the two sides differ, the right dome usually sitting higher), with a meniscus climbing
the lateral wall; :func:`effusion_level` converts a fluid volume in ml into that level and
:func:`effusion_volume` back (both count the rendered cavity on a 3 mm grid), so callers draw
effusions as clinical volumes (the radiographs of :mod:`.cxr`: 250-800 ml per side). Supine
(CT), the fluid lies posteriorly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from medmtl.data.synthetic.lesion import Lesion
from medmtl.data.synthetic.procedural import PlaneWaveNoise, SmoothWarp
from medmtl.tasks import get_task

__all__ = [
    "FLUID",
    "LABELS",
    "Anatomy",
    "Findings",
    "Grid",
    "effusion_level",
    "effusion_volume",
    "render",
    "render_points",
    "sample_anatomy",
    "sample_lung_point",
]

#: Organ label values, taken from the task registry so that the masks follow its class order.
LABELS: dict[str, int] = {name: i for i, name in enumerate(get_task("ct_organ_seg").class_names)}

AIR = -1000.0
FAT = -100.0
MUSCLE = 45.0
LUNG = -860.0
FLUID = 12.0
CSF = 15.0
DISC = 90.0
CANCELLOUS = 250.0
CORTICAL = 750.0


@dataclass(frozen=True)
class Grid:
    """An axis-aligned voxel grid (identity direction cosines in LPS).

    Attributes:
        origin: ``(3,)`` position in mm of the centre of voxel ``(0, 0, 0)``.
        spacing: ``(3,)`` voxel size in mm.
        shape: ``(nx, ny, nz)``.
    """

    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]

    def axes(self) -> list[np.ndarray]:
        """The voxel-centre coordinates along x, y and z (three 1D float32 arrays)."""
        return [
            np.float32(o) + np.float32(s) * np.arange(n, dtype=np.float32)
            for o, s, n in zip(self.origin, self.spacing, self.shape)
        ]

    def coords(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sparse (broadcastable) coordinate arrays of shapes ``(nx,1,1)``, ``(1,ny,1)``, ``(1,1,nz)``."""
        x, y, z = self.axes()
        return x[:, None, None], y[None, :, None], z[None, None, :]


@dataclass(frozen=True)
class Findings:
    """Abnormalities added to a phantom.

    Attributes:
        nodules: 3D lesions, centred in the anatomy frame (see :func:`render`).
        effusion: side (``"R"``/``"L"``) -> fluid level in mm. Upright: height of the fluid surface
            (at the lung's centre line; the meniscus climbs higher laterally) above that side's
            :meth:`Anatomy.cavity_floor`; :func:`effusion_level` turns a volume into a level.
            Supine: depth of the posterior fluid layer.
        pneumothorax: side -> collapse factor (lung scaled towards its hilum; 1 = no collapse).
    """

    nodules: tuple[Lesion, ...] = ()
    effusion: dict[str, float] = field(default_factory=dict)
    pneumothorax: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Anatomy:
    """Sampled shape and intensity parameters of one patient (all lengths in mm, LPS)."""

    a: float  # body semi-axis, left-right
    b: float  # body semi-axis, antero-posterior
    fat: float  # subcutaneous fat thickness
    z_neck: float  # where the body starts narrowing into the neck
    dome: dict[str, float]  # top of each diaphragm dome
    dome_depth: float  # how much lower the dome is at the lateral / posterior lung edge
    lung_center: dict[str, tuple[float, float, float]]
    lung_axes: dict[str, tuple[float, float, float]]
    heart_center: tuple[float, float, float]
    heart_axes: tuple[float, float, float]
    liver_center: tuple[float, float, float]
    liver_axes: tuple[float, float, float]
    spleen_center: tuple[float, float, float]
    spleen_axes: tuple[float, float, float]
    spleen_angle: float
    stomach_center: tuple[float, float, float]
    stomach_axes: tuple[float, float, float]
    kidney_center: dict[str, tuple[float, float, float]]
    kidney_axes: tuple[float, float, float]
    kidney_tilt: float
    spine_y: float
    vertebra_period: float
    vertebra_phase: float
    aorta: tuple[float, float, float]  # x, y, radius
    carina_z: float
    rib_period: float
    rib_phase: float
    rib_tilt: float
    hu: dict[str, float]  # per-patient tissue intensities (contrast timing, scanner calibration)
    warp: SmoothWarp
    texture: PlaneWaveNoise
    vessel_fields: tuple[PlaneWaveNoise, PlaneWaveNoise]
    visceral: PlaneWaveNoise
    bowel: PlaneWaveNoise

    @property
    def lung_apex(self) -> float:
        return max(c[2] + ax[2] for c, ax in zip(self.lung_center.values(), self.lung_axes.values()))

    @property
    def lung_base(self) -> float:
        """A z below both diaphragm domes' lateral edges (only bounds the rib cage along z)."""
        return min(self.dome.values()) - self.dome_depth

    @cached_property
    def _floors(self) -> dict[str, float]:
        return {}

    def cavity_floor(self, side: str) -> float:
        """Lowest world z (mm) of one side's pleural cavity: where upright fluid gathers first.

        Found by sampling the rendered cavity (4 mm grid, then 0.5 mm along z near the bottom)
        and cached; the two sides differ (the right dome usually sits higher than the left one).
        """
        if side not in self._floors:
            self._floors[side] = _cavity_floor(self, side)
        return self._floors[side]

    def hilum(self, side: str) -> tuple[float, float, float]:
        cx, cy, _ = self.lung_center[side]
        return (0.55 * cx, cy - 10.0, self.carina_z - 35.0)


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw a random patient."""
    u = rng.uniform
    a, b = u(148.0, 180.0), u(100.0, 125.0)
    fat = u(0.05, 0.13) * a
    dome_r = u(-10.0, 10.0)
    dome = {"R": dome_r, "L": dome_r - u(8.0, 25.0)}
    lung_center, lung_axes = {}, {}
    for side, sign in (("R", -1.0), ("L", 1.0)):
        lung_center[side] = (sign * u(0.40, 0.45) * a, u(0.05, 0.12) * b, dome[side] + u(45.0, 60.0))
        lung_axes[side] = (u(0.33, 0.38) * a, u(0.76, 0.84) * b, u(120.0, 140.0))
    spine_y = b - fat - u(58.0, 66.0)
    kidney_z = min(dome.values()) - u(105.0, 130.0)
    hu = {
        "heart": u(95.0, 130.0),
        "blood": u(140.0, 200.0),
        "liver": u(90.0, 120.0),
        "spleen": u(105.0, 135.0),
        "kidney_cortex": u(160.0, 210.0),
        "kidney_medulla": u(100.0, 140.0),
        "stomach": u(15.0, 35.0),
        "muscle": MUSCLE + u(-8.0, 8.0),
        "lung": LUNG + u(-25.0, 25.0),
    }
    return Anatomy(
        a=a,
        b=b,
        fat=fat,
        z_neck=max(c[2] + ax[2] for c, ax in zip(lung_center.values(), lung_axes.values())) + u(0.0, 15.0),
        dome=dome,
        dome_depth=u(45.0, 70.0),
        lung_center=lung_center,
        lung_axes=lung_axes,
        heart_center=(u(0.08, 0.16) * a, -u(0.25, 0.35) * b, dome["L"] + u(45.0, 60.0)),
        heart_axes=(u(0.34, 0.42) * a, u(0.38, 0.46) * b, u(52.0, 65.0)),
        liver_center=(-u(0.30, 0.40) * a, -u(0.05, 0.15) * b, dome["R"] - u(55.0, 70.0)),
        liver_axes=(u(0.58, 0.68) * a, u(0.66, 0.76) * b, u(68.0, 85.0)),
        spleen_center=(u(0.55, 0.65) * a, u(0.35, 0.5) * b, dome["L"] - u(40.0, 55.0)),
        spleen_axes=(u(20.0, 28.0), u(40.0, 55.0), u(42.0, 58.0)),
        spleen_angle=u(0.35, 0.9),
        stomach_center=(u(0.25, 0.35) * a, -u(0.2, 0.35) * b, dome["L"] - u(40.0, 55.0)),
        stomach_axes=(u(0.22, 0.3) * a, u(0.28, 0.36) * b, u(35.0, 50.0)),
        kidney_center={
            "R": (-u(0.30, 0.37) * a, spine_y + u(-5.0, 8.0), kidney_z - u(5.0, 20.0)),
            "L": (u(0.30, 0.37) * a, spine_y + u(-5.0, 8.0), kidney_z + u(0.0, 10.0)),
        },
        kidney_axes=(u(22.0, 28.0), u(24.0, 30.0), u(48.0, 60.0)),
        kidney_tilt=u(0.15, 0.35),
        spine_y=spine_y,
        vertebra_period=u(27.0, 33.0),
        vertebra_phase=u(0.0, 30.0),
        aorta=(u(12.0, 24.0), spine_y - u(26.0, 32.0), u(10.0, 13.5)),
        carina_z=dome_r + u(100.0, 120.0),
        rib_period=u(22.0, 28.0),
        rib_phase=u(0.0, 25.0),
        rib_tilt=u(25.0, 45.0),
        hu=hu,
        warp=SmoothWarp(rng, 3, amplitude=u(3.0, 7.0), wavelength=(150.0, 400.0)),
        texture=PlaneWaveNoise(rng, 3, 24, (3.0, 12.0)),
        vessel_fields=(PlaneWaveNoise(rng, 3, 16, (30.0, 90.0)), PlaneWaveNoise(rng, 3, 16, (30.0, 90.0))),
        visceral=PlaneWaveNoise(rng, 3, 16, (10.0, 40.0)),
        bowel=PlaneWaveNoise(rng, 3, 16, (15.0, 40.0)),
    )


def _ellipsoid(x, y, z, center, axes) -> np.ndarray:
    """Squared normalised radius ``sum ((p - c) / axes)^2`` (<= 1 inside)."""
    return sum(((c - np.float32(c0)) / np.float32(r)) ** 2 for c, c0, r in zip((x, y, z), center, axes))


def _rotated_ellipsoid(x, y, z, center, axes, angle: float, plane: tuple[int, int]) -> np.ndarray:
    """:func:`_ellipsoid` of an ellipsoid rotated by ``angle`` (rad) in the given axis plane."""
    rel = [x - np.float32(center[0]), y - np.float32(center[1]), z - np.float32(center[2])]
    i, j = plane
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    rel[i], rel[j] = cos * rel[i] + sin * rel[j], -sin * rel[i] + cos * rel[j]
    return sum((r / np.float32(s)) ** 2 for r, s in zip(rel, axes))


def _dome(anat: Anatomy, side: str, x, y) -> np.ndarray:
    """Height of the diaphragm under one lung: highest centrally, lower at the lung's edges."""
    cx, cy, _ = anat.lung_center[side]
    ax, ay, _ = anat.lung_axes[side]
    q = ((x - np.float32(cx)) / np.float32(ax)) ** 2 + 0.6 * ((y - np.float32(cy)) / np.float32(ay)) ** 2
    # Beyond the lung's footprint the diaphragm flattens out instead of plunging.
    return np.float32(anat.dome[side]) - np.float32(anat.dome_depth) * np.minimum(q, np.float32(1.2))


def _neck_scale(anat: Anatomy, z) -> np.ndarray:
    """Cross-section scale of the body: 1 over the trunk, narrowing to ~0.4 in the neck."""
    t = np.clip((z - np.float32(anat.z_neck)) / np.float32(45.0), 0.0, 1.0)
    return np.float32(1.0) - np.float32(0.6) * t * t * (3 - 2 * t)


def _cavity(anat: Anatomy, side: str, x, y, z, inner_wall) -> np.ndarray:
    """Pleural cavity of one side (where the lung is when it is fully expanded)."""
    inside = _ellipsoid(x, y, z, anat.lung_center[side], anat.lung_axes[side]) <= 1
    inside &= z > _dome(anat, side, x, y)
    inside &= inner_wall
    inside &= _ellipsoid(x, y, z, anat.heart_center, anat.heart_axes) > 1.15
    # Mediastinum: a soft-tissue slab between the lungs from sternum to spine.
    inside &= (x / np.float32(0.11 * anat.a)) ** 2 + (
        (y + np.float32(0.1 * anat.b)) / np.float32(0.95 * anat.b)
    ) ** 2 > 1
    return inside


#: Margin (mm) added around a lung ellipsoid's bounding box to hold it after the smooth warp.
_WARP_MARGIN = 20.0


def _cavity_samples(
    anat: Anatomy, side: str, step: float, z_range: tuple[float, float] | None = None, z_step: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """World ``(x, z)`` of the points of a regular grid (``step`` mm; ``z_step`` along z) in one side's cavity.

    The grid spans the lung ellipsoid's bounding box (the cavity lies inside it) widened by the
    reach of the warp, restricted along z to ``z_range`` when given; points are warped into the
    anatomy frame as :func:`render` does, so the samples are those of the rendered cavity.
    """
    c, ax = anat.lung_center[side], anat.lung_axes[side]
    lo = [ci - ai - _WARP_MARGIN for ci, ai in zip(c, ax)]
    hi = [ci + ai + _WARP_MARGIN for ci, ai in zip(c, ax)]
    if z_range is not None:
        lo[2], hi[2] = max(lo[2], z_range[0]), min(hi[2], z_range[1])
    steps = (step, step, z_step or step)
    x, y, z = (np.arange(l0 + d / 2, max(h0, l0 + d), d, dtype=np.float32) for l0, h0, d in zip(lo, hi, steps))
    x, y, z = x[:, None, None], y[None, :, None], z[None, None, :]
    shape = (x.size, y.size, z.size)
    ax_, ay_, az_ = (np.broadcast_to(v, shape) for v in anat.warp(x, y, z))
    inside = _cavity(anat, side, ax_, ay_, az_, _inner_wall(anat, ax_, ay_, az_, 12.0))
    return np.broadcast_to(x, shape)[inside], np.broadcast_to(z, shape)[inside]


def _cavity_floor(anat: Anatomy, side: str) -> float:
    """Lowest world z of one side's cavity: a 4 mm search, refined with 0.5 mm steps along z."""
    _, z = _cavity_samples(anat, side, 4.0)
    coarse = float(z.min())
    _, fine = _cavity_samples(anat, side, 2.0, (coarse - 4.0, coarse + 0.5), z_step=0.5)
    return float(fine.min()) if fine.size else coarse


def _fluid_surface(anat: Anatomy, side: str, x, level: float) -> np.ndarray:
    """World height (z) of the upright fluid surface over world ``x``: flat at ``level`` above the
    cavity floor on the lung's centre line, climbing the lateral wall (meniscus) to 1.35 ``level``."""
    cx, _, _ = anat.lung_center[side]
    ax, _, _ = anat.lung_axes[side]
    return np.float32(anat.cavity_floor(side) + level) + np.float32(0.35 * level) * (
        (x - np.float32(cx)) / np.float32(ax)
    ) ** 2


#: Sampling step (mm) of the cavity when measuring fluid volumes.
_VOLUME_STEP = 3.0
#: Highest fluid level (mm above the cavity floor) that :func:`effusion_level` returns.
_MAX_LEVEL = 160.0


def _fluid_ml(anat: Anatomy, side: str, x: np.ndarray, z: np.ndarray, level: float) -> float:
    return int(np.count_nonzero(z < _fluid_surface(anat, side, x, level))) * _VOLUME_STEP**3 / 1000.0


def effusion_volume(anat: Anatomy, side: str, level: float) -> float:
    """Volume in ml of upright fluid at ``level`` mm above the floor of one side's cavity.

    Counted on a 3 mm grid of the rendered (warped) cavity.
    """
    floor = anat.cavity_floor(side)
    x, z = _cavity_samples(anat, side, _VOLUME_STEP, (floor - 1.0, floor + 1.35 * level + 1.0))
    return _fluid_ml(anat, side, x, z, level)


def effusion_level(anat: Anatomy, side: str, volume_ml: float) -> tuple[float, float]:
    """The upright fluid level (mm above the cavity floor, see :class:`Findings`) holding ``volume_ml``.

    Returns:
        ``(level, ml)``: the level and the volume it holds (:func:`effusion_volume`, equal to
        ``volume_ml`` up to the 3 mm sampling). The level is capped at 160 mm.
    """
    floor = anat.cavity_floor(side)
    # Sample up to a 100 mm level first (enough for ~1 l in most patients), higher only if needed.
    for top in (100.0, _MAX_LEVEL):
        x, z = _cavity_samples(anat, side, _VOLUME_STEP, (floor - 1.0, floor + 1.35 * top + 1.0))
        if _fluid_ml(anat, side, x, z, top) >= volume_ml:
            break
    lo, hi = 0.0, top
    for _ in range(24):
        mid = 0.5 * (lo + hi)
        if _fluid_ml(anat, side, x, z, mid) < volume_ml:
            lo = mid
        else:
            hi = mid
    return hi, _fluid_ml(anat, side, x, z, hi)


def _inner_wall(anat: Anatomy, x, y, z, margin: float) -> np.ndarray:
    """Inside the body wall (skin, fat, muscle and ribs), ``margin`` mm inside the fat layer."""
    s = _neck_scale(anat, z)
    return (
        (x / (s * np.float32(anat.a - anat.fat - margin))) ** 2
        + (y / (s * np.float32(anat.b - anat.fat - margin))) ** 2
    ) <= 1


def _capsule(x, y, z, p0, p1, radius: float) -> np.ndarray:
    """Points within ``radius`` of the segment ``p0``-``p1``."""
    p0, p1 = np.asarray(p0, np.float32), np.asarray(p1, np.float32)
    d = p1 - p0
    rel = (x - p0[0], y - p0[1], z - p0[2])
    t = np.clip(sum(r * di for r, di in zip(rel, d)) / np.float32(d @ d), 0.0, 1.0)
    dist2 = sum((r - t * di) ** 2 for r, di in zip(rel, d))
    return dist2 <= np.float32(radius**2)


def _lung_parenchyma(anat: Anatomy, side: str, x, y, z, collapse: float) -> tuple[np.ndarray, np.ndarray]:
    """HU of lung tissue (texture + vessels) evaluated at the given (possibly pre-collapse) points."""
    hx, hy, hz = anat.hilum(side)
    dist = np.sqrt((x - np.float32(hx)) ** 2 + (y - np.float32(hy)) ** 2 + (z - np.float32(hz)) ** 2)
    # Vessels: where two smooth fields both cross zero we get curves; the tolerance widens near the
    # hilum, so vessels are thick centrally and taper towards the pleura as in real lungs.
    tol = np.float32(0.06) + np.float32(0.25) * np.exp(-dist / np.float32(70.0))
    n1, n2 = (f(x, y, z) for f in anat.vessel_fields)
    vessel = np.clip(1.0 - np.maximum(np.abs(n1), np.abs(n2)) / tol, 0.0, 1.0)
    # A collapsed lung holds less air, hence is denser.
    base = np.float32(anat.hu["lung"] + 500.0 * (1.0 - collapse))
    hu = base + np.float32(25.0) * anat.texture(x, y, z)
    hu = hu + vessel * (np.float32(anat.hu["blood"] - 80.0) - hu)
    return hu, vessel


def _evaluate(anat: Anatomy, x, y, z, findings: Findings, upright: bool) -> tuple[np.ndarray, np.ndarray]:
    """HU and labels at points given by broadcastable coordinate arrays (mm, LPS)."""
    shape = np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z))
    # Gravity acts in the world frame: fluid levels are flat in world z (the world x, z are kept).
    world_x, world_z = np.asarray(x, np.float32), np.asarray(z, np.float32)
    x, y, z = (np.broadcast_to(c, shape).astype(np.float32) for c in anat.warp(x, y, z))
    hu = np.full(shape, AIR, np.float32)
    label = np.zeros(shape, np.uint8)
    s = _neck_scale(anat, z)
    body = (x / (s * np.float32(anat.a))) ** 2 + (y / (s * np.float32(anat.b))) ** 2 <= 1
    hu[body] = FAT
    inner = _inner_wall(anat, x, y, z, 0.0)
    hu[inner] = anat.hu["muscle"]

    diaphragm = np.where(x < 0, _dome(anat, "R", x, y), _dome(anat, "L", x, y))
    abdomen = _inner_wall(anat, x, y, z, 12.0) & (z < diaphragm - np.float32(6.0))
    visceral = anat.visceral(x, y, z)
    hu[abdomen & (visceral > 0.3)] = FAT + 20.0
    hu[abdomen & (anat.bowel(x, y, z) > 2.3)] = AIR + 50.0

    thorax_z = (z > np.float32(anat.lung_base - 40.0)) & (z < np.float32(anat.lung_apex + 5.0))
    # Ribs: an elliptic ring just inside the fat, cut into oblique bands along z.
    ar, br = anat.a - anat.fat - 6.0, anat.b - anat.fat - 6.0
    rho = np.sqrt((x / (s * np.float32(ar))) ** 2 + (y / (s * np.float32(br))) ** 2)
    ring = np.abs(rho - 1) * np.float32(0.5 * (ar + br)) < 4.5
    phase = (z - np.float32(anat.rib_phase) + np.float32(anat.rib_tilt) * (-y / np.float32(anat.b))) / np.float32(
        anat.rib_period
    )
    band = (phase - np.floor(phase)) < np.float32(9.0 / anat.rib_period)
    ribs = ring & band & thorax_z & ~((np.abs(x) < 28) & (y < 0))
    sternum = (
        ((x / np.float32(16.0)) ** 2 + ((y + np.float32(anat.b - anat.fat - 12.0)) / np.float32(7.0)) ** 2 <= 1)
        & (z > np.float32(anat.dome["R"] + 10.0))
        & (z < np.float32(anat.lung_apex - 15.0))
    )
    heart = _ellipsoid(x, y, z, anat.heart_center, anat.heart_axes) <= 1
    hu[heart] = anat.hu["heart"]
    ax_, ay_, ar_ = anat.aorta
    aorta = ((x - np.float32(ax_)) ** 2 + (y - np.float32(ay_)) ** 2 <= np.float32(ar_**2)) & (
        z < np.float32(anat.carina_z + 20)
    )
    hu[aorta] = anat.hu["blood"]

    lungs = np.zeros(shape, bool)
    for side in ("R", "L"):
        cavity = _cavity(anat, side, x, y, z, _inner_wall(anat, x, y, z, 12.0))
        if not cavity.any():
            continue
        collapse = findings.pneumothorax.get(side, 1.0)
        if collapse < 1.0:
            # The collapsed lung is the cavity shrunk towards the hilum: p is lung tissue when
            # hilum + (p - hilum) / collapse lies in the cavity.
            hx, hy, hz = (np.float32(v) for v in anat.hilum(side))
            px, py, pz = (
                hx + (x - hx) / np.float32(collapse),
                hy + (y - hy) / np.float32(collapse),
                hz + (z - hz) / np.float32(collapse),
            )
            inner_wall = _inner_wall(anat, px, py, pz, 12.0)
            lung = cavity & _cavity(anat, side, px, py, pz, inner_wall)
            # Visceral pleural line: the outer ~3 mm shell of the collapsed lung.
            c2 = np.float32(collapse * 0.97)
            qx, qy, qz = hx + (x - hx) / c2, hy + (y - hy) / c2, hz + (z - hz) / c2
            pleura = lung & ~_cavity(anat, side, qx, qy, qz, _inner_wall(anat, qx, qy, qz, 12.0))
        else:
            px, py, pz = x, y, z
            lung = cavity
            pleura = np.zeros(shape, bool)
        hu[cavity] = AIR
        tissue, _ = _lung_parenchyma(anat, side, px[lung], py[lung], pz[lung], collapse)
        hu[lung] = tissue
        hu[pleura] = np.float32(60.0)
        level = findings.effusion.get(side)
        if level is not None:
            if upright:
                # Fluid fills this side's lowest part first (costophrenic recess) and climbs the
                # lateral wall (meniscus): the blunted angle of an effusion on an upright film.
                fluid = cavity & (world_z < _fluid_surface(anat, side, world_x, level))
            else:
                fluid = cavity & (y > np.float32(anat.b - anat.fat - 12.0 - level))
            hu[fluid] = FLUID
            lung &= ~fluid
        lungs |= lung
    label[lungs] = LABELS["lung"]

    # Trachea and main bronchi (air, unlabelled).
    airway = ((x / np.float32(8.5)) ** 2 + ((y + np.float32(0.1 * anat.b)) / np.float32(8.5)) ** 2 <= 1) & (
        z > np.float32(anat.carina_z)
    )
    for side in ("R", "L"):
        airway |= _capsule(x, y, z, (0.0, -0.1 * anat.b, anat.carina_z), anat.hilum(side), 6.0)
    hu[airway & body] = AIR

    in_abdomen = _inner_wall(anat, x, y, z, 10.0) & (z < diaphragm - np.float32(3.0))
    liver = (_ellipsoid(x, y, z, anat.liver_center, anat.liver_axes) <= 1) & in_abdomen
    hu[liver] = anat.hu["liver"] + np.float32(6.0) * visceral[liver]
    label[liver] = LABELS["liver"]

    stomach = (_ellipsoid(x, y, z, anat.stomach_center, anat.stomach_axes) <= 1) & in_abdomen & ~liver
    hu[stomach] = anat.hu["stomach"]
    _, sy, sz = anat.stomach_center
    gas = (
        (z > np.float32(sz + 0.45 * anat.stomach_axes[2]))
        if upright
        else (y < np.float32(sy - 0.45 * anat.stomach_axes[1]))
    )
    hu[stomach & gas] = AIR + 30.0
    label[stomach] = 0

    spleen = (
        _rotated_ellipsoid(x, y, z, anat.spleen_center, anat.spleen_axes, anat.spleen_angle, (0, 1)) <= 1
    ) & in_abdomen
    hu[spleen] = anat.hu["spleen"]
    label[spleen] = LABELS["spleen"]

    for side, sign in (("R", -1.0), ("L", 1.0)):
        kq = _rotated_ellipsoid(x, y, z, anat.kidney_center[side], anat.kidney_axes, sign * anat.kidney_tilt, (0, 2))
        kidney = kq <= 1
        hu[kidney] = anat.hu["kidney_cortex"]
        hu[kidney & (kq < 0.45)] = anat.hu["kidney_medulla"]
        label[kidney] = LABELS["kidney"]

    # Spine: vertebral bodies (cortical shell, cancellous core) separated by discs, canal, arch.
    vy = np.float32(anat.spine_y)
    vb = (x / np.float32(22.0)) ** 2 + ((y - vy) / np.float32(18.0)) ** 2
    vphase = (z - np.float32(anat.vertebra_phase)) / np.float32(anat.vertebra_period)
    disc = (vphase - np.floor(vphase)) < np.float32(0.18)
    canal_r = np.sqrt(x**2 + (y - vy - np.float32(28.0)) ** 2)
    arch = (canal_r < 16.0) | ((np.abs(x) < 4.0) & (y > vy + 28.0) & (y < vy + 52.0))
    bone_region = ((vb <= 1) | arch) & (z < np.float32(anat.z_neck + 30.0))
    hu[bone_region] = CORTICAL
    hu[bone_region & (vb <= 0.7)] = CANCELLOUS
    hu[(vb <= 1) & disc & (z < np.float32(anat.z_neck + 30.0))] = DISC
    hu[(canal_r < 9.0) & (z < np.float32(anat.z_neck + 40.0))] = CSF
    spine = bone_region | (canal_r < 9.0)

    hu[ribs] = CORTICAL
    hu[sternum] = CANCELLOUS + 150.0
    clavicles = np.zeros(shape, bool)
    apex = anat.lung_apex
    for sign in (-1.0, 1.0):
        clavicles |= _capsule(
            x,
            y,
            z,
            (sign * 22.0, -(anat.b - anat.fat - 4.0), apex - 5.0),
            (sign * 0.85 * anat.a, -0.1 * anat.b, apex + 12.0),
            6.5,
        )
    hu[clavicles] = CORTICAL - 100.0
    label[spine | ribs | sternum | clavicles | airway] = 0

    for nodule in findings.nodules:
        _insert_nodule(hu, label, nodule, x, y, z)
    return hu, label


def _nodule_hu(nodule: Lesion) -> tuple[float, float]:
    """(body HU, core HU) of a nodule: its own :attr:`~.lesion.Lesion.hu`, else by density type."""
    if nodule.hu is not None:
        return nodule.hu, nodule.hu
    density = nodule.features.density
    if density == "ground_glass":
        return -600.0, -600.0
    if density == "part_solid":
        return -580.0, 30.0
    if density == "calcified":
        return 420.0, 420.0
    return 35.0, 35.0


def _insert_nodule(hu: np.ndarray, label: np.ndarray, nodule: Lesion, x, y, z) -> None:
    """Blend a nodule into the lung (in place); nodules inside the lung stay labelled lung."""
    c = nodule.center
    reach = nodule.extent
    near = (np.abs(x - c[0]) < reach) & (np.abs(y - c[1]) < reach) & (np.abs(z - c[2]) < reach)
    if not near.any():
        return
    px, py, pz = x[near], y[near], z[near]
    occ = nodule.occupancy(px, py, pz)
    body_hu, core_hu = _nodule_hu(nodule)
    values = hu[near]
    values = values + occ * (np.float32(body_hu) - values)
    if nodule.core_fraction > 0:
        core = nodule.occupancy(px, py, pz, scale=nodule.core_fraction, spicules=False)
        values = values + core * (np.float32(core_hu) - values)
    hu[near] = values


def render(
    anat: Anatomy, grid: Grid, findings: Findings | None = None, upright: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Render a phantom on a grid.

    Nodule centres are in the phantom's anatomy frame (world coordinates after the smooth warp),
    like every organ, so a nodule placed with :func:`sample_lung_point` sits in the lung whatever
    the grid.

    Args:
        anat: the patient.
        grid: where to sample.
        findings: abnormalities to add.
        upright: patient standing (radiographs: fluid and gas layer along z) instead of supine
            (CT: they layer posteriorly / anteriorly).

    Returns:
        ``(hu, label)``: float32 HU and uint8 organ labels, both of shape ``grid.shape``
        indexed ``[x, y, z]``. No noise or blur is added here (that is the scanner's part).
    """
    return _evaluate(anat, *grid.coords(), findings or Findings(), upright)


def render_points(
    anat: Anatomy, x, y, z, findings: Findings | None = None, upright: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`render` at arbitrary points: ``(hu, label)`` at broadcastable world coordinate arrays (mm)."""
    return _evaluate(anat, x, y, z, findings or Findings(), upright)


def sample_lung_point(
    anat: Anatomy,
    rng: np.random.Generator,
    side: str | None = None,
    tries: int = 256,
    findings: Findings | None = None,
    upright: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """A random point inside the aerated lung, for placing a nodule.

    Args:
        anat: the patient.
        rng: random generator.
        side: ``"R"`` or ``"L"``; either when ``None``.
        tries: candidate points per round.
        findings: effusion and pneumothorax to respect (the point is in lung that stays aerated:
            above the fluid, inside a collapsed lung); none when ``None``.
        upright: how ``findings`` layer (see :func:`render`).

    Returns:
        ``(world, frame)``: the point in world coordinates (where to centre a crop) and in the
        anatomy frame (where :func:`render` expects lesion centres); both ``(3,)`` arrays in mm.
    """
    sides = [side] if side else ["R", "L"]
    for _ in range(8):
        s = sides[int(rng.integers(len(sides)))]
        c, ax = np.asarray(anat.lung_center[s]), np.asarray(anat.lung_axes[s])
        pts = (c + ax * rng.uniform(-1.0, 1.0, size=(tries, 3))).astype(np.float32)
        _, label = _evaluate(anat, pts[:, 0], pts[:, 1], pts[:, 2], findings or Findings(), upright=upright)
        hits = np.flatnonzero(label == LABELS["lung"])
        if hits.size:
            world = pts[hits[0]]
            frame = np.array([float(v) for v in anat.warp(*(np.float32(v) for v in world))])
            return world.astype(np.float64), frame
    raise RuntimeError("could not place a point in the lung of this phantom")  # pragma: no cover - sampling bug
