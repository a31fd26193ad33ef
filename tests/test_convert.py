"""Dataset converters (``medmtl.data.convert``) on tiny replicas of each published layout.

Every replica is written by the test itself (no download). Each test checks the converted values
against what was written (centres, boxes, labels, remapped masks), that bad rows are reported
rather than dropped silently, that the datalist validates, and that every entry loads through its
modality pipeline.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import DigitalMammographyXRayImageStorageForPresentation

from medmtl.data import load_datalist, modality_transforms
from medmtl.data.convert import (
    ConversionResult,
    convert_cbis_ddsm,
    convert_cxr14,
    convert_lidc,
    convert_msd,
    merge_datalists,
    problems_path,
)
from medmtl.data.convert.__main__ import main
from medmtl.data.convert.lidc import label_from_ratings
from medmtl.data.convert.splits import check_fractions, section_of
from medmtl.data.synthetic.writers import (
    write_ct_series,
    write_nifti,
    write_png,
    write_projection_dicom,
)
from medmtl.errors import ConfigError
from medmtl.tasks import get_task

# small pipelines: the point is that every entry loads, not the default training resolution
PIPELINE_OPTIONS = {
    "ct_organ_seg": {"pixdim": (4.0, 4.0, 4.0), "spatial_size": (8, 8, 8)},
    "nodule_malignancy": {"pixdim": (1.0, 1.0, 1.0), "spatial_size": (8, 8, 8)},
    "mammo_mass_det": {"spatial_size": (24, 32)},
    "cxr_findings": {"spatial_size": (16, 16)},
}


def _write_and_load_all(result: ConversionResult, out: Path) -> dict[str, list[dict]]:
    """Write the datalist, validate it, push every entry through its eval pipeline."""
    result.write(out)
    loaded = {}
    raw = json.loads(out.read_text())
    for section in ("training", "validation", "test"):
        loaded[section] = load_datalist(out, section=section) if raw[section] else []
        for entry in loaded[section]:
            spec = get_task(entry["task"])
            item = modality_transforms(spec.modality, "eval", task=spec, **PIPELINE_OPTIONS[spec.name])(dict(entry))
            assert item["image"].ndim == spec.spatial_dims + 1
    return loaded


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------- splits
def test_section_of_is_order_free_and_follows_fractions():
    fractions = check_fractions({"validation": 0.2, "test": 0.1})
    groups = [f"patient_{i}" for i in range(2000)]
    first = {g: section_of(g, fractions, seed=0) for g in groups}
    assert {g: section_of(g, fractions, seed=0) for g in reversed(groups)} == first
    counts = {s: sum(v == s for v in first.values()) / len(groups) for s in ("training", "validation", "test")}
    assert abs(counts["validation"] - 0.2) < 0.04 and abs(counts["test"] - 0.1) < 0.03
    assert {g: section_of(g, fractions, seed=1) for g in groups} != first
    with pytest.raises(ConfigError, match="no training data"):
        check_fractions({"validation": 0.6, "test": 0.4})


# ------------------------------------------------------------------------------------------ MSD
def _msd_replica(root: Path, labels: dict[str, str], n: int = 4) -> Path:
    task = root / "Task09_Spleen"
    (task / "imagesTr").mkdir(parents=True)
    (task / "labelsTr").mkdir()
    training = []
    rng = np.random.default_rng(0)
    for i in range(n):
        hu = rng.normal(0, 20, (16, 16, 8)).astype(np.int16)
        hu[:2] = -1000  # air beside the body, as any CT in HU has
        mask = np.zeros((16, 16, 8), np.uint8)
        mask[4 + i : 10, 5:11, 2:6] = 1
        write_nifti(task / "imagesTr" / f"spleen_{i}.nii.gz", hu, (0, 0, 0), (2.0, 2.0, 3.0))
        write_nifti(task / "labelsTr" / f"spleen_{i}.nii.gz", mask, (0, 0, 0), (2.0, 2.0, 3.0))
        training.append({"image": f"./imagesTr/spleen_{i}.nii.gz", "label": f"./labelsTr/spleen_{i}.nii.gz"})
    # broken rows: a label file that does not exist, and a mask holding an undeclared label value
    training.append({"image": "./imagesTr/spleen_0.nii.gz", "label": "./labelsTr/missing.nii.gz"})
    bad = np.zeros((16, 16, 8), np.uint8)
    bad[1, 1, 1] = 7
    write_nifti(task / "labelsTr" / "spleen_bad.nii.gz", bad, (0, 0, 0), (2.0, 2.0, 3.0))
    write_nifti(task / "imagesTr" / "spleen_bad.nii.gz", bad.astype(np.int16), (0, 0, 0), (2.0, 2.0, 3.0))
    training.append({"image": "./imagesTr/spleen_bad.nii.gz", "label": "./labelsTr/spleen_bad.nii.gz"})
    meta = {"name": "Spleen", "modality": {"0": "CT"}, "labels": labels, "training": training, "test": ["./imagesTs/spleen_99.nii.gz"]}
    (task / "dataset.json").write_text(json.dumps(meta))
    return task


def test_msd_remaps_masks_by_name_and_reports_bad_rows(tmp_path):
    src = _msd_replica(tmp_path, {"0": "background", "1": "spleen"})
    before = _tree_digest(src)
    result = convert_msd(src, tmp_path / "out" / "masks", val_fraction=0.25, seed=0)
    loaded = _write_and_load_all(result, tmp_path / "out" / "datalist.json")
    assert _tree_digest(src) == before  # the source is never written to
    entries = [e for s in loaded.values() for e in s]
    assert len(entries) == 4 and result.notes["label_map"] == {"0": "background", "1": "spleen"}
    spleen = get_task("ct_organ_seg").class_names.index("spleen")
    for e in entries:
        i = int(e["id"].split("_")[1])
        source = np.asarray(nib.load(str(src / "labelsTr" / f"spleen_{i}.nii.gz")).dataobj)
        remapped = np.asarray(nib.load(e["label"]).dataobj)
        assert remapped.dtype == np.uint8 and set(np.unique(remapped)) == {0, spleen}
        np.testing.assert_array_equal(remapped == spleen, source == 1)
    reasons = " | ".join(p.reason for p in result.problems)
    assert len(result.problems) == 2 and "not found" in reasons and "[7]" in reasons
    side = json.loads(problems_path(tmp_path / "out" / "datalist.json").read_text())
    assert len(side["problems"]) == 2 and side["notes"]["unlabelled_test_images"] == 1


def test_msd_unmapped_label_needs_an_explicit_mapping(tmp_path):
    src = _msd_replica(tmp_path, {"0": "background", "1": "cancer"}, n=2)
    with pytest.raises(ConfigError, match=r"dataset\.json.*cancer.*--label-map"):
        convert_msd(src, tmp_path / "masks")
    result = convert_msd(src, tmp_path / "masks", label_map="1:liver", val_fraction=0.0)
    liver = get_task("ct_organ_seg").class_names.index("liver")
    mask = np.asarray(nib.load(result.sections["training"][0]["label"]).dataobj)
    assert set(np.unique(mask)) == {0, liver}
    with pytest.raises(ConfigError, match="inside the source"):
        convert_msd(src, src / "labelsTr" / "remapped", label_map="1:liver")
    with pytest.raises(ConfigError, match="exists"):  # masks from the first run are not overwritten
        convert_msd(src, tmp_path / "masks", label_map="1:liver")


# ----------------------------------------------------------------------------------------- LIDC
NS = "http://www.nih.gov"
CT_ORIGIN, CT_SPACING, CT_SHAPE = (-20.0, -30.0, -100.0), (0.8, 0.8, 1.5), (40, 40, 14)


def _edge(c0: int, r0: int, c1: int, r1: int) -> list[tuple[int, int]]:
    """Boundary pixels (column, row) of the square [c0, c1] x [r0, r1], in contour order."""
    top = [(c, r0) for c in range(c0, c1 + 1)]
    right = [(c1, r) for r in range(r0 + 1, r1 + 1)]
    bottom = [(c, r1) for c in range(c1 - 1, c0 - 1, -1)]
    left = [(c0, r) for r in range(r1 - 1, r0, -1)]
    return top + right + bottom + left


def _nodule_xml(nid: str, rating: int | None, slices: dict[int, str], square: tuple[int, int, int, int], ks: range) -> str:
    chars = f"<characteristics><subtlety>4</subtlety><malignancy>{rating}</malignancy></characteristics>" if rating else ""
    rois = ""
    for k in ks:
        edges = "".join(f"<edgeMap><xCoord>{c}</xCoord><yCoord>{r}</yCoord></edgeMap>" for c, r in _edge(*square))
        z = CT_ORIGIN[2] + k * CT_SPACING[2]
        rois += f"<roi><imageZposition>{z}</imageZposition><imageSOP_UID>{slices.get(k, '9.9.9')}</imageSOP_UID><inclusion>TRUE</inclusion>{edges}</roi>"
    return f"<unblindedReadNodule><noduleID>{nid}</noduleID>{chars}{rois}</unblindedReadNodule>"


def _lidc_replica(root: Path) -> tuple[Path, dict[str, tuple[float, float, int]]]:
    """One CT series with bright cubes at known pixels, and its XML reads by four readers."""
    series = root / "LIDC-IDRI" / "LIDC-IDRI-0001" / "01-01-2000-30178" / "3000566.000000-03192"
    hu = np.full(CT_SHAPE, -900.0)
    squares = {"A": (8, 10, 12, 14), "B": (26, 24, 30, 28), "C": (10, 28, 13, 31)}  # (c0, r0, c1, r1)
    for c0, r0, c1, r1 in squares.values():
        hu[c0 : c1 + 1, r0 : r1 + 1, 5:9] = 100.0  # array [x=column, y=row, z]
    write_ct_series(series, hu, CT_ORIGIN, CT_SPACING, ("lidc-test", 1), "LIDC-IDRI-0001")
    slices, uid = {}, ""
    for f in series.glob("*.dcm"):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        k = round((float(ds.ImagePositionPatient[2]) - CT_ORIGIN[2]) / CT_SPACING[2])
        slices[k], uid = str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)
    ks = range(5, 9)
    sessions = [
        # reader 0: A malignant, B benign, C indeterminate, a small nodule (no rating)
        _nodule_xml("A0", 4, slices, squares["A"], ks) + _nodule_xml("B0", 1, slices, squares["B"], ks)
        + _nodule_xml("C0", 3, slices, squares["C"], ks) + _nodule_xml("S0", None, slices, (33, 5, 33, 5), range(3, 4)),
        # reader 1: the same A/B/C, drawn one pixel larger
        _nodule_xml("A1", 5, slices, (7, 9, 13, 15), ks) + _nodule_xml("B1", 2, slices, (25, 23, 31, 29), ks)
        + _nodule_xml("C1", 3, slices, squares["C"], ks),
        # reader 2: A only; reader 3: an ROI on an image that is not in the series
        _nodule_xml("A2", 4, slices, squares["A"], ks),
        _nodule_xml("X3", 5, {}, (20, 20, 22, 22), range(40, 41)),
    ]  # fmt: skip
    body = "".join(f"<readingSession><servicingRadiologistID>{i}</servicingRadiologistID>{s}</readingSession>" for i, s in enumerate(sessions))
    header = f"<ResponseHeader><SeriesInstanceUid>{uid}</SeriesInstanceUid></ResponseHeader>"
    # the reads as TCIA's separate XML archive ships them (tcia-lidc-xml/<reader group>/<n>.xml): the
    # converter finds each read's series by its SeriesInstanceUid, wherever the XML lies
    xml_dir = root / "LIDC-IDRI" / "tcia-lidc-xml" / "185"
    xml_dir.mkdir(parents=True)
    (xml_dir / "069.xml").write_text(f'<?xml version="1.0"?><LidcReadMessage xmlns="{NS}">{header}{body}</LidcReadMessage>')
    (xml_dir / "cxr.xml").write_text(f'<IdriReadMessage xmlns="{NS}"></IdriReadMessage>')
    centres = {}
    for name, (c0, r0, c1, r1) in squares.items():
        col, row, k = (c0 + c1) / 2, (r0 + r1) / 2, (ks.start + ks.stop - 1) / 2
        # LPS = origin + index * spacing (identity orientation); RAS negates x and y
        centres[name] = (-(CT_ORIGIN[0] + col * CT_SPACING[0]), -(CT_ORIGIN[1] + row * CT_SPACING[1]), CT_ORIGIN[2] + k * CT_SPACING[2])
    return root / "LIDC-IDRI", centres


def test_lidc_centres_labels_and_exclusions(tmp_path):
    src, centres = _lidc_replica(tmp_path / "src")
    result = convert_lidc(src, val_fraction=0.0, test_fraction=0.0)
    entries = result.sections["training"]
    assert len(entries) == 2
    by_label = {e["label"]: e for e in entries}
    malignant, benign = by_label[1], by_label[0]
    np.testing.assert_allclose(malignant["center"], centres["A"], atol=1e-2)
    np.testing.assert_allclose(benign["center"], centres["B"], atol=1e-2)
    assert malignant["num_readers"] == 3 and malignant["malignancy_median"] == 4.0
    assert benign["num_readers"] == 2 and benign["malignancy_median"] == 1.5
    # reader 0's square spans 4 pixels of 0.8 mm: its diagonal is 4.53 mm; reader 1's 6.79 mm
    assert malignant["diameter_mm"] == pytest.approx((4 * 0.8 * 2**0.5 * 2 + 6 * 0.8 * 2**0.5) / 3, abs=1e-2)
    reasons = [(p.kind, p.reason) for p in result.problems]
    assert ("excluded", "median malignancy 3 of ratings [3, 3] (indeterminate)") in reasons
    assert any(k == "excluded" and "rating(s)" in r for k, r in reasons)  # the unrated small nodule
    assert any(k == "invalid" and "not in the series" in r for k, r in reasons)
    assert any(k == "excluded" and "IdriReadMessage" in r for k, r in reasons)
    assert len(result.problems) == 4

    loaded = _write_and_load_all(result, tmp_path / "lidc.json")
    # end to end: the patch cropped around each converted centre has the bright nodule in its middle
    pipeline = modality_transforms("ct", "eval", task="nodule_malignancy", **PIPELINE_OPTIONS["nodule_malignancy"])
    for entry in loaded["training"]:
        patch = pipeline(dict(entry))["image"][0]
        assert float(patch[3:5, 3:5, 3:5].mean()) > 0.7 and float(patch[0, 0, 0]) < 0.2


def test_lidc_rating_rule():
    assert label_from_ratings([1, 2, 2]) == (0, 2.0)
    assert label_from_ratings([2, 3]) == (0, 2.5)
    assert label_from_ratings([3, 4]) == (1, 3.5)
    assert label_from_ratings([5]) == (1, 5.0)
    assert label_from_ratings([2, 3, 4]) == (None, 3.0)


# ------------------------------------------------------------------------------------ CBIS-DDSM
CBIS_COLUMNS = [
    "patient_id", "breast_density", "left or right breast", "image view", "abnormality id", "abnormality type",
    "mass shape", "mass margins", "assessment", "pathology", "subtlety", "image file path",
    "cropped image file path", "ROI mask file path",
]  # fmt: skip


def _mg(path: Path, pixels: np.ndarray, tag: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_projection_dicom(
        path, pixels.astype(np.uint16), DigitalMammographyXRayImageStorageForPresentation, "MG", "MONOCHROME2", 12, 0.1,
        ("cbis-test", tag), "P_TEST", {},
    )  # fmt: skip


def _cbis_replica(root: Path) -> tuple[Path, dict[str, list[list[float]]]]:
    """TCIA layout: CSV paths name UID folders that do not exist; the real folders differ."""
    src = root / "CBIS-DDSM"
    rows, boxes = {"train": [], "test": []}, {}
    cases = [  # (split, patient, side, view, [mask rectangles (r0, r1, c0, c1)], swap csv mask/cropped)
        ("train", "P_00001", "LEFT", "CC", [(10, 20, 5, 14), (30, 36, 20, 30)], False),
        ("train", "P_00004", "RIGHT", "MLO", [(5, 9, 22, 31)], True),
        ("test", "P_00016", "LEFT", "MLO", [(40, 47, 3, 9)], False),
    ]
    for split, patient, side, view, rects, swap in cases:
        kind = "Training" if split == "train" else "Test"
        case = f"Mass-{kind}_{patient}_{side}_{view}"
        image = np.random.default_rng(len(rows[split])).integers(100, 900, (64, 40))
        _mg(src / case / "07-20-2016-DDSM-1" / "1.000000-full mammogram images-1" / "1-1.dcm", image, case)
        boxes[case] = []
        for n, (r0, r1, c0, c1) in enumerate(rects, start=1):
            mask = np.zeros((64, 40))
            mask[r0:r1, c0:c1] = 255
            roi = src / f"{case}_{n}" / "08-29-2017-DDSM-1" / "1.000000-ROI mask images-1"
            _mg(roi / "1-1.dcm", image[: r1 - r0 + 4, : c1 - c0 + 4], f"{case}_{n}_crop")  # cropped image
            _mg(roi / "1-2.dcm", mask, f"{case}_{n}_mask")
            boxes[case].append([float(c0), float(r0), float(c1), float(r1)])
            mask_csv, crop_csv = f"{case}_{n}/1.3.6.1.4/1.3.6.1.5/000000.dcm", f"{case}_{n}/1.3.6.1.4/1.3.6.1.5/000001.dcm"
            if swap:
                mask_csv, crop_csv = crop_csv, mask_csv
            rows[split].append([patient, 3, side, view, n, "mass", "OVAL", "CIRCUMSCRIBED", 4, "MALIGNANT", 4,
                                f"{case}/1.3.6.1.4/1.3.6.1.6/000000.dcm", crop_csv, mask_csv + "\n"])  # fmt: skip
    # inconsistent rows: laterality contradicting the folder name, and an image that is not there
    rows["train"].append(["P_00001", 3, "RIGHT", "CC", 3, "mass", "", "", 4, "BENIGN", 4, "Mass-Training_P_00001_LEFT_CC/1/2/000000.dcm", "", ""])
    rows["train"].append(["P_00009", 3, "LEFT", "CC", 1, "mass", "", "", 4, "BENIGN", 4, "Mass-Training_P_00009_LEFT_CC/1/2/000000.dcm", "", "x/1.dcm"])
    for split, table in rows.items():
        with (src / f"mass_case_description_{split}_set.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CBIS_COLUMNS)
            writer.writerows(table)
    return src, boxes


def test_cbis_ddsm_boxes_laterality_and_problems(tmp_path):
    src, boxes = _cbis_replica(tmp_path)
    result = convert_cbis_ddsm(src, val_fraction=0.0)
    assert [e["id"] for e in result.sections["test"]] == ["Mass-Test_P_00016_LEFT_MLO"]
    entries = {e["id"]: e for s in result.sections.values() for e in s}
    assert set(entries) == set(boxes)
    for case, expected in boxes.items():
        assert entries[case]["boxes"] == expected and entries[case]["box_labels"] == [0] * len(expected)
    assert entries["Mass-Training_P_00004_RIGHT_MLO"]["laterality"] == "R"
    assert entries["Mass-Training_P_00004_RIGHT_MLO"]["view"] == "MLO"
    reasons = [p.reason for p in result.problems]
    assert len(reasons) == 2 and "folder is" in reasons[0] and "not found" in reasons[1]
    loaded = _write_and_load_all(result, tmp_path / "out" / "cbis.json")
    assert sum(len(v) for v in loaded.values()) == 3


# ---------------------------------------------------------------------------------------- CXR14
def _cxr14_replica(root: Path, lists: bool = True) -> Path:
    src = root / "ChestX-ray14"
    (src / "images_001" / "images").mkdir(parents=True)
    rows = [
        ("00000001_000.png", "Nodule|Effusion", "1"),
        ("00000001_001.png", "No Finding", "1"),
        ("00000002_000.png", "Mass", "2"),
        ("00000003_000.png", "Pneumothorax|Cardiomegaly", "3"),
        ("00000004_000.png", "No Finding|Nodule", "4"),  # inconsistent
        ("00000005_000.png", "Nodul", "5"),  # unknown finding
        ("00000006_000.png", "Effusion", "6"),  # no image file
    ]
    with (src / "Data_Entry_2017.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender", "View Position"])
        for name, findings, patient in rows:
            writer.writerow([name, findings, 0, patient, 50, "M", "PA"])
            if patient != "6":
                pixels = np.random.default_rng(int(patient)).integers(0, 255, (32, 32), dtype=np.uint8)
                write_png(src / "images_001" / "images" / name, pixels)
    if lists:
        (src / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000002_000.png\n00000004_000.png\n")
        (src / "test_list.txt").write_text("00000003_000.png\n00000005_000.png\n")
    return src


def test_cxr14_labels_official_split_and_problems(tmp_path):
    src = _cxr14_replica(tmp_path)
    result = convert_cxr14(src, val_fraction=0.0)
    labels = {e["id"]: e["label"] for s in result.sections.values() for e in s}
    assert labels == {"00000001_000": [1, 0, 1], "00000001_001": [0, 0, 0], "00000002_000": [0, 0, 0], "00000003_000": [0, 1, 0]}
    assert [e["id"] for e in result.sections["test"]] == ["00000003_000"]
    reasons = " | ".join(p.reason for p in result.problems)
    assert len(result.problems) == 3 and "'No Finding' together" in reasons and "Nodul" in reasons and "not found" in reasons
    _write_and_load_all(result, tmp_path / "cxr.json")


def test_cli_writes_reports_and_never_overwrites(tmp_path, capsys):
    src = _cxr14_replica(tmp_path, lists=False)
    out = tmp_path / "out" / "datalist.json"
    assert main(["cxr14", "--src", str(src), "--out", str(out), "--test-fraction", "0.3"]) == 0
    printed = capsys.readouterr().out
    assert "problems: {'invalid': 3}" in printed and str(problems_path(out)) in printed
    written = out.read_bytes()
    assert json.loads(written)["training"][0]["image"].startswith("..")  # relative to the datalist's folder
    assert main(["cxr14", "--src", str(src), "--out", str(out)]) == 2
    assert "exist" in capsys.readouterr().err and out.read_bytes() == written
    assert main(["cxr14", "--src", str(src), "--out", str(out), "--overwrite", "--strict"]) == 1


def test_merge_rebases_paths(tmp_path):
    cxr = convert_cxr14(_cxr14_replica(tmp_path / "a"), val_fraction=0.0).write(tmp_path / "a" / "cxr.json")
    cbis = convert_cbis_ddsm(_cbis_replica(tmp_path / "b")[0], val_fraction=0.0).write(tmp_path / "b" / "lists" / "cbis.json")
    merged = merge_datalists([cxr, cbis], tmp_path / "c" / "all.json")
    for section in ("training", "test"):
        expected = load_datalist(cxr, section=section) + load_datalist(cbis, section=section)
        got = load_datalist(merged, section=section)
        for e in expected + got:
            e["image"] = str(Path(e["image"]).resolve())
        assert got == expected
    with pytest.raises(ConfigError, match="exists"):
        merge_datalists([cxr], merged)
