"""File-format sniffing that needs no imaging library (kept light: datalist validation uses it)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DICOM_SUFFIXES", "is_dicom_file"]

DICOM_SUFFIXES = (".dcm", ".dicom")


def is_dicom_file(path: Path) -> bool:
    """DICOM by suffix or by the ``DICM`` marker after the 128-byte preamble."""
    if path.name.lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False
