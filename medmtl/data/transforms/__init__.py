"""Custom MONAI transforms of the modality pipelines, each an array ``Transform`` with a dict twin.

Only what MONAI does not ship lives here, one family per module (MONAI's layout: the array
transform with its dictionary twin beside it):

* :mod:`~medmtl.data.transforms.io`: :class:`LoadMedicalImage` / :class:`LoadMedicalImaged` and
  :data:`MODALITY_TAGS`: the reader chosen from the file type, 2D images as a viewer shows them,
  reader failures as :class:`~medmtl.errors.ImageLoadError` naming the file, the DICOM
  ``Modality`` check and RGB reduced to one channel.
* :mod:`~medmtl.data.transforms.check`: :class:`CheckImage` / :class:`CheckImaged`: refuse
  non-finite voxels, masks whose values are not class indices and masks on another grid than
  their image, naming the file.
* :mod:`~medmtl.data.transforms.intensity`: :class:`ScaleIntensityByVOI` /
  :class:`ScaleIntensityByVOId`: the DICOM VOI window when the file has one, robust percentiles
  otherwise.
* :mod:`~medmtl.data.transforms.crop`: :class:`ForegroundThreshold` (keeps an empty image whole in
  ``CropForegroundd``) and :class:`CropAroundWorldCenter` / :class:`CropAroundWorldCenterd`: a
  patch around a point given in world (RAS, mm) coordinates, e.g. a nodule centre in a full CT
  volume.
* :mod:`~medmtl.data.transforms.orientation`: :func:`breast_laterality` and :class:`OrientBreast` /
  :class:`OrientBreastd`: flip mammograms so every chest wall is on the same side of the array.
* :mod:`~medmtl.data.transforms.resize`: :func:`fit_inside` and :class:`ResizeToFit` /
  :class:`ResizeToFitd` / :class:`RandResizeToFitd`: resize keeping the aspect ratio so that the
  whole image fits inside a size (nothing is ever cropped), warning when the size looks
  transposed; pad afterwards with MONAI's ``SpatialPadd``.
* :mod:`~medmtl.data.transforms.boxes`: :class:`StandardizeBoxesd`, :class:`BoxesFollowd` and
  :class:`BoxesToStoredGridd`: boxes from the datalist in any MONAI box mode, boxes that follow
  any affine-tracked spatial transform of their image, and predicted boxes mapped back to the
  stored image's pixels.
* :mod:`~medmtl.data.transforms.utils`: private helpers shared by several families.

Every public name is re-exported here (``from medmtl.data.transforms import X``); the dictionary
transforms also have MONAI's ``D`` / ``Dict`` aliases (``CheckImageD = CheckImageDict = CheckImaged``).
"""

from __future__ import annotations

from medmtl.data.transforms import boxes, check, crop, intensity, io, orientation, resize
from medmtl.data.transforms.boxes import (
    BoxesFollowD,
    BoxesFollowDict,
    BoxesFollowd,
    BoxesToStoredGridD,
    BoxesToStoredGridDict,
    BoxesToStoredGridd,
    StandardizeBoxesD,
    StandardizeBoxesDict,
    StandardizeBoxesd,
)
from medmtl.data.transforms.check import CheckImage, CheckImageD, CheckImageDict, CheckImaged
from medmtl.data.transforms.crop import (
    CropAroundWorldCenter,
    CropAroundWorldCenterD,
    CropAroundWorldCenterDict,
    CropAroundWorldCenterd,
    ForegroundThreshold,
)
from medmtl.data.transforms.intensity import (
    ScaleIntensityByVOI,
    ScaleIntensityByVOID,
    ScaleIntensityByVOIDict,
    ScaleIntensityByVOId,
)
from medmtl.data.transforms.io import (
    MODALITY_TAGS,
    LoadMedicalImage,
    LoadMedicalImageD,
    LoadMedicalImageDict,
    LoadMedicalImaged,
)
from medmtl.data.transforms.orientation import (
    OrientBreast,
    OrientBreastD,
    OrientBreastDict,
    OrientBreastd,
    breast_laterality,
)
from medmtl.data.transforms.resize import (
    RandResizeToFitD,
    RandResizeToFitDict,
    RandResizeToFitd,
    ResizeToFit,
    ResizeToFitD,
    ResizeToFitDict,
    ResizeToFitd,
    fit_inside,
)

# each module's __all__ names its public names once; the package exports them all
__all__: list[str] = []
__all__ += io.__all__
__all__ += check.__all__
__all__ += intensity.__all__
__all__ += crop.__all__
__all__ += orientation.__all__
__all__ += resize.__all__
__all__ += boxes.__all__
