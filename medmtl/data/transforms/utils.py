"""Private helpers shared by more than one transform family of :mod:`medmtl.data.transforms`.

A helper used by one family lives in that family's module.
"""

from __future__ import annotations

import torch
from monai.data import MetaTensor


def _filename(img: torch.Tensor, default: str = "<image>") -> str:
    return (
        str(img.meta.get("filename_or_obj", default))
        if isinstance(img, MetaTensor)
        else default
    )
