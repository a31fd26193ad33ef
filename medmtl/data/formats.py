"""The image formats medmtl reads, and sniffing them with no imaging library (kept light: datalist
validation uses it). The one suffix table: datalist checks, readers and input routing all read it."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DICOM_SUFFIXES", "NIFTI_SUFFIXES", "PIL_SUFFIXES", "image_format", "is_dicom_file"]

DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg")


def is_dicom_file(path: Path) -> bool:
    """DICOM by suffix, by the ``DICM`` marker after the 128-byte preamble, or by the first element
    of a file written without the preamble and marker (GDCM reads those, and stacks them in a
    series): the File Meta Information Group Length (0002,0000), VR ``UL``, little endian."""
    if path.name.lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM" or head.startswith(b"\x02\x00\x00\x00UL")


def image_format(path: str | os.PathLike) -> str:
    """The reader family of ``path``: ``"dicom"`` (file or series folder), ``"nifti"`` or ``"pil"``.

    Raises:
        ValueError: the path does not exist or its type is not supported.
    """
    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        return "dicom"
    if not p.is_file():
        raise ValueError("no such file or folder")
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(PIL_SUFFIXES):
        return "pil"
    if is_dicom_file(p):
        return "dicom"
    raise ValueError(
        f"unsupported image type; expected NIfTI {NIFTI_SUFFIXES}, {PIL_SUFFIXES}, a DICOM file or a DICOM series folder"
    )
