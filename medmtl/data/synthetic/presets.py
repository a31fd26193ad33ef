"""Size presets of the synthetic benchmark.

A preset fixes how many samples of each task are generated and at what image size; the anatomy
and lesion models do not change between presets, so a model trained on ``benchmark`` sees the
same kind of data as the tests see on ``tiny``.
"""

from __future__ import annotations

from dataclasses import dataclass

from medmtl.errors import ConfigError

__all__ = ["PRESETS", "Preset", "get_preset"]


@dataclass(frozen=True)
class Preset:
    """Counts and image sizes of one preset.

    Attributes:
        name: preset key.
        n_ct: CT volumes with organ masks (``ct_organ_seg``).
        ct_shape: nominal CT volume size ``(x, y, z)`` in voxels; each case varies it by a few
            voxels so that pipelines meet differently sized volumes.
        ct_spacing: nominal voxel spacing ``(x, y, z)`` in mm (slices thicker than pixels, as in
            clinical CT); it is also the resampling target recommended for the preset.
        n_nodules: 3D nodule patches (``nodule_malignancy``).
        nodule_patch: nodule patch size in voxels (rendered at 1 mm isotropic).
        n_cxr: chest radiographs (``cxr_findings``).
        cxr_size: radiograph size ``(rows, columns)``.
        cxr_ap_samples: samples along the beam (antero-posterior) used to integrate attenuation.
        n_mammo: mammograms (``mammo_mass_det``).
        mammo_size: mammogram size ``(rows, columns)``.
    """

    name: str
    n_ct: int
    ct_shape: tuple[int, int, int]
    ct_spacing: tuple[float, float, float]
    n_nodules: int
    nodule_patch: int
    n_cxr: int
    cxr_size: tuple[int, int]
    cxr_ap_samples: int
    n_mammo: int
    mammo_size: tuple[int, int]

    @property
    def counts(self) -> dict[str, int]:
        """Number of samples per task name."""
        return {
            "ct_organ_seg": self.n_ct,
            "nodule_malignancy": self.n_nodules,
            "cxr_findings": self.n_cxr,
            "mammo_mass_det": self.n_mammo,
        }


# Spacings are multiples of 1/16 mm so that they are exact in float32 (NIfTI headers) and in the
# decimal strings of DICOM: the geometry read back from a DICOM series then equals the one of its
# NIfTI mask bit for bit.
PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        n_ct=6,
        ct_shape=(48, 40, 32),
        ct_spacing=(8.0, 8.0, 12.0),
        n_nodules=12,
        nodule_patch=48,
        n_cxr=12,
        cxr_size=(64, 64),
        cxr_ap_samples=24,
        n_mammo=12,
        mammo_size=(96, 64),
    ),
    "small": Preset(
        name="small",
        n_ct=16,
        ct_shape=(96, 80, 64),
        ct_spacing=(4.0, 4.0, 6.0),
        n_nodules=240,
        nodule_patch=48,
        n_cxr=480,
        cxr_size=(128, 128),
        cxr_ap_samples=32,
        n_mammo=200,
        mammo_size=(192, 128),
    ),
    "benchmark": Preset(
        name="benchmark",
        n_ct=40,
        ct_shape=(128, 112, 80),
        ct_spacing=(3.0, 3.0, 4.75),
        n_nodules=600,
        nodule_patch=48,
        n_cxr=800,
        cxr_size=(256, 256),
        cxr_ap_samples=40,
        n_mammo=400,
        mammo_size=(320, 224),
    ),
}


def get_preset(name: str) -> Preset:
    """The preset ``name``; a :class:`~medmtl.errors.ConfigError` listing the known presets otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}") from None
