"""Load 2D images as a viewer shows them: the DICOM presentation attributes and the PNG / JPEG variants.

The readers decode pixels (GDCM through SimpleITK for DICOM, PIL for PNG / JPEG); this module is the
one place that turns what they decode into what a viewer displays, or refuses with an
:class:`~medmtl.errors.ImageLoadError` naming the file and the attribute it cannot honour.

DICOM (a single file; series folders are read as GDCM returns them), after GDCM has applied
``RescaleSlope`` / ``RescaleIntercept`` and inverted ``MONOCHROME1``:

* ``PresentationLUTShape`` ``INVERSE`` on ``MONOCHROME2``: mirrored like ``MONOCHROME1``, so high
  values are bright where the viewer shows bright. On ``MONOCHROME1`` it is what the standard
  requires (no second inversion); ``IDENTITY`` on ``MONOCHROME1`` contradicts it: the photometric
  interpretation wins (as in GDCM and pydicom), with a warning. Other shapes and a Presentation LUT
  Sequence are refused.
* ``ModalityLUTSequence``: applied to the stored values with pydicom's ``apply_modality_lut``
  (refused together with a non-identity rescale: the two are alternatives).
* ``VOILUTFunction``: ``LINEAR``, ``LINEAR_EXACT`` and ``SIGMOID`` are applied by
  :class:`~medmtl.data.transforms.ScaleIntensityByVOI` with pydicom's ``apply_windowing`` (the
  PS3.3 C.11.2.1.2 / C.11.2.1.3 formulas); any other value is refused at load.
* ``VOILUTSequence``: carried in the meta dict as a :class:`VoiLut` that ``ScaleIntensityByVOI``
  applies with pydicom's ``apply_voi`` (it takes precedence over a window, as in pydicom's
  ``apply_voi_lut``).
* ``PixelPaddingValue`` (and ``PixelPaddingRangeLimit``): the padding pixels are set to the darkest
  value of the other pixels, i.e. shown black, so they neither stretch the intensity range nor pass
  for anatomy.
* Photometric interpretations ``MONOCHROME1/2``, ``RGB``, ``YBR_FULL``, ``YBR_FULL_422`` and
  ``PALETTE COLOR`` (GDCM converts the colour ones to RGB); any other is refused.
* ``NumberOfFrames`` > 1 is refused for a 2D task ("N frames").
* Non-square pixels: the 2D spacing carried in the affine is ``PixelSpacing``, else
  ``ImagerPixelSpacing``, else ``PixelAspectRatio`` (GDCM picks one or the other by SOP class and
  ignores the aspect ratio); :class:`~medmtl.data.transforms.ResizeToFit` resizes to square pixels.

PNG / JPEG (:func:`pil_as_viewed`, the ``converter`` of MONAI's ``PILReader``): the EXIF
``Orientation`` is applied (``PIL.ImageOps.exif_transpose``), palettes are mapped, 1-bit becomes
0 / 255, CMYK and YCbCr become RGB, 16-bit grayscale keeps its 16 bits, and an alpha channel (or a
``tRNS`` transparent colour) that hides any pixel is refused: viewers composite transparency on
backgrounds of their own (white, black, a checkerboard), so there is no single picture to load.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import ExifTags, Image, ImageOps
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing
from pydicom.sequence import Sequence as DicomSequence

from medmtl.errors import ImageLoadError

__all__ = [
    "VOI_FUNCTIONS",
    "VOI_LUT_KEY",
    "DicomPresentation",
    "VoiLut",
    "apply_window",
    "dicom_presentation",
    "displayed_size",
    "mirror_constant",
    "pil_as_viewed",
]

logger = logging.getLogger(__name__)

#: Meta key of the :class:`VoiLut` of a DICOM file with a VOI LUT Sequence.
VOI_LUT_KEY = "voi_lut"
#: The VOI LUT Function values of PS3.3 C.11.2.1.3 (absent means ``LINEAR``).
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
# Photometric interpretations whose pixels GDCM returns as a viewer shows them (monochrome values,
# or RGB: GDCM converts YBR_FULL / YBR_FULL_422 and applies the palette, checked in tests). GDCM
# refuses YBR_PARTIAL_*; YBR_ICT / YBR_RCT (JPEG 2000) are refused as untested.
_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR")


# ------------------------------------------------------------------------------------------- DICOM


@dataclass(frozen=True)
class VoiLut:
    """A DICOM VOI LUT mapping the loaded values of one image to display values in ``[0, 1]``.

    Kept in the meta dict as :meth:`as_meta` (MONAI's ``LoadImage`` accepts only arrays, numbers,
    strings, lists and dicts there).

    Attributes:
        first: the first input value mapped (LUT Descriptor, 2nd value).
        table: the LUT entries.
        max_value: the display value mapped to 1.
        mirror: ``K`` when the loaded values are ``K - modality value`` (``MONOCHROME1`` or an
            inverse presentation), ``None`` otherwise.
    """

    first: int
    table: np.ndarray
    max_value: float
    mirror: float | None

    def as_meta(self) -> dict[str, Any]:
        return {
            "first": self.first,
            "table": self.table,
            "max_value": self.max_value,
            "mirror": float("nan") if self.mirror is None else self.mirror,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> VoiLut:
        mirror = float(meta["mirror"])
        return cls(int(meta["first"]), np.asarray(meta["table"]), float(meta["max_value"]), None if np.isnan(mirror) else mirror)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """Display values (float64, ``[0, 1]``, bright high) of loaded ``values``."""
        x = np.asarray(values, dtype=np.float64)
        if self.mirror is not None:
            x = self.mirror - x
        item = Dataset()
        # inputs are shifted by the first value mapped, so the descriptor needs no signed value
        item.add_new(0x00283002, "US", [len(self.table) % 2**16, 0, 16])  # LUTDescriptor
        item.add_new(0x00283006, "US", self.table.tolist())  # LUTData
        ds = Dataset()
        ds.VOILUTSequence = DicomSequence([item])
        # a LUT maps integers: modality values from a fractional rescale are rounded to the entry
        y = apply_voi(np.rint(x).astype(np.int64) - self.first, ds).astype(np.float64) / self.max_value
        return 1.0 - y if self.mirror is not None else y


def apply_window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """The VOI window ``(center, width)`` with ``function`` (:data:`VOI_FUNCTIONS`), output in ``[0, 1]``.

    pydicom's ``apply_windowing`` computes the PS3.3 C.11.2.1.2.1 / C.11.2.1.3 formulas; its output
    range is that of the stored values, so a 1-bit unsigned dataset without rescale makes it
    ``[0, 1]``. A ``LINEAR`` window narrower than 1 (pydicom refuses it) is the standard's
    threshold at ``center - 0.5``.
    """
    function = (function or "LINEAR").strip().upper()
    x = np.asarray(values, dtype=np.float64)
    if function == "LINEAR" and width < 1:
        return (x > center - 0.5).astype(np.float64)
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsStored, ds.PixelRepresentation = 1, 0
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = center, width, function
    return apply_windowing(x, ds)


@dataclass(frozen=True)
class DicomPresentation:
    """What :func:`dicom_presentation` found in a header, to apply to the array GDCM returns.

    Attributes:
        mirror: ``K`` such that the loaded values are ``K - modality value`` (``MONOCHROME1``,
            whose inversion GDCM applies, or ``INVERSE`` on ``MONOCHROME2``), ``None`` when they
            are the modality values.
        spacing_xy: the (column, row) pixel spacing to carry for a 2D image, ``None`` if the
            header has none.
        voi_lut: the file's VOI LUT, if it has one.
    """

    ds: Dataset
    filename: str
    mirror: float | None
    spacing_xy: tuple[float, float] | None
    voi_lut: VoiLut | None

    def apply(self, array: np.ndarray) -> np.ndarray:
        """The viewer's picture of ``array``, the pixels GDCM decoded (any axis order), as float32."""
        ds = self.ds
        if ds.get("PhotometricInterpretation", "") not in ("MONOCHROME1", "MONOCHROME2"):
            return array
        has_lut = bool(ds.get("ModalityLUTSequence"))
        inverse = self.mirror is not None and ds.get("PhotometricInterpretation") == "MONOCHROME2"
        if not (has_lut or inverse or "PixelPaddingValue" in ds):
            return array  # GDCM's pixels are what a viewer shows
        stored = self._stored(array) if has_lut or "PixelPaddingValue" in ds else None
        out = np.asarray(array, dtype=np.float32)
        if has_lut:
            # pydicom indexes the LUT with the input's dtype: integers
            modality = apply_modality_lut(np.rint(stored).astype(np.int64), _lut_16(ds, "ModalityLUTSequence"))
            out = modality.astype(np.float32)
            if self.mirror is not None:
                out = np.float32(self.mirror) - out
        elif inverse:
            # INVERSE: K - m, the mirror GDCM applies to MONOCHROME1. pydicom's
            # apply_presentation_lut mirrors at the image's own maximum instead, which moves with
            # the content and would not carry the VOI window over (_voi_window mirrors it at K)
            out = np.float32(self.mirror) - out
        if stored is not None and "PixelPaddingValue" in ds:
            out = self._blank_padding(out, stored)
        return out

    def _stored(self, array: np.ndarray) -> np.ndarray:
        """The stored values behind the pixels GDCM returned (float64).

        GDCM returns ``stored * slope + intercept`` and, for ``MONOCHROME1``,
        ``(lo + hi - stored) * slope + intercept`` with ``[lo, hi]`` the stored range (unsigned
        12- and 16-bit and signed files, checked in tests/test_presentation.py).
        """
        slope = float(self.ds.get("RescaleSlope", 1) or 1)
        intercept = float(self.ds.get("RescaleIntercept", 0) or 0)
        stored = (np.asarray(array, dtype=np.float64) - intercept) / slope
        if self.ds.get("PhotometricInterpretation") == "MONOCHROME1":
            lo, hi = _stored_range(self.ds)
            stored = lo + hi - stored
        return stored

    def _blank_padding(self, out: np.ndarray, stored: np.ndarray) -> np.ndarray:
        """Padding pixels (stored values in ``[PixelPaddingValue, PixelPaddingRangeLimit]``) set to
        the darkest other pixel."""
        ds = self.ds
        limits = [int(ds.PixelPaddingValue), int(ds.get("PixelPaddingRangeLimit", ds.PixelPaddingValue))]
        pad = (stored >= min(limits) - 0.25) & (stored <= max(limits) + 0.25)
        if not pad.any():
            return out
        if pad.all():
            raise ImageLoadError(self.filename, f"every pixel is padding (PixelPaddingValue {min(limits)}..{max(limits)})")
        out = np.array(out, copy=True)
        out[pad] = out[~pad].min()
        return out


def dicom_presentation(path: str | Path, spatial_dims: int | None = None) -> DicomPresentation:
    """Read the header of DICOM file ``path`` and decide how to show it, refusing what cannot be.

    Args:
        path: a DICOM file.
        spatial_dims: ``2`` refuses a file of several frames.

    Raises:
        ImageLoadError: an attribute medmtl cannot render as a viewer would (see the module docstring).
    """
    name = str(path)
    try:
        # force: GDCM also reads files without the 128-byte preamble and "DICM" marker
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception as e:  # pydicom raises several types; the message names the file either way
        raise ImageLoadError(name, f"cannot read its DICOM header ({type(e).__name__}: {e})") from e

    def refuse(reason: str) -> ImageLoadError:
        return ImageLoadError(name, reason)

    if "Rows" not in ds or "Columns" not in ds:
        raise refuse("its DICOM header has no Rows/Columns: not a readable DICOM image")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if spatial_dims == 2 and frames > 1:
        raise refuse(f"is a multi-frame DICOM with {frames} frames; a 2D task reads a single frame (extract the one to use)")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric not in _PHOTOMETRIC:
        raise refuse(
            f"PhotometricInterpretation {photometric or '(missing)'} is not supported; "
            f"expected one of {', '.join(_PHOTOMETRIC)}"
        )
    mono = photometric.startswith("MONOCHROME")
    if mono and ds.get("PresentationLUTSequence"):
        raise refuse("has a Presentation LUT Sequence (a non-linear display curve), which medmtl does not apply")
    shape = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
    if mono and shape not in ("", "IDENTITY", "INVERSE"):
        raise refuse(f"PresentationLUTShape {shape} is not IDENTITY or INVERSE")
    if photometric == "MONOCHROME1" and shape == "IDENTITY":
        logger.warning(
            "%s: PresentationLUTShape IDENTITY contradicts MONOCHROME1 (the standard requires INVERSE); "
            "showing it as MONOCHROME1 (low stored values bright), as GDCM and pydicom do", name,
        )
    function = str(ds.get("VOILUTFunction", "") or "").strip().upper()
    if mono and function and function not in VOI_FUNCTIONS:
        raise refuse(f"VOILUTFunction {function} is not one of {', '.join(VOI_FUNCTIONS)}")
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    if mono and ds.get("ModalityLUTSequence") and (slope, intercept) != (1.0, 0.0):
        raise refuse(
            "has both a Modality LUT Sequence and RescaleSlope/RescaleIntercept "
            f"({slope:g}, {intercept:g}); they are alternatives and GDCM would apply the rescale"
        )

    mirror = None
    if mono and (photometric == "MONOCHROME1" or shape == "INVERSE"):
        mirror = _mirror(ds)
    voi_lut = _voi_lut(ds, name, mirror) if mono and ds.get("VOILUTSequence") else None
    return DicomPresentation(ds, name, mirror, _spacing_xy(ds, name), voi_lut)


def _stored_range(ds: Dataset) -> tuple[int, int]:
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0) or 0):
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def mirror_constant(bits_stored: int, signed: bool, slope: float = 1.0, intercept: float = 0.0) -> float:
    """``K`` with ``loaded = K - modality value`` for a ``MONOCHROME1`` image as GDCM returns it.

    GDCM returns ``(lo + hi - stored) * slope + intercept``, ``[lo, hi]`` the stored range, i.e.
    ``K = (lo + hi) * slope + 2 * intercept``: the sum of the ends of the modality range.
    """
    lo, hi = (-(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1) if signed else (0, 2**bits_stored - 1)
    return (lo + hi) * slope + 2 * intercept


def _mirror(ds: Dataset) -> float:
    """:func:`mirror_constant` of ``ds``, which an ``INVERSE`` presentation reuses. With a Modality
    LUT Sequence the modality range is ``[0, 2**n - 1]`` (PS3.3 C.11.1.1.1, ``n`` the LUT's bits per
    entry)."""
    if ds.get("ModalityLUTSequence"):
        return float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    return mirror_constant(int(ds.BitsStored), bool(int(ds.get("PixelRepresentation", 0) or 0)), slope, intercept)


def _lut_16(ds: Dataset, keyword: str) -> Dataset:
    """A dataset with the first item of LUT sequence ``keyword``, its entries declared 16-bit.

    Works around pydicom 3.0.2: ``apply_voi`` computes the LUT indices in the dtype of the entries
    (``uint8`` for an 8-bit LUT, so entry 256 reads entry 0) and ``apply_modality_lut`` builds
    ``uint12`` for a 12-bit LUT and fails. LUT Data holds every entry in a 16-bit word whatever the
    declared depth, so declaring 16 changes only the working dtype, not a value.
    """
    item = ds[keyword][0]
    out_item = copy.deepcopy(item)
    descriptor = [int(v) for v in item.LUTDescriptor]
    out_item.LUTDescriptor = [descriptor[0], descriptor[1], 16]
    out = Dataset()
    if hasattr(ds, "file_meta"):
        out.file_meta = ds.file_meta  # the byte order of OW LUT Data
    setattr(out, keyword, DicomSequence([out_item]))
    return out


def _voi_lut(ds: Dataset, name: str, mirror: float | None) -> VoiLut:
    item = ds.VOILUTSequence[0]
    if "LUTDescriptor" not in item or "LUTData" not in item:
        raise ImageLoadError(name, "its VOI LUT Sequence item has no LUTDescriptor or LUTData")
    entries, first, bits = (int(v) for v in item.LUTDescriptor)
    entries = entries or 2**16
    # the table through pydicom (it decodes US / OW LUT Data)
    table = apply_voi(np.arange(first, first + entries, dtype=np.int64), _lut_16(ds, "VOILUTSequence"))
    table = table.astype(np.uint16)
    # some devices declare more bits than the entries use; viewers (Horos, Cornerstone) scale by
    # what the entries reach, so the display range is the smallest bit depth holding the largest one
    used = min(bits, max(1, int(table.max()).bit_length()))
    return VoiLut(first, table, float(2**used - 1), mirror)


def _numbers(value: Any, count: int) -> list[float] | None:
    try:
        numbers = [float(v) for v in (value if isinstance(value, (list, tuple, MultiValue)) else [value])]
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and all(np.isfinite(numbers)) and all(n > 0 for n in numbers) else None


def _spacing_xy(ds: Dataset, name: str) -> tuple[float, float] | None:
    """(column, row) spacing: ``PixelSpacing``, else ``ImagerPixelSpacing`` (both row\\column, mm),
    else ``PixelAspectRatio`` (vertical\\horizontal: relative spacing, columns 1). A malformed
    value is skipped with a warning."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing", "PixelAspectRatio"):
        if keyword not in ds or ds[keyword].value in (None, ""):
            continue
        values = _numbers(ds[keyword].value, 2)
        if values is None:
            logger.warning("%s: %s %r is not two positive numbers; ignored", name, keyword, ds[keyword].value)
        elif keyword == "PixelAspectRatio":
            return 1.0, values[0] / values[1]
        else:
            return values[1], values[0]
    return None


# ----------------------------------------------------------------------------------------- PIL


def _exif_orientation(im: Image.Image) -> int:
    # header only: PIL's PNG getexif() decodes the whole image when no eXIf chunk precedes IDAT
    if im.format == "PNG" and "exif" not in im.info and "Raw profile type exif" not in im.info:
        return 1
    return int(im.getexif().get(ExifTags.Base.Orientation, 1) or 1)


def displayed_size(im: Image.Image) -> tuple[int, int]:
    """(width, height) of ``im`` as a viewer shows it, from the header: EXIF orientations 5-8
    (the transposing ones of ``ImageOps.exif_transpose``) swap the stored size."""
    width, height = im.size
    return (height, width) if _exif_orientation(im) in (5, 6, 7, 8) else (width, height)


# PIL modes loaded as they are (gray: 8, 16 and 32-bit integer, float; RGB) and those converted
_GRAY_OR_RGB = ("L", "I", "I;16", "I;16L", "I;16B", "I;16N", "F", "RGB")
_TO_RGB = ("CMYK", "YCbCr", "RGBX", "HSV")
_ALPHA = {"LA": "L", "La": "L", "RGBA": "RGB", "RGBa": "RGB"}


def pil_as_viewed(img: Image.Image) -> Image.Image:
    """``img`` (as PIL opened it) as a viewer shows it; the ``converter`` of MONAI's ``PILReader``.

    Raises:
        ImageLoadError: transparent pixels, or a mode with no faithful grayscale / RGB picture.
    """
    name = str(getattr(img, "filename", "") or "<image>")
    fmt = img.format
    # the viewer's rotation / mirror; MONAI's PILReader then indexes the result [x = column, y = row]
    ImageOps.exif_transpose(img, in_place=True)
    mode = img.mode
    if mode == "1":
        img = img.convert("L")  # 0 / 255, as shown
    elif mode in ("P", "PA"):
        # map through the palette (np.asarray would give the indices)
        palette_mode = img.palette.mode if img.palette is not None else "RGB"
        transparent = mode == "PA" or "transparency" in img.info or "A" in palette_mode
        img = img.convert("RGBA" if transparent else "RGB")
    elif mode in _TO_RGB:
        img = img.convert("RGB")  # PIL's JPEG reader has already undone Adobe's inverted CMYK
    elif mode not in _GRAY_OR_RGB and mode not in _ALPHA:
        raise ImageLoadError(name, f"PIL image mode {mode} has no faithful grayscale or RGB picture")
    if img.mode in _ALPHA:
        alpha = np.asarray(img.getchannel("A"))
        hidden = int((alpha < 255).sum())
        if hidden:
            raise ImageLoadError(
                name,
                f"{hidden} of {alpha.size} pixels are transparent (alpha < 255): viewers composite them "
                "on backgrounds of their own, so medmtl refuses it; flatten the image (e.g. on black)",
            )
        img = img.convert(_ALPHA[img.mode])
    elif "transparency" in img.info and img.mode in _GRAY_OR_RGB:
        # a tRNS chunk: one gray level / colour is transparent
        key = img.info["transparency"]
        pixels = np.asarray(img)
        hits = (pixels == np.asarray(key)).all(axis=-1) if pixels.ndim == 3 else pixels == key
        if hits.any():
            raise ImageLoadError(
                name,
                f"{int(hits.sum())} of {hits.size} pixels have the PNG transparent colour {key}: viewers "
                "composite them on backgrounds of their own, so medmtl refuses it; flatten the image",
            )
    img.format = fmt  # converted images lose it; MONAI's meta dict reports it
    return img
