"""No patient identifier from a DICOM header reaches any log, metric, checkpoint or inference output.

The tiny dataset is copied and every DICOM file in it is stamped with fake identifiers in the
attributes DICOM PS3.15 Annex E (basic de-identification profile) removes or replaces. The bundle
then trains, evaluates and predicts on the copy in subprocesses, exactly as a user runs it, and
every byte those runs wrote -- stdout, stderr, log files, metrics, TensorBoard events, checkpoints,
masks, ``predictions.json`` -- is searched for every identifier.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pydicom
import pytest
from bundle_cli import CONFIGS, bundle_run, check

# slow tier (bundle training and inference runs in subprocesses): python -m pytest -m slow
pytestmark = pytest.mark.slow

#: Identifying attributes (PS3.15 Annex E) and the fake values stamped into every DICOM file.
#: The values are long and unusual, so finding one in an output cannot be a coincidence.
IDENTIFIERS = {
    "PatientName": "Doe^Janeprivacy^Quinn",
    "PatientID": "MRN-4471-93-PRIV",
    "PatientBirthDate": "19610307",
    "PatientBirthTime": "071523",
    "OtherPatientIDs": "ALT-88213-PRIV",
    "PatientAddress": "12 Elmprivacy Street, Springfield",
    "PatientTelephoneNumbers": "555-0142-7781",
    "PatientMotherBirthName": "Motherprivacy^Maiden",
    "MilitaryRank": "Privacy Sergeant",
    "AccessionNumber": "ACC-55120-PRIV",
    "StudyID": "STUDY-7781-PRIV",
    "InstitutionName": "Saint Privacy Hospital",
    "InstitutionAddress": "1 Privacy Plaza, Gotham",
    "ReferringPhysicianName": "House^Privacygregory",
    "PerformingPhysicianName": "Grey^Privacymeredith",
    "OperatorsName": "Tech^Privacyoperator",
    "StationName": "CT-PRIV-STN-7",
    "DeviceSerialNumber": "SN-PRIV-009911",
}
#: UIDs identify a study as well; their values are taken from the files (they differ per file).
UID_ATTRIBUTES = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")

# the tiny-preset shrinking overrides of the bundle tests, shared by the three runs
SETTINGS = {
    "num_workers": 0,
    "channels": [8, 16, 32, 32],
    "pipeline_options": {
        "ct_organ_seg": {"pixdim": [8.0, 8.0, 8.0], "spatial_size": [32, 32, 32], "num_samples": 1},
        "nodule_malignancy": {"spatial_size": [32, 32, 32]},
        "mammo_mass_det": {"spatial_size": [64, 96]},
        "cxr_findings": {"spatial_size": [64, 64]},
    },
}


def stamp_identifiers(folder: Path) -> set[str]:
    """Write :data:`IDENTIFIERS` into every DICOM file under ``folder``; return every secret value."""
    secrets = set(IDENTIFIERS.values())
    stamped = 0
    for path in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        for keyword, value in IDENTIFIERS.items():
            setattr(ds, keyword, value)
        ds.PatientIdentityRemoved = "NO"
        del ds.DeidentificationMethod
        ds.save_as(path, enforce_file_format=True)
        secrets |= {str(ds.get(k)) for k in UID_ATTRIBUTES if ds.get(k)}
        stamped += 1
    assert stamped >= 10, f"expected DICOM files in the tiny preset, stamped {stamped}"
    return secrets


def bundle(configs: list[str], overrides: dict, log: list[str]) -> None:
    """Run bundle configs like a user; keep stdout and stderr for the search."""
    done = bundle_run([CONFIGS / c for c in configs], overrides, timeout=900)
    log += [done.stdout, done.stderr]
    check(done)


@pytest.fixture(scope="module")
def runs(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[set[str], list[str], Path]:
    """Train (1 epoch), evaluate and predict on an identifier-stamped copy of the tiny dataset."""
    root = tmp_path_factory.mktemp("privacy")
    data = root / "data"
    shutil.copytree(tiny, data)
    secrets = stamp_identifiers(data)
    out = root / "bundle"
    log: list[str] = []
    common = {"bundle_root": str(out), "dataset_dir": str(data), **SETTINGS}
    bundle(["train.json"], {**common, "num_epochs": 1, "val_interval": 1}, log)
    bundle(["train.json", "evaluate.json"], common, log)
    bundle(["inference.json"], {**common, "datalist": "datalist.json", "output_dir": str(out / "predictions")}, log)
    return secrets, log, out


def test_stamped_identifiers_are_in_the_inputs(runs: tuple[set[str], list[str], Path]) -> None:
    """The runs read what was stamped: the header search below would otherwise prove nothing."""
    _, _, out = runs
    data = out.parent / "data"
    ds = pydicom.dcmread(next(data.rglob("*.dcm")))
    assert str(ds.PatientName) == IDENTIFIERS["PatientName"]
    assert ds.PatientBirthDate == IDENTIFIERS["PatientBirthDate"]
    predictions = json.loads((out / "predictions" / "predictions.json").read_text())
    assert {i["task"] for i in predictions["items"]} == {"ct_organ_seg", "nodule_malignancy", "mammo_mass_det", "cxr_findings"}


def test_no_identifier_in_any_output_file_or_log(runs: tuple[set[str], list[str], Path]) -> None:
    secrets, log, out = runs
    files = sorted(f for f in out.rglob("*") if f.is_file())
    kinds = {f.suffix for f in files}
    # the search covered what a run writes: checkpoints, metrics, logs / events and masks
    assert {".pt", ".json", ".gz"} <= kinds and any("tfevents" in f.name for f in files), kinds
    assert sum(len(text) for text in log) > 1000  # the runs logged to stdout/stderr
    found = {}
    for f in files:
        raw = f.read_bytes()
        text = (gzip.decompress(raw) if f.name.endswith(".gz") else raw).decode("latin-1")
        hits = sorted(s for s in secrets if s in text)
        if hits:
            found[str(f.relative_to(out))] = hits
    for i, text in enumerate(log):
        hits = sorted(s for s in secrets if s in text)
        if hits:
            found[f"run {i // 2} {'stderr' if i % 2 else 'stdout'}"] = hits
    assert not found, found
