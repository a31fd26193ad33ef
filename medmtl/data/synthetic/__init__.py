"""A deterministic synthetic multi-task benchmark: real NIfTI, DICOM and PNG files with ground truth.

No medical data can be downloaded where medmtl is built and tested, so the package generates its
own: CT torso phantoms in HU with organ masks (``ct_organ_seg``), 1 mm CT nodule patches whose
malignancy follows their size, margin and density (``nodule_malignancy``), PA chest radiographs
projected from the same phantoms with nodules, pneumothorax and effusion (``cxr_findings``) and
mammograms with mass boxes (``mammo_mass_det``). One lesion model (:mod:`.lesion`) makes the CT
nodules, the radiograph nodules and the breast masses, so the tasks share visual features as real
anatomy does. Files come as real data comes: NIfTI and DICOM series (sorted by position, not by
file name), DICOM CR/DX with MONOCHROME1 or MONOCHROME2, DICOM MG with laterality and view tags,
8- and 16-bit PNG, all listed in a medmtl datalist (``docs/datalist.md``).

Usage::

    python -m medmtl.data.synthetic --out data/synthetic --preset small --seed 0

or::

    from medmtl.data.synthetic import generate
    datalist = generate("data/synthetic", preset="tiny", seed=0)

Modules: :mod:`.presets` (sizes), :mod:`.procedural` (resolution-independent noise and warps),
:mod:`.lesion` (lesion shapes, malignancy rule), :mod:`.phantom` (3D torso), :mod:`.ct`,
:mod:`.cxr`, :mod:`.mammo` (one modality each), :mod:`.writers` (deterministic file formats),
:mod:`.design` (which sample gets which finding), :mod:`.splits` (stratified sections),
:mod:`.generate` (the folder and its datalist).
"""

from __future__ import annotations

from medmtl.data.synthetic.generate import GENERATOR, MANIFEST, generate
from medmtl.data.synthetic.presets import PRESETS, Preset, get_preset

__all__ = ["GENERATOR", "MANIFEST", "PRESETS", "Preset", "generate", "get_preset"]
