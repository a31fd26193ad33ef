"""``python -m medmtl.data.check``: a check that checked nothing must fail."""

from __future__ import annotations

import json
from pathlib import Path

from medmtl.data.check import main


def test_check_passes_a_good_datalist_and_fails_a_missing_or_empty_one(tiny: Path, tmp_path: Path, capsys) -> None:
    assert main([str(tiny / "datalist.json"), "--sections", "test"]) == 0
    assert "cxr_findings" in capsys.readouterr().out

    assert main([str(tmp_path / "nope.json")]) == 2
    assert "no such datalist file" in capsys.readouterr().err

    other = tmp_path / "other.json"
    other.write_text(json.dumps({"train": []}))
    assert main([str(other)]) == 2
    assert "holds none of the sections" in capsys.readouterr().err

    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"training": [], "validation": []}))
    assert main([str(empty)]) == 2
    assert "hold no entries" in capsys.readouterr().err

    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert main([str(broken)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
