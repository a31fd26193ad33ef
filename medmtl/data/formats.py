"""File-format sniffing that needs no imaging library (kept light: datalist validation uses it)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DICOM_SUFFIXES", "is_dicom_file"]

DICOM_SUFFIXES = (".dcm", ".dicom")


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
