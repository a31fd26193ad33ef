"""medmtl: multi-task learning for medical imaging on MONAI.

One shared 2D/3D encoder feeds task heads (3D CT organ segmentation, lung-nodule malignancy,
mammography mass detection, chest X-ray findings), trained together on datasets that each
label one task.
"""

from __future__ import annotations

__version__ = "0.1.0"

from medmtl.errors import MedMTLError

__all__ = ["MedMTLError", "__version__"]
