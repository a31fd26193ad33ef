"""Data: datalists, readers, modality pipelines, synthetic benchmark.

Public API:
    - :func:`load_datalist`: load and validate a datalist section (``docs/datalist.md``).
    - :func:`modality_transforms`: the MONAI ``Compose`` of a modality (``ct``, ``cxr``, ``mammo``).
    - :mod:`medmtl.data.synthetic`: the built-in synthetic multi-modality benchmark.
"""

from __future__ import annotations

from typing import Any

from medmtl.data.datalist import load_datalist, read_image_size

__all__ = ["load_datalist", "modality_transforms", "read_image_size"]


def __getattr__(name: str) -> Any:
    # The pipelines import MONAI's transform stack; loading it lazily keeps
    # ``python -m medmtl.data.synthetic`` and datalist checks light.
    if name == "modality_transforms":
        from medmtl.data.pipelines import modality_transforms

        return modality_transforms
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
