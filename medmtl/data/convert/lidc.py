"""LIDC-IDRI -> ``nodule_malignancy`` entries (a CT series plus a nodule centre in world RAS mm).

Source layout (as published on TCIA)::

    LIDC-IDRI/LIDC-IDRI-0001/<study>/<series>/1-001.dcm ... 069.xml

Each CT series has one XML file of reads: up to four radiologists (``readingSession``) each
mark nodules (``unblindedReadNodule``) by per-slice edge maps (``roi``: ``imageSOP_UID``,
``inclusion``, ``edgeMap`` pixel ``xCoord`` = column / ``yCoord`` = row) and, for nodules of 3 mm
or more, rate their malignancy from 1 (highly unlikely) to 5 (highly suspicious).

Rules, applied in this order (each excluded nodule is reported, none silently dropped):

1. **One annotation per reader mark.** Its voxels are the filled ``inclusion`` polygons minus
   the ``exclusion`` ones; its centre is their mean position, mapped to world coordinates with
   the slice's ``ImagePositionPatient`` / ``ImageOrientationPatient`` / ``PixelSpacing`` and
   converted from DICOM LPS to RAS (``x`` and ``y`` negated), the convention of the ``center``
   field; its diameter is the largest in-plane distance between two edge points (mm).
2. **Readers are matched** by single linkage: two marks of different readers are the same nodule
   when their centres are closer than ``max(cluster_min_mm, half the larger diameter)``. A
   cluster holding two marks of one reader is inconsistent and reported.
3. **Label** from the median of the malignancy ratings of the cluster (at least ``min_readers``
   ratings, else excluded; nodules < 3 mm carry no rating): median < 3 -> benign (0), median > 3
   -> malignant (1), median == 3 -> excluded as indeterminate.

The entry's ``center`` is the mean of the matched marks' centres; ``diameter_mm`` (mean
diameter), ``malignancy_median`` and ``num_readers`` are kept as extra fields. Patients are split
by :mod:`.splits`. XML files of the chest radiograph reads (root ``IdriReadMessage``) are reported
and skipped.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from scipy.spatial.distance import pdist
from skimage.draw import polygon

from medmtl.data.convert.result import ConversionResult
from medmtl.data.convert.splits import check_fractions, section_of
from medmtl.errors import ConfigError

__all__ = ["TASK", "Annotation", "SliceGeometry", "convert_lidc", "label_from_ratings", "parse_reads"]

logger = logging.getLogger(__name__)

TASK = "nodule_malignancy"
_HEADER_TAGS = ["SeriesInstanceUID", "SOPInstanceUID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "PatientID", "Modality"]


@dataclass(frozen=True)
class SliceGeometry:
    """Pixel -> world (LPS mm) mapping of one DICOM slice."""

    position: np.ndarray  # (3,) ImagePositionPatient: centre of pixel (row 0, column 0)
    row_dir: np.ndarray  # (3,) direction of increasing column index
    col_dir: np.ndarray  # (3,) direction of increasing row index
    spacing: tuple[float, float]  # (between rows, between columns) = PixelSpacing

    def to_world(self, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``(N, 3)`` LPS positions of pixels ``(column, row)`` (DICOM PS3.3 C.7.6.2.1.1)."""
        return (
            self.position
            + np.asarray(cols, float)[:, None] * self.spacing[1] * self.row_dir
            + np.asarray(rows, float)[:, None] * self.spacing[0] * self.col_dir
        )


@dataclass
class Annotation:
    """One reader's mark of one nodule."""

    reader: int
    nodule_id: str
    malignancy: int | None
    center_lps: np.ndarray  # (3,)
    diameter_mm: float
    source: str


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]  # LIDC XML files use the default namespace http://www.nih.gov


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if _local(c.tag) == name]


def _text(el: ET.Element, name: str) -> str | None:
    found = _children(el, name)
    return found[0].text.strip() if found and found[0].text else None


def _find(el: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in el.iter() if _local(c.tag).lower() == name.lower()), None)


def label_from_ratings(ratings: list[int]) -> tuple[int | None, float]:
    """``(label, median)``: 0 when the median rating is < 3, 1 when > 3, ``None`` when exactly 3."""
    median = float(np.median(ratings))
    return (None if median == 3 else int(median > 3)), median


def _series_index(src: Path) -> dict[str, Path]:
    """SeriesInstanceUID -> folder, reading one header per folder holding DICOM files."""
    index: dict[str, Path] = {}
    folders = sorted({p.parent for p in src.rglob("*.dcm")})
    for folder in folders:
        first = next(iter(sorted(folder.glob("*.dcm"))))
        ds = pydicom.dcmread(first, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        index.setdefault(str(ds.SeriesInstanceUID), folder)
    return index


def _series_geometry(folder: Path, series_uid: str) -> tuple[dict[str, SliceGeometry], dict[float, str], str]:
    """Geometry per SOPInstanceUID, SOP per slice z, and the PatientID of one series."""
    by_sop: dict[str, SliceGeometry] = {}
    by_z: dict[float, str] = {}
    patient = ""
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        if str(ds.get("SeriesInstanceUID", "")) != series_uid or "ImagePositionPatient" not in ds:
            continue
        iop = np.asarray(ds.ImageOrientationPatient, float)
        geometry = SliceGeometry(np.asarray(ds.ImagePositionPatient, float), iop[:3], iop[3:], tuple(float(v) for v in ds.PixelSpacing))
        by_sop[str(ds.SOPInstanceUID)] = geometry
        by_z[round(float(ds.ImagePositionPatient[2]), 2)] = str(ds.SOPInstanceUID)
        patient = str(ds.get("PatientID", "")) or patient
    return by_sop, by_z, patient


def _roi_pixels(roi: ET.Element) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Filled polygon (columns, rows) of an ROI and its edge points ``(N, 2)`` (column, row)."""
    edges = np.asarray(
        [[float(_text(e, "xCoord") or "nan"), float(_text(e, "yCoord") or "nan")] for e in _children(roi, "edgeMap")]
    ).reshape(-1, 2)
    if not np.isfinite(edges).all() or len(edges) == 0:
        raise ValueError("edge map without coordinates")
    rows, cols = polygon(edges[:, 1], edges[:, 0])
    # the edge pixels belong to the nodule (LIDC draws the outline on its outer boundary)
    pixels = np.unique(np.concatenate([np.stack([cols, rows], 1), edges.astype(int)]), axis=0)
    return pixels[:, 0], pixels[:, 1], edges


def parse_reads(
    root: ET.Element, xml: str | Path, by_sop: dict[str, SliceGeometry], by_z: dict[float, str]
) -> tuple[list[Annotation], list[tuple[str, str]]]:
    """The nodule marks of one parsed LIDC XML file (LPS centres), and ``(source, reason)`` problems.

    Args:
        root: the ``LidcReadMessage`` element.
        xml: the file, to name it in problems.
        by_sop: geometry per ``SOPInstanceUID`` of the series.
        by_z: ``SOPInstanceUID`` per slice position z (rounded to 0.01 mm), the fallback match.
    """
    annotations: list[Annotation] = []
    problems: list[tuple[str, str]] = []
    for reader, session in enumerate(_children(root, "readingSession")):
        for nodule in _children(session, "unblindedReadNodule"):
            nid = _text(nodule, "noduleID") or "?"
            where = f"{xml}: reader {reader} nodule {nid!r}"
            characteristics = _children(nodule, "characteristics")
            rating = _text(characteristics[0], "malignancy") if characteristics else None
            if rating is not None and rating not in {"1", "2", "3", "4", "5"}:
                problems.append((where, f"malignancy rating {rating!r} is not 1-5"))
                continue
            points, edge_pts, bad = [], [], ""
            for roi in _children(nodule, "roi"):
                sop = _text(roi, "imageSOP_UID") or ""
                z = _text(roi, "imageZposition")
                if sop not in by_sop and z is not None:
                    sop = by_z.get(round(float(z), 2), sop)  # some reads name a SOP UID of another export
                if sop not in by_sop:
                    bad = f"ROI on image {sop or '?'} (z {z}) that is not in the series"
                    break
                try:
                    cols, rows, edges = _roi_pixels(roi)
                except ValueError as e:
                    bad = str(e)
                    break
                world = by_sop[sop].to_world(cols, rows)
                included = (_text(roi, "inclusion") or "TRUE").upper() == "TRUE"
                points.append((world, included))
                if included:
                    edge_pts.append(by_sop[sop].to_world(edges[:, 0], edges[:, 1]))
            if bad or not points:
                problems.append((where, bad or "no ROI"))
                continue
            inc = np.concatenate([w for w, keep in points if keep]) if any(k for _, k in points) else np.empty((0, 3))
            exc = {tuple(np.round(p, 3)) for w, keep in points if not keep for p in w}
            kept = np.asarray([p for p in inc if tuple(np.round(p, 3)) not in exc]).reshape(-1, 3)
            if len(kept) == 0:
                problems.append((where, "no voxel left after exclusions"))
                continue
            # in-plane diameter: all edge points of one ROI lie in its slice plane
            diameter = max((float(pdist(e).max()) if len(e) > 1 else 0.0) for e in edge_pts) if edge_pts else 0.0
            annotations.append(Annotation(reader, nid, int(rating) if rating else None, kept.mean(0), diameter, where))
    return annotations, problems


def _cluster(annotations: list[Annotation], min_mm: float) -> list[list[Annotation]]:
    """Single-linkage groups of marks closer than ``max(min_mm, half the larger diameter)``."""
    parent = list(range(len(annotations)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, a in enumerate(annotations):
        for j in range(i + 1, len(annotations)):
            b = annotations[j]
            if a.reader != b.reader and np.linalg.norm(a.center_lps - b.center_lps) < max(min_mm, 0.5 * max(a.diameter_mm, b.diameter_mm)):
                parent[root(i)] = root(j)
    groups: dict[int, list[Annotation]] = defaultdict(list)
    for i, a in enumerate(annotations):
        groups[root(i)].append(a)
    return list(groups.values())


def convert_lidc(
    src: str | Path,
    val_fraction: float = 0.2,
    test_fraction: float = 0.1,
    seed: int = 0,
    cluster_min_mm: float = 3.0,
    min_readers: int = 1,
) -> ConversionResult:
    """Convert LIDC-IDRI reads into ``nodule_malignancy`` entries (see the module doc for the rules).

    Args:
        src: the LIDC-IDRI folder (searched recursively for ``*.xml`` and ``*.dcm``).
        val_fraction: fraction of patients in ``validation``.
        test_fraction: fraction of patients in ``test``.
        seed: seed of the patient split.
        cluster_min_mm: smallest centre distance (mm) under which two readers' marks are matched.
        min_readers: ratings a nodule needs to be labelled.

    Raises:
        ConfigError: no XML file under ``src`` or bad parameters.
    """
    src = Path(src)
    if cluster_min_mm <= 0 or min_readers < 1:
        raise ConfigError(f"cluster_min_mm must be > 0 and min_readers >= 1, got {cluster_min_mm}, {min_readers}")
    fractions = check_fractions({"validation": val_fraction, "test": test_fraction})
    xmls = sorted(src.rglob("*.xml"))
    if not xmls:
        raise ConfigError(f"{src}: no LIDC XML read files found")
    series = _series_index(src)
    result = ConversionResult(dataset="LIDC-IDRI", source=str(src))
    result.notes = {
        "label_rule": "median malignancy < 3 -> benign (0), > 3 -> malignant (1), == 3 excluded",
        "min_readers": min_readers,
        "cluster_min_mm": cluster_min_mm,
        "center": "world RAS mm",
    }
    for xml in xmls:
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError as e:
            result.problem(str(xml), f"not readable XML ({e})")
            continue
        if _local(root.tag) != "LidcReadMessage":
            result.problem(str(xml), f"not a CT read (root {_local(root.tag)!r}); skipped", kind="excluded")
            continue
        uid_el = _find(root, "SeriesInstanceUid")
        uid = (uid_el.text or "").strip() if uid_el is not None else ""
        if uid not in series:
            result.problem(str(xml), f"its CT series {uid or '<no SeriesInstanceUid>'} is not under {src}")
            continue
        by_sop, by_z, patient = _series_geometry(series[uid], uid)
        annotations, problems = parse_reads(root, xml, by_sop, by_z)
        for where, reason in problems:
            result.problem(where, reason)
        section = section_of(patient or uid, fractions, seed)
        for k, group in enumerate(sorted(_cluster(annotations, cluster_min_mm), key=lambda g: tuple(g[0].center_lps))):
            marks = "; ".join(f"reader {a.reader} {a.nodule_id!r}" for a in group)
            where = f"{xml}: nodule of {marks}"
            readers = [a.reader for a in group]
            if len(set(readers)) != len(readers):
                result.problem(where, "one reader has two marks matched to the same nodule (inconsistent reads)")
                continue
            ratings = [a.malignancy for a in group if a.malignancy is not None]
            if len(ratings) < min_readers:
                result.problem(where, f"{len(ratings)} malignancy rating(s), {min_readers} needed (nodules < 3 mm are not rated)", kind="excluded")
                continue
            label, median = label_from_ratings(ratings)
            if label is None:
                result.problem(where, f"median malignancy 3 of ratings {sorted(ratings)} (indeterminate)", kind="excluded")
                continue
            lps = np.mean([a.center_lps for a in group], axis=0)
            entry: dict[str, Any] = {
                "task": TASK,
                "id": f"{patient or uid}_{uid[-8:]}_{k:02d}",
                "image": str(series[uid].resolve()),
                "label": label,
                "center": [round(float(-lps[0]), 3), round(float(-lps[1]), 3), round(float(lps[2]), 3)],
                "diameter_mm": round(float(np.mean([a.diameter_mm for a in group])), 2),
                "malignancy_median": median,
                "num_readers": len(ratings),
            }
            result.add(section, entry)
    return result
