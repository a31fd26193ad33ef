"""Converters from the published layouts of public datasets to the medmtl datalist format.

=============== =========================== ================================================
converter       dataset                      task
=============== =========================== ================================================
``msd``         Medical Segmentation         ``ct_organ_seg`` (masks remapped to our classes)
                Decathlon (CT tasks)
``lidc``        LIDC-IDRI                    ``nodule_malignancy`` (CT series + world centre)
``cbis_ddsm``   CBIS-DDSM (mass cases)       ``mammo_mass_det`` (boxes from ROI masks)
``cxr14``       NIH ChestX-ray14             ``cxr_findings``
=============== =========================== ================================================

Each ``convert_*`` function returns a :class:`ConversionResult`; its
:meth:`~ConversionResult.write` writes the datalist plus a ``.problems.json`` side file listing
every source row that was left out and why, then validates the datalist. Command line::

    python -m medmtl.data.convert {msd,lidc,cbis_ddsm,cxr14} --src DIR --out datalist.json
    python -m medmtl.data.convert merge a.json b.json --out all.json

See ``docs/real_data.md``. Only data-side code is used here (no engine, network or weighting).
"""

from __future__ import annotations

from medmtl.data.convert.cbis_ddsm import convert_cbis_ddsm
from medmtl.data.convert.cxr14 import convert_cxr14
from medmtl.data.convert.lidc import convert_lidc
from medmtl.data.convert.msd import convert_msd
from medmtl.data.convert.result import (
    ConversionProblem,
    ConversionResult,
    merge_datalists,
    problems_path,
)

__all__ = [
    "CONVERTERS",
    "ConversionProblem",
    "ConversionResult",
    "convert_cbis_ddsm",
    "convert_cxr14",
    "convert_lidc",
    "convert_msd",
    "merge_datalists",
    "problems_path",
]

#: CLI name -> converter function.
CONVERTERS = {"msd": convert_msd, "lidc": convert_lidc, "cbis_ddsm": convert_cbis_ddsm, "cxr14": convert_cxr14}
