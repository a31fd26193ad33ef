"""Property-based tests: any datalist gives entries or a ``DatalistError``; any mutated image file
loads or gives an ``ImageLoadError`` naming it. Never another exception type, never a crash.

Example counts are bounded so the module stays well under a minute on two CPU cores; set
``HYPOTHESIS_PROFILE=long`` to fuzz for longer.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medmtl.data import load_datalist, read_image_size
from medmtl.data.synthetic import generate
from medmtl.data.transforms import LoadMedicalImage
from medmtl.errors import DatalistError, ImageLoadError
from medmtl.tasks import TASKS

# pydicom warns about every odd value it meets in a mutant; the outcome is what is tested
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*")

_LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
_SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    "database": None,
}


def examples(n: int) -> int:
    return n * 20 if _LONG else n


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One valid file per reader (DICOM, PNG, NIfTI.gz) and a folder to write mutants into."""
    tiny = tmp_path_factory.mktemp("tiny")
    generate(tiny, preset="tiny", seed=0)
    return {
        "dicom": next((tiny / "cxr").glob("*.dcm")),
        "mammo_dicom": next((tiny / "mammo").glob("*.dcm")),
        "png": next((tiny / "cxr").glob("*.png")),
        "nifti": next((tiny / "nodule").glob("*.nii.gz")),
        "root": tiny,
        "work": tmp_path_factory.mktemp("mutants"),
    }


# ---------------------------------------------------------------------------------------------
# datalists

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12
)
# strings that are likely to hit the interesting paths: real files, folders, odd names
paths = st.sampled_from(
    ["cxr/cxr_000.png", "cxr", "nodule/nod_000.nii.gz", "mammo/mg_000.dcm", "ct/ct_001", "ct/ct_000_seg.nii.gz",
     "missing.png", "", "/", "~nobody_here/x.png", "a\x00b.png", "x" * 300, "../tiny", "datalist.json"]
)
field_values = st.one_of(
    json_values,
    paths,
    st.sampled_from(sorted(TASKS)),
    st.lists(st.integers(0, 1), min_size=0, max_size=4),
    st.lists(st.lists(st.floats(-10, 200) | st.integers(-5, 300), min_size=0, max_size=7), max_size=3),
    st.sampled_from(["xyxy", "xywh", "ccwh", "xyzxyz", "bogus"]),
)
keys = st.sampled_from(["task", "image", "label", "boxes", "box_labels", "box_mode", "laterality", "view", "id", "center", "extra"])
entries = st.one_of(st.dictionaries(keys, field_values, max_size=7), json_values)
sections = st.sampled_from(["training", "validation", "test"])
datalists = st.one_of(
    st.dictionaries(sections, st.lists(entries, max_size=5) | json_values, max_size=3),
    json_values,
)


def _check_result(result: Any) -> None:
    assert isinstance(result, list) and all(isinstance(e, dict) and e["task"] in TASKS for e in result)
    for e in result:
        assert Path(e["image"]).is_absolute()


@settings(max_examples=examples(150), **_SETTINGS)
@given(data=datalists, section=sections, on_error=st.sampled_from(["raise", "skip"]))
def test_any_json_datalist_gives_entries_or_datalist_error(seeds: dict[str, Path], data: Any, section: str, on_error: str) -> None:
    path = seeds["root"] / "fuzz.json"
    path.write_text(json.dumps(data))
    try:
        result = load_datalist(path, section=section, on_error=on_error)
    except DatalistError as e:
        assert str(path) in str(e) and e.problems
        return
    _check_result(result)
    if on_error == "skip":
        return
    # what validates must be what a section of good entries looks like
    assert isinstance(data, dict) and isinstance(data[section], list) and len(result) == len(data[section])


@settings(max_examples=examples(60), **_SETTINGS)
@given(content=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_as_datalist_give_datalist_error_or_entries(seeds: dict[str, Path], content: bytes) -> None:
    path = seeds["root"] / "fuzz_bytes.json"
    path.write_bytes(content)
    try:
        _check_result(load_datalist(path))
    except DatalistError as e:
        assert str(path) in str(e)


# ---------------------------------------------------------------------------------------------
# readers


@st.composite
def mutations(draw: st.DrawFn) -> list[tuple[str, int, int]]:
    """A few byte flips, a truncation or an insertion, at positions drawn as fractions of the file."""
    ops = st.tuples(st.sampled_from(["flip", "truncate", "insert", "zero"]), st.integers(0, 10_000), st.integers(1, 255))
    return draw(st.lists(ops, min_size=1, max_size=4))


def mutate(raw: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(raw)
    for op, where, value in ops:
        if not data:
            break
        i = where * len(data) // 10_001
        if op == "flip":
            data[i] ^= value
        elif op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = bytes([value]) * (value % 7 + 1)
        else:
            data[i : i + value] = bytes(len(data[i : i + value]))
    return bytes(data)


_LOADERS = {dims: LoadMedicalImage(spatial_dims=dims) for dims in (2, 3)}


def _load_mutant(seeds: dict[str, Path], kind: str, ops: list[tuple[str, int, int]], spatial_dims: int) -> None:
    src = seeds[kind]
    path = seeds["work"] / ("mutant" + "".join(src.suffixes))
    path.write_bytes(mutate(src.read_bytes(), ops))
    try:
        img = _LOADERS[spatial_dims](path)
    except ImageLoadError as e:
        assert e.file == str(path)
    else:
        assert img.ndim == spatial_dims + 1 and img.shape[0] == 1
    try:
        size = read_image_size(path)
    except ValueError:
        pass  # its documented error; the datalist reports it as "cannot read the image header"
    else:
        assert all(isinstance(s, int) for s in size)


@settings(max_examples=examples(40), **_SETTINGS)
@given(ops=mutations())
def test_mutated_dicom_loads_or_raises_image_load_error(seeds: dict[str, Path], ops: list) -> None:
    _load_mutant(seeds, "dicom", ops, spatial_dims=2)


@settings(max_examples=examples(40), **_SETTINGS)
@given(ops=mutations())
def test_mutated_png_loads_or_raises_image_load_error(seeds: dict[str, Path], ops: list) -> None:
    _load_mutant(seeds, "png", ops, spatial_dims=2)


@settings(max_examples=examples(40), **_SETTINGS)
@given(ops=mutations())
def test_mutated_nifti_loads_or_raises_image_load_error(seeds: dict[str, Path], ops: list) -> None:
    _load_mutant(seeds, "nifti", ops, spatial_dims=3)


@settings(max_examples=examples(25), **_SETTINGS)
@given(ops=mutations())
def test_mutated_dicom_in_a_datalist_gives_entries_or_datalist_error(seeds: dict[str, Path], ops: list) -> None:
    """Header checks of ``load_datalist`` (size, pixel data, boxes) on mutated mammograms."""
    path = seeds["work"] / "mg_mutant.dcm"
    path.write_bytes(mutate(seeds["mammo_dicom"].read_bytes(), ops))
    datalist = seeds["work"] / "mutant.json"
    entry = {"task": "mammo_mass_det", "image": path.name, "boxes": [[1, 1, 10, 10]], "box_labels": [0]}
    datalist.write_text(json.dumps({"training": [entry]}))
    try:
        [loaded] = load_datalist(datalist)
    except DatalistError as e:
        assert e.problems[0].file == str(path)
    else:
        assert loaded["image"] == str(path)


def test_mutants_are_not_all_rejected(seeds: dict[str, Path]) -> None:
    """The properties above are not vacuous: a harmless mutation still loads, a harmful one is refused."""
    raw = seeds["dicom"].read_bytes()
    flipped = seeds["work"] / "last_pixel.dcm"
    flipped.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))  # one bit of the last pixel
    assert LoadMedicalImage(spatial_dims=2)(flipped).shape[0] == 1
    cut = seeds["work"] / "cut.dcm"
    cut.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ImageLoadError, match="cut.dcm"):
        LoadMedicalImage(spatial_dims=2)(cut)
    shutil.copy(seeds["png"], seeds["work"] / "copy.png")
    assert LoadMedicalImage(spatial_dims=2)(seeds["work"] / "copy.png").ndim == 3
