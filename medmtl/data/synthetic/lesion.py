"""One lesion model shared by CT nodules, chest-radiograph nodules and mammographic masses.

A lesion is a star-shaped blob around a centre: an ellipsoid (ellipse in 2D) of mean radius ``R``
whose radius in direction ``u`` is modulated by smooth *lobes* and narrow *spicules*::

    R(u) = R * (1 + sum_k a_k max(u . d_k, 0)^6 + sum_s L_s max(u . e_s, 0)^m_s)

Lobes (``a_k`` grows with the lobulation feature) bulge the margin; spicules (count and length
grow with the spiculation feature, ``m_s`` ~ 30-100 keeps them a few degrees wide) are the thin
radiating strands of an infiltrative margin. The occupancy is a linear ramp of width ``edge``
across that surface, so ground-glass lesions (wide ramp) have blurred margins. The same function
works in 2D and 3D, so the same kinds of lesions recur across modalities and features learnt on
one task can help another.

Malignancy rule (``nodule_malignancy``): the clean label is 1 when

    2.2 log2(d / 12 mm) + 2.5 spiculation + 1.2 lobulation + density_risk - 0.8 > 0

with ``density_risk`` = 0 (solid), +1.2 (part-solid), -1.0 (ground-glass), -4.0 (calcified), in
the spirit of clinical risk models (Brock / Lung-RADS: larger, spiculated, part-solid nodules are
more often malignant; calcified ones are benign); the offset -0.8 makes about half of the
nodules malignant. The clean label is a deterministic function of the visible features. Label
noise (reader disagreement) is not added here: :func:`~.generate.generate` publishes each label
flipped with a documented, seeded probability per task (``label_noise``; 0.03 for
``nodule_malignancy`` by default), records the flips and the resulting ceiling (the ROC AUC of
this logit against the published labels, ~0.97 at 3%) in ``synthetic.json``.

CT nodules use the prior of :func:`sample_nodule_features` (4-30 mm, all four densities);
radiographs (:mod:`.cxr`) map its diameters onto 28-48 mm and draw solid or calcified nodules
only, so that they show at 3 mm per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medmtl.data.synthetic.procedural import random_unit_vectors

__all__ = [
    "DENSITIES",
    "DENSITY_RISK",
    "Lesion",
    "LesionFeatures",
    "make_lesion",
    "malignancy_logit",
    "sample_mass_features",
    "sample_nodule_features",
]

#: Nodule density types and their contribution to the malignancy logit.
DENSITY_RISK: dict[str, float] = {"solid": 0.0, "part_solid": 1.2, "ground_glass": -1.0, "calcified": -4.0}
DENSITIES: tuple[str, ...] = tuple(DENSITY_RISK)
_DENSITY_PROBS = (0.62, 0.14, 0.14, 0.10)


@dataclass(frozen=True)
class LesionFeatures:
    """The visual features that define a lesion (and, for nodules, its malignancy).

    Attributes:
        diameter: mean diameter of the lesion body in mm (spicules excluded).
        spiculation: 0 (smooth) .. 1 (many long spicules).
        lobulation: 0 (round) .. 1 (strongly lobulated).
        density: one of :data:`DENSITIES`.
    """

    diameter: float
    spiculation: float
    lobulation: float
    density: str = "solid"

    def as_dict(self) -> dict[str, float | str]:
        """JSON-ready dict (rounded floats)."""
        return {
            "diameter_mm": round(self.diameter, 2),
            "spiculation": round(self.spiculation, 3),
            "lobulation": round(self.lobulation, 3),
            "density": self.density,
        }


def malignancy_logit(f: LesionFeatures) -> float:
    """Logit of the clean malignancy label (> 0 means malignant); see the module docstring."""
    return 2.2 * np.log2(f.diameter / 12.0) + 2.5 * f.spiculation + 1.2 * f.lobulation + DENSITY_RISK[f.density] - 0.8


def sample_nodule_features(rng: np.random.Generator) -> LesionFeatures:
    """Draw lung-nodule features from a population prior (independent of the label)."""
    diameter = float(np.clip(np.exp(rng.normal(np.log(11.0), 0.45)), 4.0, 30.0))
    density = DENSITIES[rng.choice(len(DENSITIES), p=_DENSITY_PROBS)]
    spiculation = 0.0 if rng.random() < 0.5 else float(rng.uniform(0.2, 1.0))
    if density == "calcified":
        # Calcified granulomas are smooth; a spiculated calcified nodule would be a contradiction.
        spiculation = 0.0
    return LesionFeatures(diameter, spiculation, float(rng.uniform(0.0, 1.0)), density)


def sample_mass_features(rng: np.random.Generator) -> LesionFeatures:
    """Draw breast-mass features (round, oval, lobulated or spiculated solid masses)."""
    diameter = float(np.clip(np.exp(rng.normal(np.log(14.0), 0.35)), 7.0, 35.0))
    spiculation = 0.0 if rng.random() < 0.5 else float(rng.uniform(0.3, 1.0))
    return LesionFeatures(diameter, spiculation, float(rng.uniform(0.0, 1.0)), "solid")


@dataclass(frozen=True)
class Lesion:
    """A lesion placed in space; evaluate it with :meth:`occupancy`.

    Attributes:
        features: the visual features it was made from.
        center: ``(dims,)`` centre in mm (world coordinates).
        rotation: ``(dims, dims)`` orthonormal matrix, columns are the lesion's axes.
        axes: ``(dims,)`` relative semi-axis lengths (geometric mean 1): elongation.
        lobe_dirs, lobe_amps: ``(K, dims)`` and ``(K,)`` lobes.
        spike_dirs, spike_lengths, spike_powers: ``(S, dims)``, ``(S,)``, ``(S,)`` spicules.
        edge: width of the margin ramp in mm.
        core_fraction: radius of the solid core relative to the lesion (part-solid nodules).
        hu: CT number of the lesion body (and core) overriding the default of its density, or
            ``None`` (radiograph nodules are denser than CT ones so that they show at 3 mm per pixel).
    """

    features: LesionFeatures
    center: np.ndarray
    rotation: np.ndarray
    axes: np.ndarray
    lobe_dirs: np.ndarray
    lobe_amps: np.ndarray
    spike_dirs: np.ndarray
    spike_lengths: np.ndarray
    spike_powers: np.ndarray
    edge: float
    core_fraction: float
    hu: float | None = None

    @property
    def dims(self) -> int:
        return int(self.center.shape[0])

    @property
    def radius(self) -> float:
        return self.features.diameter / 2.0

    @property
    def extent(self) -> float:
        """Radius in mm of a ball that contains the whole lesion, spicules and margin included."""
        bulge = 1.0 + self.lobe_amps.sum() + (self.spike_lengths.max() if self.spike_lengths.size else 0.0)
        return float(self.radius * bulge * self.axes.max() + self.edge)

    def _local(self, coords: tuple[np.ndarray, ...]) -> tuple[np.ndarray, list[np.ndarray]]:
        rel = [c - np.float32(c0) for c, c0 in zip(coords, self.center)]
        q = [
            sum(np.float32(self.rotation[j, i]) * rel[j] for j in range(self.dims)) / np.float32(self.axes[i])
            for i in range(self.dims)
        ]
        r = np.sqrt(sum(qi * qi for qi in q)) + np.float32(1e-6)
        return r, [qi / r for qi in q]

    def occupancy(self, *coords: np.ndarray, scale: float = 1.0, spicules: bool = True) -> np.ndarray:
        """Fraction of each point covered by the lesion (1 inside, 0 outside, ramp across the margin).

        Args:
            coords: broadcastable coordinate arrays in mm, one per dimension.
            scale: radius multiplier (``core_fraction`` gives the solid core of part-solid nodules).
            spicules: include the spicules.

        Returns:
            float32 array of the broadcast shape of ``coords``, values in [0, 1].
        """
        r, u = self._local(coords)
        bulge = np.ones_like(r)
        for d, a in zip(self.lobe_dirs, self.lobe_amps):
            cos = np.maximum(sum(np.float32(di) * ui for di, ui in zip(d, u)), 0)
            bulge += np.float32(a) * cos**6
        if spicules:
            for d, length, power in zip(self.spike_dirs, self.spike_lengths, self.spike_powers):
                cos = np.maximum(sum(np.float32(di) * ui for di, ui in zip(d, u)), 0)
                bulge += np.float32(length) * cos ** np.float32(power)
        surface = np.float32(self.radius * scale) * bulge
        return np.clip(np.float32(0.5) + (surface - r) / np.float32(self.edge), 0.0, 1.0)

    def projected_thickness(self, *coords: np.ndarray) -> np.ndarray:
        """2D lesions only: relative thickness of the lesion along the beam (1 at the centre).

        Models a 3D mass seen in projection: thick in the middle, thin at the margin.
        """
        occ = self.occupancy(*coords)
        r, _ = self._local(coords)
        dome = np.sqrt(np.clip(1.0 - (r / np.float32(self.radius * 1.3)) ** 2, 0.0, 1.0))
        return occ * (np.float32(0.35) + np.float32(0.65) * dome)


def make_lesion(rng: np.random.Generator, features: LesionFeatures, center: np.ndarray) -> Lesion:
    """Turn features into a concrete random shape at ``center`` (``(dims,)`` mm, dims 2 or 3)."""
    center = np.asarray(center, dtype=np.float64)
    dims = center.shape[0]
    q, _ = np.linalg.qr(rng.normal(size=(dims, dims)))
    elong = rng.uniform(1.0, 1.35, size=dims)
    axes = elong / np.exp(np.log(elong).mean())
    n_lobes = int(rng.integers(3, 7))
    lobe_amps = features.lobulation * rng.uniform(0.15, 0.45, size=n_lobes)
    n_spikes = round(features.spiculation * (18 if dims == 3 else 12))
    spike_lengths = features.spiculation * rng.uniform(0.8, 2.2, size=n_spikes)
    spike_powers = rng.uniform(40.0, 100.0, size=n_spikes) if dims == 3 else rng.uniform(30.0, 80.0, size=n_spikes)
    edge = {"ground_glass": 1.6, "part_solid": 1.2}.get(features.density, 0.6)
    core = float(rng.uniform(0.35, 0.65)) if features.density == "part_solid" else 0.0
    return Lesion(
        features=features,
        center=center,
        rotation=q,
        axes=axes,
        lobe_dirs=random_unit_vectors(rng, n_lobes, dims),
        lobe_amps=lobe_amps,
        spike_dirs=random_unit_vectors(rng, n_spikes, dims),
        spike_lengths=spike_lengths,
        spike_powers=spike_powers,
        edge=edge,
        core_fraction=core,
    )
