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
Colour is shown as on an sRGB display, as browsers and colour-managed viewers do:

* an embedded ICC profile (PNG ``iCCP``, JPEG ``APP2``) that is sRGB, or a gray profile with sRGB's
  tone curve, leaves the samples as they are (every 8-bit probe colour within 1 of itself); another
  RGB, gray or CMYK profile is converted to sRGB with ``PIL.ImageCms`` (LittleCMS, relative
  colorimetric); a gray image stays gray. A profile of another colour space than the image's is
  ignored with a warning (libpng drops it, browsers ignore it). Refused: a non-sRGB profile on a
  16-bit image (ImageCms converts 8-bit images only), an unreadable profile, no ImageCms.
* a PNG ``gAMA`` other than 1/2.2 (and no ``iCCP`` or ``sRGB`` chunk, which override it) is applied
  as a gamma 2.2 display shows it: ``sample ** (1 / (2.2 * gamma))`` on samples normalised to
  ``[0, 1]``, rounded back to the sample depth. Applying it rather than refusing keeps the PNGs
  written with ``gAMA`` 1.0 (linear light) loadable, and the formula is well defined: the one of
  libpng's ``png_set_gamma`` for a 2.2 screen. A gamma that is not positive is refused.
* a 16-bit RGB, RGBA or gray + alpha PNG (IHDR bit depth and colour type) is refused: Pillow
  decodes 8 of its 16 bits per channel and holds no 16-bit colour image to decode it into.
"""

from __future__ import annotations

import copy
import functools
import io
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

try:
    from PIL import ImageCms
except ImportError:  # Pillow built without LittleCMS: an embedded ICC profile is refused
    ImageCms = None

__all__ = [
    "VOI_FUNCTIONS",
    "VOI_LUT_KEY",
    "PNG_GAMMA_TOLERANCE",
    "DicomPresentation",
    "VoiLut",
    "apply_window",
    "dicom_presentation",
    "displayed_size",
    "mirror_constant",
    "pil_as_viewed",
]

logger = logging.getLogger(__name__)

# colour-managed viewers show an image with a profile in sRGB (the display's colour space assumed),
# mapping the profile's white to sRGB's (relative colorimetric; for the matrix / tone-curve
# profiles of RGB and gray images it is also what perceptual gives)
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")) if ImageCms is not None else None
_INTENT = ImageCms.Intent.RELATIVE_COLORIMETRIC if ImageCms is not None else None

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
# PNG colour types (IHDR byte 25) that Pillow reads at 8 bits per channel when they hold 16
_PNG_16_BIT_COLOUR = {2: "RGB", 4: "gray with alpha", 6: "RGBA"}
#: A PNG ``gAMA`` within this of 1/2.2 (the sRGB-like encoding, stored as 0.45455) is left as it is.
PNG_GAMMA_TOLERANCE = 1e-3
# ICC profile colour space (header bytes 16-19) of the PIL modes ImageCms converts at 8 bits
_ICC_SPACES = {"L": "GRAY", "RGB": "RGB", "CMYK": "CMYK"}


def pil_as_viewed(img: Image.Image) -> Image.Image:
    """``img`` (as PIL opened it) as a viewer shows it; the ``converter`` of MONAI's ``PILReader``.

    Raises:
        ImageLoadError: transparent pixels, a mode with no faithful grayscale / RGB picture, a
            16-bit colour PNG, an invalid PNG gamma, or an ICC profile that cannot be converted.
    """
    name = str(getattr(img, "filename", "") or "<image>")
    fmt = img.format
    if fmt == "PNG":
        _refuse_16_bit_colour(img, name)  # from the header, before Pillow decodes 8 of the 16 bits
    # read before any conversion: the colour of the samples as stored. The PNG specification lets
    # an sRGB chunk (and an iCCP profile, below) override gAMA
    icc = img.info.get("icc_profile")
    gamma = img.info.get("gamma") if fmt == "PNG" and "srgb" not in img.info else None
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
    elif mode not in _GRAY_OR_RGB and mode not in _ALPHA and mode not in _TO_RGB:
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
    # colour management on the opaque samples: an embedded profile wins over gAMA
    if icc:
        img = _to_srgb(img, name, icc)
    elif gamma is not None:
        img = _png_gamma(img, name, float(gamma))
    if img.mode in _TO_RGB:
        img = img.convert("RGB")  # PIL's JPEG reader has already undone Adobe's inverted CMYK
    img.format = fmt  # converted images lose it; MONAI's meta dict reports it
    return img


def _refuse_16_bit_colour(img: Image.Image, name: str) -> None:
    """Refuse a PNG with 16-bit colour (or gray + alpha) samples, which Pillow reads at 8 bits.

    The bit depth and colour type are IHDR bytes 24 and 25 of the file (after the signature, the
    chunk length and type, width and height). PIL holds no 16-bit multi-channel image, so there is
    no lossless picture to hand MONAI's ``PILReader``.
    """
    fp = getattr(img, "fp", None)
    if fp is not None:
        position = fp.tell()
        fp.seek(0)
        header = fp.read(26)
        fp.seek(position)
    elif getattr(img, "filename", None):  # already decoded and closed: read the header again
        with open(img.filename, "rb") as f:
            header = f.read(26)
    else:
        return  # an in-memory image with no file: its PNG header is gone, nothing to check
    depth, colour_type = header[24], header[25]
    if depth == 16 and colour_type in _PNG_16_BIT_COLOUR:
        raise ImageLoadError(
            name,
            f"is a 16-bit {_PNG_16_BIT_COLOUR[colour_type]} PNG: Pillow decodes it at 8 bits per channel, "
            "losing the low 8 bits; save it as a 16-bit grayscale PNG (or as 8-bit colour if 8 bits suffice)",
        )


def _png_gamma(img: Image.Image, name: str, gamma: float) -> Image.Image:
    """The samples of a PNG with ``gAMA`` ``gamma`` as an sRGB-like display (gamma 2.2) shows them.

    The file encodes light as ``sample ** (1 / gamma)``; a display of gamma 2.2 shows it as
    ``sample ** (1 / (2.2 * gamma))`` (normalised samples): the correction of libpng's
    ``png_set_gamma`` for a 2.2 screen, which browsers apply. Rounded to the sample depth, like the
    display's own values.
    """
    if not np.isfinite(gamma) or gamma <= 0:
        raise ImageLoadError(name, f"its PNG gAMA {gamma:g} is not a positive gamma: an invalid chunk")
    exponent = 1.0 / (2.2 * gamma)
    if abs(exponent - 1.0) <= PNG_GAMMA_TOLERANCE:
        return img
    samples = np.asarray(img)
    top = 255.0 if samples.dtype == np.uint8 else 65535.0  # PNG samples have 8 or 16 bits
    shown = np.rint(top * (samples / top) ** exponent).astype(samples.dtype)
    return Image.fromarray(shown)  # the same mode: L, RGB, I;16 or I from uint8 / uint16 / int32


def _to_srgb(img: Image.Image, name: str, icc: bytes) -> Image.Image:
    """``img`` converted from its embedded ICC profile ``icc`` to sRGB, as a colour-managed viewer
    shows it; unchanged when the profile is sRGB (or a gray profile with sRGB's tone curve)."""
    if ImageCms is None:
        raise ImageLoadError(
            name, "has an embedded ICC profile, but this Pillow has no LittleCMS (PIL.ImageCms) to check or apply it"
        )
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if _icc_is_srgb(icc):
            return img
        space = profile.profile.xcolor_space.strip()
        if space != _ICC_SPACES.get(img.mode, "GRAY" if img.mode.startswith("I") else None):
            # libpng drops such a profile ("color space not permitted") and browsers ignore it
            logger.warning("%s: its %s ICC profile does not fit a %s image; ignored, as viewers do", name, space, img.mode)
            return img
        if img.mode not in _ICC_SPACES:
            raise ImageLoadError(
                name,
                f"has an ICC profile other than sRGB ({profile.profile.profile_description!r}) on a {img.mode} "
                "image; ImageCms converts 8-bit images only: convert it to sRGB first",
            )
        out = ImageCms.applyTransform(img, _srgb_transform(icc, img.mode))
    except (OSError, ImageCms.PyCMSError) as e:
        raise ImageLoadError(name, f"its embedded ICC profile cannot be read or applied ({e})") from e
    # a gray profile maps gray to sRGB's neutral axis: back to one channel
    return out.convert("L") if img.mode == "L" else out


@functools.lru_cache(maxsize=32)
def _srgb_transform(icc: bytes, mode: str) -> Any:
    """The LittleCMS transform of ``mode`` pixels from profile ``icc`` to sRGB RGB.

    Unoptimised: LittleCMS's optimised 8-bit transform of a gray profile is off by up to 10 levels
    near black (a linear gray profile, checked in tests/test_presentation.py), the full pipeline is
    exact to the rounding; 0.2 s per million pixels, and such files are rare.
    """
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    return ImageCms.buildTransform(profile, _SRGB, mode, "RGB", renderingIntent=_INTENT, flags=ImageCms.Flags.NOOPTIMIZE)


@functools.lru_cache(maxsize=32)
def _icc_is_srgb(icc: bytes) -> bool:
    """Whether the RGB or gray ICC profile ``icc`` shows 8-bit samples as sRGB does: every probe
    colour (a 9^3 RGB grid, or every gray level) within 1 of itself after conversion to sRGB."""
    space = ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile.xcolor_space.strip()
    if space == "RGB":
        levels = np.linspace(0, 255, 9).round().astype(np.uint8)
        probe = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(1, -1, 3)
        expected = probe
    elif space == "GRAY":
        probe = np.arange(256, dtype=np.uint8)[None]
        expected = np.repeat(probe[..., None], 3, -1)
    else:
        return False
    shown = ImageCms.applyTransform(Image.fromarray(probe), _srgb_transform(icc, "RGB" if space == "RGB" else "L"))
    return int(np.abs(np.asarray(shown, dtype=np.int16) - expected).max()) <= 1
